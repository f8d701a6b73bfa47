/* je_busy.c [COUNT] - a clean, busy, multi-threaded jemalloc heap.
 *
 * main + 6 workers perform about COUNT (default 30000) allocations in total,
 * interleaved with frees and reallocs, driven by a fixed-seed LCG per thread:
 * sizes over every small class (8 B .. 14 KiB) and large ones (16 KiB ..
 * 600 KiB, some above the tcache limit), malloc/calloc/realloc/aligned_alloc.
 * Then each thread hands 16 of its blocks to the next, which frees them
 * (cross-thread frees land in the freeing thread's tcache), and finally
 * every thread frees a quarter of what it still holds.  All threads stay
 * alive at heaplens_checkpoint().  No bugs: no findings expected.
 *
 * Truth: thread lines, live lines for every block still held (freed blocks
 * are not recorded: a freed large extent may since have been reused), and
 * jestat lines (jemalloc's own stats.allocated etc. at the checkpoint).
 * Build: gcc -g -O0 -pthread -o je_busy je_busy.c
 */
#define TRUTH_MAX (1 << 16)
#include "je_truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

#define NWORKERS 6
#define NPART (NWORKERS + 1)
#define MAXSLOTS 8000
#define NHAND 16

struct part {
    void *ptr[MAXSLOTS];
    size_t size[MAXSLOTS];
    void *hand[NHAND];
    long allocs;
};
static struct part parts[NPART];
static long per_part;
static pthread_barrier_t handoff, finished, done;

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static size_t pick_size(uint64_t *s)
{
    uint64_t r = lcg(s) % 1000, x = lcg(s);
    if (r < 600) return 1 + x % 256;
    if (r < 850) return 257 + x % 1792;
    if (r < 960) return 2049 + x % 12287;          /* up to the largest small class */
    if (r < 990) return 14337 + x % 18432;         /* large, tcache-able (<= 32 KiB) */
    return 32769 + x % 600000;                     /* large, not cached */
}

static void run(int id)
{
    struct part *me = &parts[id];
    uint64_t seed = 0x1e3a110cu + 104729u * (unsigned)id;
    size_t nslots = (size_t)(per_part * 3 / 4);
    if (nslots < 64) nslots = 64;
    if (nslots > MAXSLOTS) nslots = MAXSLOTS;
    while (me->allocs < per_part) {
        uint64_t r = lcg(&seed);
        size_t i = r % nslots;
        if (!me->ptr[i]) {
            size_t n = pick_size(&seed);
            switch ((r >> 20) % 8) {
            case 0: me->ptr[i] = calloc(1, n); break;
            case 1: me->ptr[i] = aligned_alloc(64, (n + 63) & ~(size_t)63); n = (n + 63) & ~(size_t)63; break;
            default: me->ptr[i] = malloc(n);
            }
            if (!me->ptr[i]) abort();
            me->size[i] = n;
            me->allocs++;
        } else if ((r >> 20) % 8 == 1) {
            size_t n = pick_size(&seed);
            void *q = realloc(me->ptr[i], n);
            if (!q) abort();
            me->ptr[i] = q;
            me->size[i] = n;
            me->allocs++;
        } else {
            free(me->ptr[i]);
            me->ptr[i] = NULL;
        }
    }
    /* hand NHAND blocks to the next participant */
    int k = 0;
    for (size_t i = 0; i < nslots && k < NHAND; i++)
        if (me->ptr[i]) {
            me->hand[k++] = me->ptr[i];
            me->ptr[i] = NULL;
        }
    pthread_barrier_wait(&handoff);
    struct part *prev = &parts[(id + NPART - 1) % NPART];
    for (k = 0; k < NHAND; k++)
        if (prev->hand[k]) {
            free(prev->hand[k]);
            prev->hand[k] = NULL;      /* a clean program: no dangling pointer left behind */
        }
    size_t held = 0;
    for (size_t i = 0; i < nslots; i++)
        if (me->ptr[i] && held++ % 4 == 0) {
            free(me->ptr[i]);
            me->ptr[i] = NULL;
        }
    for (size_t i = 0; i < nslots; i++)
        if (me->ptr[i])
            truth_live(me->ptr[i], me->size[i]);
}

static void *worker(void *arg)
{
    truth_thread();
    run((int)(long)arg);
    pthread_barrier_wait(&finished);
    pthread_barrier_wait(&done);
    return NULL;
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 30000;
    per_part = count / NPART;
    pthread_t th[NWORKERS];
    pthread_barrier_init(&handoff, NULL, NPART);
    pthread_barrier_init(&finished, NULL, NPART);
    pthread_barrier_init(&done, NULL, NPART);
    truth_thread();
    for (long i = 0; i < NWORKERS; i++)
        pthread_create(&th[i], NULL, worker, (void *)(i + 1));
    run(0);
    pthread_barrier_wait(&finished);
    je_truth_write();
    heaplens_checkpoint();
    _exit(0);
}
