/* je_known.c - a known jemalloc heap in several threads (no bugs).
 *
 * main + 4 workers (jemalloc gives each a different arena).  Each worker
 * allocates 5 blocks of each of 16 sizes (8 B .. 14 KiB small classes,
 * 20 KiB / 40 KiB / 300 KiB / 3 MiB large extents), frees every other
 * one (small and <= 32 KiB: into its own tcache; bigger: back to the arena
 * as dirty extents), allocates 300 x 48 B and frees 250 of them (the bin
 * overflows: jemalloc flushes part of it back to the slabs, whose bitmaps
 * then say free), then frees 3 blocks of the next worker (cross-thread
 * frees: they land in the freeing thread's tcache).  All workers then wait
 * while main stops in heaplens_checkpoint().
 *
 * Truth: live/freed lines, freedby (which thread's free), jestat.
 * Build: gcc -g -O0 -pthread -o je_known je_known.c   (run with LD_PRELOAD
 * of libjemalloc.so.2, or link with -ljemalloc)
 */
#define TRUTH_MAX (1 << 14)
#include "je_truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

#define NW 4
#define PER 5
static const size_t sizes[] = {8, 16, 24, 48, 64, 100, 200, 500, 1000, 3000, 8000, 14000,
                               20000, 40000, 300000, 3u << 20};
#define NS (sizeof sizes / sizeof sizes[0])

static void *blocks[NW][NS][PER];
static void *burst[NW][300];
static pthread_barrier_t allocated, freed, done;

static void *worker(void *arg)
{
    long id = (long)arg;
    truth_thread();
    for (size_t s = 0; s < NS; s++)
        for (int k = 0; k < PER; k++) {
            blocks[id][s][k] = tmalloc(sizes[s]);
            memset(blocks[id][s][k], (int)id, sizes[s] < 64 ? sizes[s] : 64);
        }
    for (int k = 0; k < 300; k++)
        burst[id][k] = tmalloc(48);
    pthread_barrier_wait(&allocated);
    for (size_t s = 0; s < NS; s++)
        for (int k = 1; k < PER; k += 2)
            jfree(blocks[id][s][k]);
    for (int k = 0; k < 250; k++)
        jfree(burst[id][k]);
    /* three of the next worker's blocks: index 0 (kept by their owner) */
    long nx = (id + 1) % NW;
    jfree(blocks[nx][1][0]);
    jfree(blocks[nx][6][0]);
    jfree(blocks[nx][12][0]);
    pthread_barrier_wait(&freed);
    pthread_barrier_wait(&done);       /* until the process exits */
    return NULL;
}

int main(void)
{
    pthread_t th[NW];
    pthread_barrier_init(&allocated, NULL, NW);
    pthread_barrier_init(&freed, NULL, NW + 1);
    pthread_barrier_init(&done, NULL, NW + 1);
    truth_thread();
    void *mine[8];
    for (int i = 0; i < 8; i++)
        mine[i] = tmalloc(32u << i);
    for (long i = 0; i < NW; i++)
        pthread_create(&th[i], NULL, worker, (void *)i);
    pthread_barrier_wait(&freed);
    jfree(mine[3]);
    sink(mine);
    je_truth_write();
    heaplens_checkpoint();
    _exit(0);
}
