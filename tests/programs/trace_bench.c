/* trace_bench.c N - a typed heap of about N chunks for timing common/trace.
 *
 * Interleaved allocations (a fixed-seed LCG picks which structure grows next, so objects
 * of every kind are mixed in memory, as in real programs):
 *   30%  four doubly linked lists of struct lnode (long chains: the worst case for a
 *        level-by-level traversal);
 *   20%  a binary search tree of struct tnode, each with a char * name (10% + 10%);
 *   30%  a hash table (a malloc'd bucket array sized by its chunk) of struct hentry, each
 *        with a char * key and a void * value pointing to a struct item (10% x 3);
 *   15%  a vector: a malloc'd array of struct item *;
 *    5%  leaks: dropped lists of 10 nodes, 3-chunk cycles, chunks only an integer holds.
 * Then main stops in heaplens_checkpoint(). Prints the counts to stderr.
 *
 * Build: gcc -O2 -g -o trace_bench trace_bench.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

struct lnode { struct lnode *next, *prev; long v; };
struct list { struct lnode *head, *tail; long n; };
struct tnode { struct tnode *left, *right; long key; char *name; };
struct item { long a, b; struct item *peer; };
struct hentry { struct hentry *next; char *key; void *value; };
struct htab { size_t n; struct hentry **b; };
struct vec { size_t n, cap; struct item **v; };
struct hidden { uintptr_t handle; };

struct list g_lists[4];
struct tnode *g_tree;
struct htab g_hash;
struct vec g_vec;
struct hidden *g_hidden;
long g_counts[8];

static uint64_t seed = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return seed >> 33;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        perror("malloc");
        exit(1);
    }
    return p;
}

static char *name(const char *pre, long i)
{
    char buf[48];
    int k = snprintf(buf, sizeof buf, "%s-%ld", pre, i);
    char *s = xmalloc((size_t)k + 1 + (size_t)(rnd() % 24));
    memcpy(s, buf, (size_t)k + 1);
    return s;
}

static void list_add(long i)
{
    struct list *l = &g_lists[rnd() % 4];
    struct lnode *n = xmalloc(sizeof *n);
    n->v = i;
    n->next = NULL;
    n->prev = l->tail;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
    l->n++;
    g_counts[0]++;
}

static void tree_add(long i)
{
    struct tnode *t = xmalloc(sizeof *t);
    t->key = (long)rnd();
    t->left = t->right = NULL;
    t->name = name("tree", i);
    struct tnode **p = &g_tree;
    while (*p)
        p = t->key < (*p)->key ? &(*p)->left : &(*p)->right;
    *p = t;
    g_counts[1] += 2;
}

static void hash_add(long i)
{
    struct hentry *e = xmalloc(sizeof *e);
    e->key = name("key", i);
    struct item *it = xmalloc(sizeof *it);
    it->a = i;
    it->b = -i;
    it->peer = NULL;
    e->value = it;
    size_t h = (size_t)rnd() % g_hash.n;
    e->next = g_hash.b[h];
    g_hash.b[h] = e;
    g_counts[2] += 3;
}

static void vec_add(long i)
{
    if (g_vec.n == g_vec.cap) {
        g_vec.cap = g_vec.cap ? g_vec.cap * 2 : 16;
        g_vec.v = realloc(g_vec.v, g_vec.cap * sizeof *g_vec.v);
        if (!g_vec.v)
            exit(1);
    }
    struct item *it = xmalloc(sizeof *it);
    it->a = i;
    it->b = 0;
    it->peer = g_vec.n ? g_vec.v[rnd() % g_vec.n] : NULL;
    g_vec.v[g_vec.n++] = it;
    g_counts[3]++;
}

static void leak_some(long i)
{
    switch (rnd() % 3) {
    case 0: {                                   /* a dropped list of 10 */
        struct lnode *h = NULL;
        for (int k = 0; k < 10; k++) {
            struct lnode *n = xmalloc(sizeof *n);
            n->v = i;
            n->next = h;
            n->prev = NULL;
            h = n;
        }
        g_counts[4] += 10;
        break;
    }
    case 1: {                                   /* a cycle */
        struct lnode *a = xmalloc(sizeof *a), *b = xmalloc(sizeof *b), *c = xmalloc(sizeof *c);
        a->next = b; b->next = c; c->next = a;
        a->prev = c; b->prev = a; c->prev = b;
        g_counts[5] += 3;
        break;
    }
    default: {                                  /* only an integer refers to it */
        struct hidden *h = xmalloc(sizeof *h);
        h->handle = (uintptr_t)xmalloc(64);
        g_counts[6] += 2;
        break;
    }
    }
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    g_hash.n = (size_t)(n / 30 > 16 ? n / 30 : 16);
    g_hash.b = calloc(g_hash.n, sizeof *g_hash.b);
    g_hidden = xmalloc(sizeof *g_hidden);
    g_hidden->handle = (uintptr_t)xmalloc(32);
    long made = 0;
    for (long i = 0; made < n; i++) {
        uint64_t r = rnd() % 100;
        if (r < 30) { list_add(i); made += 1; }
        else if (r < 50) { tree_add(i); made += 2; }
        else if (r < 80) { hash_add(i); made += 3; }
        else if (r < 95) { vec_add(i); made += 1; }
        else { leak_some(i); made += 6; }
    }
    fprintf(stderr, "trace_bench: lists %ld, tree %ld, hash %ld, vec %ld, leaked lists %ld, cycles %ld, "
            "hidden %ld\n", g_counts[0], g_counts[1], g_counts[2], g_counts[3], g_counts[4], g_counts[5],
            g_counts[6]);
    heaplens_checkpoint();
    return 0;
}
