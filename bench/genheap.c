/* genheap.c - heap generator for heaplens benchmarks (no bugs).
 *
 * Usage: genheap N [THREADS]
 *   Creates about N chunks in total, spread over THREADS threads (default 4;
 *   main is thread 0 in main_arena, every other thread gets its own arena).
 *   Sizes: mostly 16..512, ~5% medium 513..4000, ~0.5% large 4001..60000,
 *   plus two live mmapped blocks per thread.  ~30% of the chunks are freed
 *   (index % 10 in {1,4,7}, so freed chunks never touch each other):
 *     pass A frees the non-fastbin sizes -> tcache (7 per class), then the
 *            unsorted bin; after 85% of them, 131000-byte mallocs (served
 *            from top, bigger than any free chunk; each sorts up to 10000
 *            chunks) move those into small and large bins, the last 15% stay
 *            unsorted;
 *     pass B frees the fastbin sizes (<= 0x80 chunks) -> tcache, fastbins.
 *   Then every thread blocks and main calls heaplens_checkpoint().
 *   Prints the live/freed counts to stderr.  If HEAPLENS_TRUTH is set, writes
 *   the truth file (live/freed/mmapped/thread lines, as tests/programs/).
 *
 * Build: gcc -O2 -g -pthread -o genheap genheap.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAXTHREADS 64
#define SORT_SIZE 131000            /* < mmap threshold, > any free chunk */
#define UNSORTED_MAX_ITERS 10000    /* glibc sorts at most this many per malloc */

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void sink(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

struct tstate {
    long n;                         /* chunks this thread creates */
    void **ptr;                     /* mmap'd tables: not on the heap */
    uint32_t *size;
    uint8_t *state;                 /* 0 live, 1 freed, 2 mmapped */
    void *extra[64];                /* sort mallocs + mmapped blocks (live) */
    size_t extra_size[64];
    int nextra;
    long tid, live, freed;
};

static struct tstate ts[MAXTHREADS];
static pthread_barrier_t done;

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static size_t pick_size(uint64_t *s)
{
    uint64_t r = lcg(s) % 1000, x = lcg(s);
    if (r < 650) return 16 + x % 113;           /* 16..128 */
    if (r < 940) return 129 + x % 384;          /* 129..512 */
    if (r < 995) return 513 + x % 3488;         /* 513..4000 */
    if (r < 999) return 4001 + x % 12000;       /* 4001..16000 */
    return 16001 + x % 44000;                   /* 16001..60000 */
}

static void *table(size_t bytes)
{
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static int is_fast(size_t n)        /* chunk size <= 0x80 */
{
    return ((n + 8 + 15) & ~(size_t)15) <= 0x80;
}

static void add_extra(struct tstate *t, size_t n)
{
    void *p = malloc(n);
    sink(p);
    t->extra[t->nextra] = p;
    t->extra_size[t->nextra++] = n;
    /* a sort malloc never reuses a freed chunk (all are smaller), but check */
    for (long i = t->n; i-- > 0;)
        if (t->state[i] == 1 && t->ptr[i] == p)
            t->state[i] = 0, t->live++, t->freed--;
}

static void run(int id)
{
    struct tstate *t = &ts[id];
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)id * 0x100000001b3ull;
    long unsorted = 0;

    t->tid = (long)syscall(SYS_gettid);
    t->ptr = table((size_t)t->n * sizeof *t->ptr);
    t->size = table((size_t)t->n * sizeof *t->size);
    t->state = table((size_t)t->n);
    /* two live mmapped blocks, first: a large malloc after the frees would
     * consolidate the fastbins and sort the unsorted bin */
    for (int k = 0; k < 2; k++) {
        size_t n = (k ? 1024 * 1024 : 300 * 1024) + 4096 * (size_t)id;
        void *p = malloc(n);
        sink(p);
        t->extra[t->nextra] = p;
        t->extra_size[t->nextra++] = n;
    }
    for (long i = 0; i < t->n; i++) {
        size_t n = pick_size(&seed);
        t->ptr[i] = malloc(n);
        if (!t->ptr[i]) {
            perror("malloc");
            exit(1);
        }
        *(volatile char *)t->ptr[i] = (char)i;
        t->size[i] = (uint32_t)n;
    }
    t->live = t->n;
    /* pass A: non-fastbin sizes -> tcache, then unsorted; the chunks freed
     * in the first 85% of the index range get sorted into small/large bins
     * (one SORT_SIZE malloc per 10000 unsorted chunks, all from top) */
    long split = t->n / 100 * 85;
    for (long i = 0; i < t->n; i++) {
        if (i == split) {
            for (long k = (unsorted + UNSORTED_MAX_ITERS - 1) / UNSORTED_MAX_ITERS;
                 k > 0 && t->nextra < 60; k--)
                add_extra(t, SORT_SIZE);
        }
        if ((i % 10 == 1 || i % 10 == 4 || i % 10 == 7) && !is_fast(t->size[i])) {
            free(t->ptr[i]);
            t->state[i] = 1;
            t->live--, t->freed++, unsorted++;
        }
    }
    /* pass B: fastbin sizes -> tcache, then fastbins */
    for (long i = 0; i < t->n; i++)
        if ((i % 10 == 1 || i % 10 == 4 || i % 10 == 7) && is_fast(t->size[i])) {
            free(t->ptr[i]);
            t->state[i] = 1;
            t->live--, t->freed++;
        }
}

static void *worker(void *arg)
{
    run((int)(intptr_t)arg);
    pthread_barrier_wait(&done);
    for (;;)
        pause();                    /* alive at the checkpoint */
    return NULL;
}

/* Buffered output without stdio (stdio would malloc). */
static char obuf[1 << 20];
static size_t olen;
static int ofd = -1;
static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    if (olen > sizeof obuf - 128) {
        (void)!write(ofd, obuf, olen);
        olen = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    olen += (size_t)vsnprintf(obuf + olen, sizeof obuf - olen, fmt, ap);
    va_end(ap);
}

static void write_truth(int nthreads)
{
    const char *path = getenv("HEAPLENS_TRUTH");
    if (!path || !*path || (ofd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0)
        return;
    for (int id = 0; id < nthreads; id++) {
        struct tstate *t = &ts[id];
        out("thread %ld\n", t->tid);
        for (long i = 0; i < t->n; i++)
            out("%s %p %u\n", t->state[i] ? "freed" : "live", t->ptr[i], t->size[i]);
        for (int k = 0; k < t->nextra; k++) {
            void *p = t->extra[k];
            int mm = (((size_t *)p)[-1] & 2) != 0;
            out("%s %p %zu\n", mm ? "mmapped" : "live", p, t->extra_size[k]);
        }
    }
    (void)!write(ofd, obuf, olen);
    close(ofd);
    olen = 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: genheap N [THREADS]\n");
        return 2;
    }
    long total = atol(argv[1]);
    int nthreads = argc > 2 ? atoi(argv[2]) : 4;
    if (total < 1 || nthreads < 1 || nthreads > MAXTHREADS) {
        fprintf(stderr, "genheap: bad arguments\n");
        return 2;
    }
    for (int id = 0; id < nthreads; id++)
        ts[id].n = total / nthreads + (id == 0 ? total % nthreads : 0);
    pthread_barrier_init(&done, NULL, (unsigned)nthreads);
    for (int id = 1; id < nthreads; id++) {
        pthread_t th;
        if (pthread_create(&th, NULL, worker, (void *)(intptr_t)id) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    run(0);
    pthread_barrier_wait(&done);

    long live = 0, freed = 0, extra = 0;
    for (int id = 0; id < nthreads; id++) {
        live += ts[id].live;
        freed += ts[id].freed;
        extra += ts[id].nextra;
    }
    char msg[200];
    int k = snprintf(msg, sizeof msg,
                     "genheap: %d threads, %ld chunks: %ld live + %ld extra live "
                     "(sort/mmapped), %ld freed\n", nthreads, total, live, extra, freed);
    (void)!write(2, msg, (size_t)k);
    write_truth(nthreads);
    heaplens_checkpoint();
    _exit(0);
}
