/* trace_busy.c - a clean program with a busy heap: every chunk is reachable.
 *
 * Lists (singly and doubly linked), a binary tree, a hash table of chained entries (bucket
 * array sized by its chunk), a growing vector (realloc), a struct with a flexible array
 * member, tagged unions, strings, void * payloads, a pointer array inside a struct, objects
 * held only from a worker thread's stack, from thread-local storage and from memory the
 * program mmapped itself, stdio's own buffer (printf), and freed chunks between them.
 * A correct tracer reports no leak here, precise or conservative, at -O0 and -O2.
 * At heaplens_checkpoint() a worker thread is blocked holding its own list in a local.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void sink(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

struct node { struct node *next; long v; char *label; };
struct dnode { struct dnode *next, *prev; double w; };
struct tree { struct tree *left, *right; int key; char *name; };
struct entry { struct entry *next; char *key; void *value; };
struct item { long id; struct item *peer; char tag[8]; };
struct table { unsigned n; struct entry **buckets; };
struct blob { int n; struct item *items[]; };        /* flexible array member */
struct shape {
    int kind;                                        /* 0 circle, 1 poly */
    union {
        struct { double r; } circle;
        struct { int npts; double *pts; } poly;
    } u;
};
struct registry {
    struct item *fixed[4];
    struct blob *blob;
    struct shape *shapes[3];
    struct dnode *ring;
};

struct node *g_list;
struct tree *g_root;
struct table g_table;
struct item **g_vec;
size_t g_vec_n;
struct registry g_reg;
void **g_pool;                                       /* mmapped, not heap */
static __thread struct node *t_list;                 /* thread-local */
static pthread_barrier_t g_ready, g_done;

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

static struct node *make_list(int n, const char *what)
{
    struct node *h = NULL;
    for (int i = 0; i < n; i++) {
        struct node *nd = xmalloc(sizeof *nd);
        char buf[32];
        snprintf(buf, sizeof buf, "%s %d", what, i);
        nd->label = xstrdup(buf);
        nd->v = i;
        nd->next = h;
        h = nd;
    }
    return h;
}

static void tree_insert(struct tree **t, int key)
{
    while (*t)
        t = key < (*t)->key ? &(*t)->left : &(*t)->right;
    struct tree *n = xmalloc(sizeof *n);
    char buf[32];
    snprintf(buf, sizeof buf, "key-%d", key);
    n->name = xstrdup(buf);
    n->key = key;
    n->left = n->right = NULL;
    *t = n;
}

static void *worker(void *arg)
{
    (void)arg;
    struct node *mine = make_list(20, "worker");     /* held only by this frame */
    t_list = make_list(5, "tls");                    /* held only by TLS */
    pthread_barrier_wait(&g_ready);
    pthread_barrier_wait(&g_done);
    long s = 0;
    for (struct node *n = mine; n; n = n->next)
        s += n->v;
    sink(mine);
    sink(t_list);
    return (void *)s;
}

int main(void)
{
    pthread_barrier_init(&g_ready, NULL, 2);
    pthread_barrier_init(&g_done, NULL, 2);
    pthread_t th;
    pthread_create(&th, NULL, worker, NULL);

    printf("trace_busy: building\n");                /* stdio's buffer: a libc chunk */
    g_list = make_list(50, "main");
    unsigned seed = 12345;
    for (int i = 0; i < 200; i++) {
        seed = seed * 1103515245u + 12345u;
        tree_insert(&g_root, (int)(seed >> 8) % 100000);
    }
    g_table.n = 61;
    g_table.buckets = calloc(g_table.n, sizeof *g_table.buckets);
    for (int i = 0; i < 300; i++) {
        struct entry *e = xmalloc(sizeof *e);
        char buf[32];
        snprintf(buf, sizeof buf, "k%d", i);
        e->key = xstrdup(buf);
        struct item *it = xmalloc(sizeof *it);
        it->id = i;
        it->peer = NULL;
        strcpy(it->tag, "val");
        e->value = it;                               /* void *: conservative */
        unsigned h = (unsigned)i * 2654435761u % g_table.n;
        e->next = g_table.buckets[h];
        g_table.buckets[h] = e;
        if (i % 7 == 0) {                            /* some churn: freed chunks around */
            void *tmp = xmalloc(40 + (size_t)i);
            free(tmp);
        }
    }
    for (int i = 0; i < 100; i++) {
        g_vec = realloc(g_vec, (g_vec_n + 1) * sizeof *g_vec);
        struct item *it = xmalloc(sizeof *it);
        it->id = i;
        it->peer = g_vec_n ? g_vec[g_vec_n - 1] : NULL;
        strcpy(it->tag, "vec");
        g_vec[g_vec_n++] = it;
    }
    for (int i = 0; i < 4; i++) {
        g_reg.fixed[i] = xmalloc(sizeof(struct item));
        memset(g_reg.fixed[i], 0, sizeof(struct item));
    }
    g_reg.blob = xmalloc(sizeof(struct blob) + 10 * sizeof(struct item *));
    g_reg.blob->n = 10;
    for (int i = 0; i < 10; i++) {
        g_reg.blob->items[i] = xmalloc(sizeof(struct item));
        memset(g_reg.blob->items[i], 0, sizeof(struct item));
    }
    for (int i = 0; i < 3; i++) {
        struct shape *s = xmalloc(sizeof *s);
        s->kind = i & 1;
        if (s->kind) {
            s->u.poly.npts = 4;
            s->u.poly.pts = calloc(8, sizeof(double));
        } else {
            s->u.circle.r = 1.5;
        }
        g_reg.shapes[i] = s;
    }
    struct dnode *ring = NULL;
    for (int i = 0; i < 30; i++) {                   /* a circular doubly linked list */
        struct dnode *d = xmalloc(sizeof *d);
        d->w = i;
        if (!ring) {
            d->next = d->prev = d;
            ring = d;
        } else {
            d->next = ring;
            d->prev = ring->prev;
            ring->prev->next = d;
            ring->prev = d;
        }
    }
    g_reg.ring = ring;
    g_pool = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 8; i++)
        g_pool[i] = make_list(1, "pool");            /* held only from mmapped memory */
    struct node *local = make_list(10, "local");     /* held by main's frame */
    for (int i = 0; i < 50; i++)                     /* more churn */
        free(xmalloc(16 + (size_t)i * 8));

    pthread_barrier_wait(&g_ready);
    printf("trace_busy ready\n");
    fflush(stdout);
    heaplens_checkpoint();
    pthread_barrier_wait(&g_done);
    pthread_join(th, NULL);
    sink(local);
    for (struct node *n = local; n; n = n->next)
        seed += (unsigned)n->v;
    return (int)(seed & 1);
}
