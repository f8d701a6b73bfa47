/* known_heap.c - a clean heap whose every interesting chunk is known.
 *
 * Main thread (main_arena):
 *   - tcache only:  user sizes 24..1032 (10 classes), 3 allocated, 2 freed
 *                   each -> partially filled tcache bins.
 *   - fastbins:     user 40/56/100/120: 7 fillers freed first (tcache full),
 *                   then 2 victims each -> fastbins 0x30/0x40/0x70/0x80.
 *   - small bins:   user 180/300/460/620/1000: 7 fillers fill the tcache bin,
 *                   2 guarded victims each -> unsorted, then sorted into the
 *                   small bins by a 70000-byte malloc served from top.
 *   - large bins:   user 1100..60000, guarded, freed -> unsorted -> large bins
 *                   (1100/1110: two chunks of size 0x460 in one bin; 2000/2010:
 *                   sizes 0x7e0/0x7f0 in one bin, so nextsize lists matter).
 *   - unsorted:     1500, 7000 and a 300 freed after the sorting malloc.
 *   - mmapped:      1.5 MiB and 1 MiB, live.
 * 3 worker threads, each in its own arena, ~50 chunks each, with the same
 * pattern (tcache, fastbins, small/large bins, unsorted).  All threads are
 * alive (blocked) at the checkpoint.
 * Every victim sits between live chunks so nothing coalesces; no malloc runs
 * after the frees that could reuse them (except the sorting malloc, which is
 * larger than every free chunk).  A correct analyser reports no findings and
 * agrees with the truth file on every live/freed/mmapped pointer.
 *
 * Build: gcc -g -O0 -pthread -o known_heap known_heap.c
 */
#include "truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

#define NWORKERS 3
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
static pthread_barrier_t ready;

#define GUARD() tmalloc(24)     /* live separator, class 0x20 */

/* ------------------------------------------------------------------ main */
static const size_t tc_sizes[] = {24, 72, 136, 200, 264, 360, 520, 700, 900, 1032};
static const size_t fast_sizes[] = {40, 56, 100, 120};
static const size_t small_sizes[] = {180, 300, 460, 620, 1000};
static const size_t large_sizes[] = {1100, 1110, 2000, 2010, 5000, 12000, 30000, 60000};

static void main_heap(void)
{
    void *tc[NELEM(tc_sizes)][3];
    void *fast_fill[NELEM(fast_sizes)][7], *fast_vic[NELEM(fast_sizes)][2];
    void *small_fill[NELEM(small_sizes)][7], *small_vic[NELEM(small_sizes)][2];
    void *large_vic[NELEM(large_sizes)];
    void *late[3];

    /* 1. allocate everything (victims separated by live guards) */
    for (size_t i = 0; i < NELEM(tc_sizes); i++)
        for (int j = 0; j < 3; j++)
            tc[i][j] = tmalloc(tc_sizes[i]);
    for (size_t i = 0; i < NELEM(fast_sizes); i++) {
        for (int j = 0; j < 7; j++)
            fast_fill[i][j] = tmalloc(fast_sizes[i]);
        for (int j = 0; j < 2; j++)
            fast_vic[i][j] = tmalloc(fast_sizes[i]);
    }
    for (size_t i = 0; i < NELEM(small_sizes); i++) {
        for (int j = 0; j < 7; j++)
            small_fill[i][j] = tmalloc(small_sizes[i]);
        for (int j = 0; j < 2; j++) {
            GUARD();
            small_vic[i][j] = tmalloc(small_sizes[i]);
        }
    }
    for (size_t i = 0; i < NELEM(large_sizes); i++) {
        GUARD();
        large_vic[i] = tmalloc(large_sizes[i]);
    }
    GUARD();
    late[0] = tmalloc(1500);
    GUARD();
    late[1] = tmalloc(7000);
    GUARD();
    late[2] = tmalloc(300);
    GUARD();                            /* keeps everything away from top */
    tmalloc(1536 * 1024);               /* mmapped, live */
    tmalloc(1024 * 1024);               /* mmapped, live */
    memset(tcalloc(10, 50), 0, 1);      /* a live calloc'd chunk */

    /* 2. partially fill tcache bins; fill the fast/small ones completely */
    for (size_t i = 0; i < NELEM(tc_sizes); i++) {
        tfree(tc[i][0]);
        tfree(tc[i][2]);
    }
    for (size_t i = 0; i < NELEM(fast_sizes); i++)
        for (int j = 0; j < 7; j++)
            tfree(fast_fill[i][j]);
    for (size_t i = 0; i < NELEM(small_sizes); i++)
        for (int j = 0; j < 7; j++)
            tfree(small_fill[i][j]);

    /* 3. small and large victims -> unsorted bin */
    for (size_t i = 0; i < NELEM(small_sizes); i++)
        for (int j = 0; j < 2; j++)
            tfree(small_vic[i][j]);
    for (size_t i = 0; i < NELEM(large_sizes); i++)
        tfree(large_vic[i]);

    /* 4. a request bigger than any free chunk: sorts the unsorted bin into
     *    small/large bins, then is carved from top (no fastbin chunks exist
     *    yet, so its malloc_consolidate() does nothing) */
    tmalloc(70000);

    /* 5. these stay in the unsorted bin */
    for (int j = 0; j < 3; j++)
        tfree(late[j]);

    /* 6. fastbin victims last (tcache bins already full) */
    for (size_t i = 0; i < NELEM(fast_sizes); i++)
        for (int j = 0; j < 2; j++)
            tfree(fast_vic[i][j]);
}

/* --------------------------------------------------------------- workers */
static void *worker(void *arg)
{
    size_t t = (size_t)arg;
    static const size_t wtc[] = {24, 136, 264, 520};
    void *tc[4][2], *ff[7], *fv[3], *gf[7], *gv[2], *sf[7], *sv[2], *lv[2], *late;

    /* allocate (the first malloc creates this thread's arena and tcache) */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            tc[i][j] = tmalloc(wtc[i] + 8 * t);
    for (int j = 0; j < 7; j++)
        ff[j] = tmalloc(56);
    for (int j = 0; j < 3; j++)
        fv[j] = tmalloc(56);
    for (int j = 0; j < 7; j++)
        gf[j] = tmalloc(100);
    for (int j = 0; j < 2; j++)
        gv[j] = tmalloc(100);
    for (int j = 0; j < 7; j++)
        sf[j] = tmalloc(460);
    for (int j = 0; j < 2; j++) {
        GUARD();
        sv[j] = tmalloc(460);
    }
    GUARD();
    lv[0] = tmalloc(2000 + 100 * t);
    GUARD();
    lv[1] = tmalloc(9000 + 1000 * t);
    GUARD();
    late = tmalloc(1500 + 8 * t);
    GUARD();
    memset(tcalloc(20, 10), 0, 1);

    /* free: tcache (partial), fill tcache 0x40/0x70/0x1e0 */
    for (int i = 0; i < 4; i++)
        tfree(tc[i][1]);
    for (int j = 0; j < 7; j++) {
        tfree(ff[j]);
        tfree(gf[j]);
        tfree(sf[j]);
    }
    for (int j = 0; j < 2; j++)         /* -> unsorted */
        tfree(sv[j]);
    tfree(lv[0]);
    tfree(lv[1]);
    tmalloc(70000);                     /* sorts them into small/large bins */
    tfree(late);                        /* stays unsorted */
    for (int j = 0; j < 3; j++)         /* -> fastbin 0x40 */
        tfree(fv[j]);
    for (int j = 0; j < 2; j++)         /* -> fastbin 0x70 */
        tfree(gv[j]);

    truth_thread();
    pthread_barrier_wait(&ready);
    for (;;)
        pause();                        /* alive at the checkpoint */
    return NULL;
}

int main(void)
{
    pthread_t th[NWORKERS];
    pthread_barrier_init(&ready, NULL, NWORKERS + 1);
    /* create the threads first: pthread_create itself mallocs (the TLS dtv)
     * in main_arena, and must not reuse any recorded free chunk */
    for (size_t t = 0; t < NWORKERS; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)t) != 0)
            abort();
    main_heap();
    truth_thread();
    pthread_barrier_wait(&ready);       /* workers done and blocked */
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
