/* trace_leaks.c - leaks and pointer chains with known answers, for common/trace.
 *
 * At heaplens_checkpoint():
 *   - a dropped linked list: 5 nodes (and their names) whose head pointer was set to
 *     NULL: the head is definitely lost, the other nodes and the names indirectly lost;
 *   - a cycle of 3 chunks nothing points to: one definitely lost, two indirectly lost;
 *   - a leak via an overwritten pointer: g_holder.buf was malloc'd twice;
 *   - a chunk whose only reference is an integer field (uintptr_t): lost when traced
 *     precisely, reachable for a conservative scan;
 *   - a chunk referenced only by a pointer 16 bytes into it: possibly lost;
 *   - reachable structures: g_cache.entries[3] -> next -> value (the why() chain),
 *     a void * payload whose own pointers lead on, a union, a pointer array sized by
 *     its chunk, a freed chunk still referenced (a stale pointer: use-after-free);
 *   - a local in main holding a list (a frame root).
 * Truth file (HEAPLENS_TRUTH): `expect CATEGORY ADDRESS` lines, CATEGORY one of
 * definitely-lost, indirectly-lost, cycle-lost, possibly-lost, reachable,
 * integer-only, why-value, stale.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The expectations are kept XOR-masked: a table of plain addresses would itself be a
 * "reference" to every chunk for a conservative scan (truth.h's table is exactly that). */
#define MASK ((uintptr_t)0xa5a5a5a5a5a5a5a5ull)
#define NEXP 256
static struct { const char *what; uintptr_t masked; } exp_tab[NEXP];
static int nexp;

static void truth_expect(const char *what, void *p)
{
    if (nexp < NEXP) {
        exp_tab[nexp].what = what;
        exp_tab[nexp++].masked = (uintptr_t)p ^ MASK;
    }
}

static void truth_write(void)
{
    const char *path = getenv("HEAPLENS_TRUTH");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    for (int i = 0; i < nexp; i++) {
        char line[96];
        int k = snprintf(line, sizeof line, "expect %s 0x%lx\n", exp_tab[i].what,
                         (unsigned long)(exp_tab[i].masked ^ MASK));
        (void)!write(fd, line, (size_t)k);
    }
    close(fd);
}

__attribute__((noinline)) static void sink(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static void *tmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    sink(p);
    return p;
}

static void *tcalloc(size_t k, size_t n)
{
    void *p = calloc(k, n);
    if (!p)
        abort();
    return p;
}

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

struct node {
    struct node *next;
    int value;
    char *name;
};

struct entry {
    struct entry *next;
    long key;
    char *value;
};

struct cache {
    int count;
    struct entry *entries[8];
};

struct holder {
    char *buf;
    size_t len;
};

struct hidden {
    uintptr_t handle;          /* a pointer stored as an integer */
    long other;
};

struct box {
    int kind;
    void *payload;             /* untyped: followed conservatively */
};

struct payload {
    struct node *list;
    long n;
};

struct tagged {
    int kind;
    union {
        struct node *n;
        long i;
    } u;
};

struct table {
    size_t n;
    struct node **slots;       /* a malloc'd array of pointers, sized by its chunk */
};

struct cache g_cache;
struct holder g_holder;
struct hidden *g_hidden;
char *g_interior;
struct box *g_box;
struct tagged g_tagged;
struct table g_table;
struct node *g_stale_holder;

static struct node *make_list(int n, const char *prefix)
{
    struct node *head = NULL;
    for (int i = 0; i < n; i++) {
        struct node *nd = tmalloc(sizeof *nd);
        nd->value = i;
        nd->name = tmalloc(16);
        snprintf(nd->name, 16, "%s%d", prefix, i);
        nd->next = head;
        head = nd;
    }
    return head;
}

static void expect_list(struct node *head, const char *first, const char *rest)
{
    for (struct node *n = head; n; n = n->next) {
        truth_expect(n == head ? first : rest, n);
        truth_expect(rest, n->name);
    }
}

int main(void)
{
    /* reachable: the why() chain g_cache.entries[3] -> next -> value */
    for (int i = 0; i < 8; i++) {
        struct entry *e = tmalloc(sizeof *e);
        e->key = i;
        e->value = tmalloc(24);
        strcpy(e->value, "value");
        e->next = NULL;
        if (i == 3) {
            struct entry *e2 = tmalloc(sizeof *e2);
            e2->key = 100;
            e2->value = tmalloc(40);
            strcpy(e2->value, "the value");
            e2->next = NULL;
            e->next = e2;
            truth_expect("why-value", e2->value);
        }
        g_cache.entries[i] = e;
    }
    g_cache.count = 8;

    /* a dropped list */
    struct node *dropped = make_list(5, "dropped");
    expect_list(dropped, "definitely-lost", "indirectly-lost");
    sink(dropped);
    dropped = NULL;

    /* a cycle */
    struct node *a = tmalloc(sizeof *a), *b = tmalloc(sizeof *b), *c = tmalloc(sizeof *c);
    a->next = b; b->next = c; c->next = a;
    a->name = b->name = c->name = NULL;
    truth_expect("cycle-lost", a);
    truth_expect("cycle-lost", b);
    truth_expect("cycle-lost", c);
    sink(a);
    a = b = c = NULL;

    /* a leak via an overwritten pointer */
    g_holder.buf = tmalloc(100);
    memset(g_holder.buf, 0xab, 100);
    truth_expect("definitely-lost", g_holder.buf);
    g_holder.buf = tmalloc(200);
    strcpy(g_holder.buf, "the second buffer");
    g_holder.len = 200;
    truth_expect("reachable", g_holder.buf);

    /* a chunk referenced only through an integer field */
    g_hidden = tmalloc(sizeof *g_hidden);
    void *secret = tmalloc(48);
    memset(secret, 0x11, 48);
    g_hidden->handle = (uintptr_t)secret;
    g_hidden->other = 7;
    truth_expect("integer-only", secret);
    secret = NULL;

    /* possibly lost: only an interior pointer */
    char *inner = tmalloc(64);
    memset(inner, 'x', 63);
    inner[63] = 0;
    g_interior = inner + 16;
    truth_expect("possibly-lost", inner);
    inner = NULL;

    /* a void * payload (conservative), leading on to a typed list */
    g_box = tmalloc(sizeof *g_box);
    g_box->kind = 1;
    struct payload *pl = tmalloc(sizeof *pl);
    pl->list = make_list(3, "payload");
    pl->n = 3;
    g_box->payload = pl;
    truth_expect("reachable", pl);
    truth_expect("reachable", pl->list);
    truth_expect("reachable", pl->list->next->next);
    pl = NULL;

    /* a union */
    g_tagged.kind = 1;
    g_tagged.u.n = make_list(2, "tagged");
    truth_expect("reachable", g_tagged.u.n);
    truth_expect("reachable", g_tagged.u.n->next);

    /* a pointer array sized by its chunk */
    g_table.n = 6;
    g_table.slots = tcalloc(6, sizeof(struct node *));
    for (int i = 0; i < 6; i++) {
        g_table.slots[i] = make_list(1, "slot");
        truth_expect("reachable", g_table.slots[i]);
    }

    /* a stale pointer: the holder is reachable, what it points to was freed */
    g_stale_holder = tmalloc(sizeof *g_stale_holder);
    g_stale_holder->value = 1;
    g_stale_holder->name = tmalloc(200);
    truth_expect("stale", g_stale_holder->name);
    free(g_stale_holder->name);
    g_stale_holder->next = NULL;

    /* a frame root */
    struct node *local_list = make_list(4, "local");
    truth_expect("reachable", local_list);
    truth_expect("reachable", local_list->next->next->next);

    truth_write();
    printf("trace_leaks ready\n");
    fflush(stdout);
    heaplens_checkpoint();
    sink(local_list);
    return 0;
}
