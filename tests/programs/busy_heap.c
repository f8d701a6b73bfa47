/* busy_heap.c [COUNT] - a clean, busy, multi-arena heap.
 *
 * main + 4 worker threads (each worker in its own arena) perform about
 * COUNT (default 5000) allocations in total, interleaved with frees and
 * reallocs, driven by a fixed-seed LCG per thread: sizes 16..200000 (plus
 * one 1 MiB+ block per thread that is always mmapped), malloc/calloc/realloc.
 * Then each thread hands 8 of its chunks to the next thread, which frees
 * them (cross-thread/cross-arena frees, legal), and finally every thread
 * frees a quarter of what it still holds without allocating again.  So
 * tcache, fastbins, unsorted, small and large bins and mmapped chunks are
 * all in use in several arenas.  No bugs: a correct analyser reports no
 * findings.
 *
 * Truth file: `thread` lines and a `live`/`mmapped` line for every
 * allocation still held (IS_MMAPPED decides which); no `freed` lines.
 *
 * Build: gcc -g -O0 -pthread -o busy_heap busy_heap.c
 */
#define TRUTH_MAX (1 << 17)            /* >= NPART * MAXSLOTS + threads */
#include "truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

#define NWORKERS 4
#define NPART (NWORKERS + 1)            /* participants: main is id 0 */
#define MAXSLOTS 20000               /* slots used: COUNT/NPART*3/4, 64..MAXSLOTS */
#define NHAND 8

struct part {
    void *ptr[MAXSLOTS];
    size_t size[MAXSLOTS];
    void *hand[NHAND];                  /* given to the next participant */
    unsigned long allocs;
};
static struct part parts[NPART];
static long per_part;
static size_t nslots;
static pthread_barrier_t handoff, done;

static uint64_t lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static size_t pick_size(uint64_t *s)
{
    uint64_t r = lcg_next(s) % 100, x = lcg_next(s);
    if (r < 50) return 16 + x % 241;            /* tcache/fastbin range */
    if (r < 75) return 257 + x % 776;           /* up to 1032 */
    if (r < 88) return 1033 + x % 3064;         /* small/large bins */
    if (r < 96) return 4097 + x % 28672;
    if (r < 99) return 32769 + x % 98304;
    return 131073 + x % 68928;                  /* often mmapped */
}

static void run(int id)
{
    struct part *me = &parts[id];
    uint64_t seed = 0x5eed0000u + 7919u * (unsigned)id;

    me->ptr[0] = malloc(me->size[0] = (1u << 20) + 65536u * (unsigned)id);
    sink(me->ptr[0]);                           /* mmapped, kept */
    me->allocs = 1;
    while ((long)me->allocs < per_part) {
        uint64_t r = lcg_next(&seed);
        size_t i = 1 + r % (nslots - 1);
        if (!me->ptr[i]) {
            size_t n = pick_size(&seed);
            me->ptr[i] = (r >> 20) % 8 == 0 ? calloc(1, n) : malloc(n);
            me->size[i] = n;
            me->allocs++;
        } else if ((r >> 20) % 8 == 1) {
            size_t n = pick_size(&seed);
            void *q = realloc(me->ptr[i], n);
            if (q) {
                me->ptr[i] = q;
                me->size[i] = n;
                me->allocs++;
            }
        } else {
            free(me->ptr[i]);
            me->ptr[i] = NULL;
        }
        if (me->ptr[i]) {
            memset(me->ptr[i], 'a' + id, me->size[i] < 64 ? me->size[i] : 64);
            sink(me->ptr[i]);
        }
    }
    /* hand NHAND live chunks to the next participant */
    for (size_t i = 1, k = 0; i < nslots && k < NHAND; i++)
        if (me->ptr[i]) {
            me->hand[k++] = me->ptr[i];
            me->ptr[i] = NULL;
        }
    pthread_barrier_wait(&handoff);
    struct part *prev = &parts[(id + NPART - 1) % NPART];
    for (int k = 0; k < NHAND; k++)
        free(prev->hand[k]);
    /* final frees, no allocation afterwards */
    for (size_t i = 1, k = 0; i < nslots; i++)
        if (me->ptr[i] && k++ % 4 == 0) {
            free(me->ptr[i]);
            me->ptr[i] = NULL;
        }
    truth_thread();
}

static void *worker(void *arg)
{
    run((int)(intptr_t)arg);
    pthread_barrier_wait(&done);
    for (;;)
        pause();                                /* alive at the checkpoint */
    return NULL;
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 5000;
    if (count < 10 * NPART)
        count = 10 * NPART;
    per_part = count / NPART;
    nslots = (size_t)per_part * 3 / 4;
    nslots = nslots < 64 ? 64 : nslots > MAXSLOTS ? MAXSLOTS : nslots;
    pthread_barrier_init(&handoff, NULL, NPART);
    pthread_barrier_init(&done, NULL, NPART);
    pthread_t th[NWORKERS];
    for (int t = 0; t < NWORKERS; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(intptr_t)(t + 1)) != 0)
            abort();
    run(0);
    pthread_barrier_wait(&done);                /* everyone finished */

    for (int id = 0; id < NPART; id++)
        for (size_t i = 0; i < nslots; i++)
            if (parts[id].ptr[i]) {
                void *p = parts[id].ptr[i];
                truth_add(chunk_is_mmapped(p) ? T_MMAPPED : T_LIVE,
                          (uintptr_t)p, parts[id].size[i]);
            }
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
