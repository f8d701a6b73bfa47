/* Test program for common/maps (tests/test_maps.py): types whose pointer layouts are compared
 * with gdb's, globals, thread-locals, and pointer locals/arguments in nested frames (plain calls,
 * inlined calls at -O2, a second thread) stopped at heaplens_checkpoint. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct node node_t;
typedef node_t *node_ptr;
typedef node_ptr list_head_t;

struct node {
    int value;
    node_ptr next;
    struct node *prev;
    char *label;
};

struct inner {
    void *opaque;
    const char *name;
    int n;
};

struct outer {
    long id;
    struct inner in;
    struct inner pair[2];
    struct node *slots[4];
    int (*cmp)(const void *, const void *);
    void (*handlers[3])(int);
};

union value {
    long i;
    double d;
    char *s;
    struct node *n;
};

struct tagged {
    int tag;
    union value v;
    struct {
        char *a;
        int b;
    } anon_s;
    union {
        void *p;
        long q;
    };
};

struct flex {
    size_t n;
    struct node *items[];
};

struct flex0 {
    int n;
    char *items[0];
};

struct flex_rec {
    int n;
    struct inner recs[];
};

struct bits {
    unsigned a : 3, b : 5;
    char *after;
    unsigned c : 1;
};

typedef const struct outer *const_outer_p;
typedef volatile int *vip;

struct quals {
    const char *cs;
    char *const pc;
    const_outer_p op;
    vip v;
    char **argvlike;
    int (*pa)[4];
    struct node **pp;
    uint8_t *bytes;
    _Bool *flag;
    unsigned long *words;
    void **vpp;
};

struct incomplete;
struct has_opaque {
    struct incomplete *o;
    struct later *l;            /* completed further down */
};

struct later {
    long x[3];
};

struct matrix {
    struct node *m[3][2];
};

struct big {
    char *many[2000];
};

struct tree {
    struct tree *kids[2];
    struct tree *parent;
    union value payload;
};

/* --- globals -------------------------------------------------------------------------- */
struct outer g_outer;
node_ptr g_list;
list_head_t g_heads[8];
union value g_val;
struct flex *g_flex;
static char *s_name = "static-name";
struct big g_big;
struct tagged g_tagged;
struct quals g_quals = {.pc = NULL};
struct has_opaque g_opaque;
struct matrix g_matrix;
struct bits g_bits;
struct tree *g_tree;
struct flex0 *g_flex0;
struct flex_rec *g_flex_rec;
long g_not_a_pointer = 42;
__thread struct node *t_node;
__thread char t_pad[24];
__thread char *t_label;

volatile int sink;
static pthread_barrier_t barrier;

__attribute__((noinline)) void heaplens_checkpoint(void) { __asm__ volatile("" ::: "memory"); }

static int cmp_nodes(const void *a, const void *b) { return (a > b) - (a < b); }

static node_ptr push(node_ptr head, int v, const char *label) {
    node_ptr n = malloc(sizeof *n);
    n->value = v;
    n->next = head;
    n->prev = NULL;
    n->label = strdup(label);
    if (head)
        head->prev = n;
    return n;
}

static inline __attribute__((always_inline)) int inl_sum(struct node *from, char *tag) {
    int s = 0;
    for (struct node *p = from; p; p = p->next)
        s += p->value;
    if (tag && s > 0)
        heaplens_checkpoint();      /* stop inside an inlined frame */
    sink = s + (tag ? tag[0] : 0) + (from ? from->value : 0);
    return s;
}

__attribute__((noinline)) int leaf(struct node *cur, struct outer *o, char *buf, int depth) {
    struct node *second = cur ? cur->next : NULL;
    char *lbl = cur ? cur->label : NULL;
    int r = 0;
    {
        struct node *blk = second ? second->next : cur;
        r = inl_sum(blk, lbl);
        sink = r + (blk ? blk->value : 0);
    }
    sink += (second ? second->value : 0) + (buf ? buf[0] : 0) + (o ? (int)o->id : 0) + depth;
    return r + (lbl ? lbl[0] : 0) + (second ? 1 : 0);
}

__attribute__((noinline)) int middle(node_ptr head, struct outer *o, int depth) {
    char *buf = malloc(64);
    struct tagged local_tagged = {.tag = 1, .v = {.n = head}, .anon_s = {.a = buf, .b = 2}};
    struct node *arr[3] = {head, head ? head->next : NULL, NULL};
    memset(buf, 'b', 63);
    buf[63] = 0;
    int r = leaf(head, o, buf, depth);
    sink = local_tagged.tag + (arr[1] ? arr[1]->value : 0) + r;
    free(buf);
    return r + (arr[0] ? 1 : 0) + local_tagged.anon_s.b;
}

static void *worker(void *arg) {
    node_ptr mine = push(NULL, 100, "worker");
    t_node = mine;
    t_label = mine->label;
    pthread_barrier_wait(&barrier);          /* main stops while this thread waits */
    pthread_barrier_wait(&barrier);
    sink = mine->value + (arg ? 1 : 0);
    return mine;
}

int main(int argc, char **argv) {
    pthread_t th;
    pthread_barrier_init(&barrier, NULL, 2);
    pthread_create(&th, NULL, worker, argv);
    for (int i = 0; i < 4; i++)
        g_list = push(g_list, i + 1, "node");
    g_heads[2] = g_list;
    g_outer.id = 7;
    g_outer.in.name = s_name;
    g_outer.slots[1] = g_list;
    g_outer.cmp = cmp_nodes;
    g_val.n = g_list;
    g_flex = malloc(sizeof *g_flex + 3 * sizeof(struct node *));
    g_flex->n = 3;
    g_flex->items[0] = g_list;
    g_tree = calloc(1, sizeof *g_tree);
    g_big.many[1500] = s_name;
    g_tagged.v.s = s_name;
    t_node = g_list;
    t_label = s_name;
    pthread_barrier_wait(&barrier);
    int r = middle(g_list, &g_outer, argc > 5 ? 1 : 0);
    pthread_barrier_wait(&barrier);
    pthread_join(th, NULL);
    printf("%d\n", r + sink);
    return 0;
}
