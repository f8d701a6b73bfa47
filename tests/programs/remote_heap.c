/* remote_heap.c - a heap with known findings that can wait for a debugger to attach.
 *
 * Main thread (main_arena):
 *   - tcache: user 24/100/500, 2 allocated and 1 freed each;
 *   - fastbin dup: 7 fillers fill tcache 0x30, then free(a), free(b), free(a):
 *     a "double-free" finding at a;
 *   - small and large bins: guarded victims of 300/1100/1110/2000/2010 bytes (7 fillers fill
 *     the 300-byte tcache bin first; the others are above tcache's range), sorted out of the
 *     unsorted bin by a 70000-byte malloc (1100/1110 share a large bin, 2000/2010 too, so the
 *     nextsize links matter);
 *   - mmapped: one 512 KiB block, live;
 *   - a dropped linked list (5 nodes, the global g_lost set to NULL: one definitely and four
 *     indirectly lost) and a reachable one (g_keep -> 3 nodes).
 * One worker thread in its own arena: 20 chunks, every third freed, then it blocks.
 * Every allocation comes before the frees, so no free chunk is split or reused.
 *
 * At heaplens_checkpoint(): with HEAPLENS_WAIT set the program prints "ready" and sleeps
 * there until killed (a debugger attaches to it: gdbserver --attach, gdb -p); without, it
 * calls the empty heaplens_checkpoint() (a breakpoint target) and exits.
 *
 * Build: gcc -g -O0 -pthread -o remote_heap remote_heap.c
 */
#include "truth.h"

#include <signal.h>

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

struct node {
    struct node *next;
    long value;
};

struct node *g_keep, *g_lost;
static pthread_barrier_t ready;
static pthread_mutex_t hold = PTHREAD_MUTEX_INITIALIZER;

/* record = 0: plain malloc, so the truth table (conservatively scanned memory) does not keep
 * the nodes reachable */
__attribute__((noinline)) static struct node *make_list(int n, int record)
{
    struct node *head = NULL;
    for (int i = 0; i < n; i++) {
        struct node *p = record ? tmalloc(sizeof *p) : malloc(sizeof *p);
        p->next = head;
        p->value = i;
        head = p;
    }
    return head;
}

static void *worker(void *arg)
{
    (void)arg;
    void *p[20];
    for (int i = 0; i < 20; i++)
        p[i] = tmalloc(32 + 48 * (size_t)i);
    for (int i = 0; i < 20; i += 3)
        tfree(p[i]);
    sink(p);
    truth_thread();
    pthread_barrier_wait(&ready);
    pthread_mutex_lock(&hold);              /* blocks: main holds it for good */
    return NULL;
}

int main(void)
{
    pthread_mutex_lock(&hold);
    pthread_barrier_init(&ready, NULL, 2);
    pthread_t th;
    pthread_create(&th, NULL, worker, NULL);

    /* every allocation first: no malloc after the frees may split or reuse a free chunk */
    static const size_t tc[] = {24, 100, 500};
    void *tca[3];
    for (int k = 0; k < 3; k++) {
        tca[k] = tmalloc(tc[k]);
        sink(tmalloc(tc[k]));
    }
    sink(tmalloc(512 * 1024));              /* mmapped */
    static const size_t bins[] = {300, 1100, 1110, 2000, 2010};
    void *fillers[5][7] = {{0}}, *victims[5];
    for (int k = 0; k < 5; k++) {
        for (int i = 0; k == 0 && i < 7; i++)   /* tcache covers 300 only: fill its bin first */
            fillers[k][i] = tmalloc(bins[k]);
        victims[k] = tmalloc(bins[k]);
        tmalloc(24);                        /* guard: the victim never coalesces */
    }
    void *fill[7];
    for (int i = 0; i < 7; i++)
        fill[i] = tmalloc(40);
    void *a = tmalloc(40), *b = tmalloc(40);
    tmalloc(40);
    g_lost = make_list(5, 0);
    sink(g_lost);
    g_lost = NULL;                          /* the only pointer to the list: leaked */
    g_keep = make_list(3, 1);
    make_list(0, 0);                        /* overwrite make_list's dead frame */

    for (int k = 0; k < 3; k++)
        tfree(tca[k]);                      /* tcache */
    for (int k = 0; k < 5; k++) {
        for (int i = 0; k == 0 && i < 7; i++)
            tfree(fillers[k][i]);
        tfree(victims[k]);                  /* unsorted */
    }
    void *sorter = tmalloc(70000);          /* from top: sorts the unsorted chunks into their bins */
    sink(sorter);
    for (int i = 0; i < 7; i++)
        tfree(fill[i]);                     /* tcache 0x30 full */
    tfree(a);
    tfree(b);
    truth_expect("double-free", a);
    sink(a);
    free(a);                                /* fastbin: a -> b -> a */

    pthread_barrier_wait(&ready);
    truth_thread();
    truth_write();
    if (getenv("HEAPLENS_WAIT")) {
        (void)!write(1, "ready\n", 6);
        for (;;)
            pause();                        /* a debugger attaches here */
    }
    heaplens_checkpoint();
    _exit(0);
}
