/* tc_known_heap.c [THREADS [N]] - a clean, busy tcmalloc heap with a known state.
 *
 * Run with tcmalloc (LD_PRELOAD of libtcmalloc_minimal.so.4 / libtcmalloc.so.4, or linked with
 * -ltcmalloc_minimal).  Main and THREADS-1 worker threads (default 4 in all) each allocate N
 * objects (default 3000) of many size classes (8 B .. 32 KiB) plus a few large ones (300 KiB,
 * 1 MiB: their own spans), then, once all have allocated, free every third object and some
 * large ones.  The frees land
 * in each thread's cache ("cached"), and the ones beyond the caches' limits go on to the
 * transfer caches and the spans' free lists ("free"); freed large spans return to the page
 * heap.  Every thread stays alive, blocked, while main calls heaplens_checkpoint().
 *
 * Ground truth (truth.h): live / freed lines per object, a thread line per thread.  The
 * addresses are recorded with truth_live(), not tmalloc(): tmalloc() reads a glibc chunk
 * header, which a tcmalloc object does not have.  Before the checkpoint the program prints
 * tcmalloc's own figures (MallocExtension_GetNumericProperty, found with dlsym) as lines
 * "tcstats NAME VALUE" on stderr, and each thread lists the objects it freed in
 * $HEAPLENS_TRUTH.owners ("freedby 0xADDR TID": a cached object must be in that thread's cache).
 *
 * Build: gcc -g -O0 -pthread -o tc_known_heap tc_known_heap.c
 */
#define TRUTH_MAX 65536
#define TRUTH_ANY_ALLOCATOR     /* no glibc chunk headers to read */
#include "truth.h"
#include <dlfcn.h>
#include <sys/mman.h>

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

#define MAXT 16

static long per_thread = 3000;
static pthread_barrier_t allocated, ready, hold;

static void **mmap_table(long n)          /* the pointer table lives off the heap */
{
    void *t = mmap(NULL, (size_t)n * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED)
        abort();
    return t;
}

static size_t pick(long i, unsigned *seed)
{
    static const size_t sizes[] = {8, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 200, 256, 320, 400,
                                   512, 700, 1024, 1500, 2048, 3000, 4096, 6000, 8192, 12000, 16384,
                                   24000, 32768};
    *seed = *seed * 1103515245u + 12345u;
    if (i % 500 == 7)
        return (i / 500) % 2 ? 300 * 1024 : 1024 * 1024;     /* large: a span of its own */
    return sizes[(*seed >> 16) % (sizeof sizes / sizeof sizes[0])] - ((*seed >> 8) & 3);
}

/* "freedby 0xADDR TID" lines in $HEAPLENS_TRUTH.owners: which thread freed each object (so the
 * thread whose cache holds it); written with write(2) on an O_APPEND file, one line per call */
static void record_owners(void **p, long n)
{
    const char *truth = getenv("HEAPLENS_TRUTH");
    char path[4096], line[64];
    if (!truth || snprintf(path, sizeof path, "%s.owners", truth) >= (int)sizeof path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    long tid = (long)syscall(SYS_gettid);
    for (long i = 0; i < n; i += 3) {
        int k = snprintf(line, sizeof line, "freedby %p %ld\n", p[i], tid);
        (void)!write(fd, line, (size_t)k);
    }
    close(fd);
}

static void work(unsigned seed)
{
    void **p = mmap_table(per_thread);
    for (long i = 0; i < per_thread; i++)
        p[i] = tmalloc(pick(i, &seed));
    /* no thread frees before all have allocated: pages a free gives back to the page heap are
     * then never reused for another size class, so every freed address stays an object start
     * or lies in a free page run */
    pthread_barrier_wait(&allocated);
    for (long i = 0; i < per_thread; i += 3)
        tfree(p[i]);
    record_owners(p, per_thread);
    truth_thread();
}

static void *thread_main(void *arg)
{
    work((unsigned)(uintptr_t)arg);
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&hold);           /* never released: stays alive through the checkpoint */
    return NULL;
}

static void stat_line(const char *name)
{
    int (*get)(const char *, size_t *) = (int (*)(const char *, size_t *))
        dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty");
    size_t v = 0;
    char line[160];
    if (get && get(name, &v)) {
        int k = snprintf(line, sizeof line, "tcstats %s %zu\n", name, v);
        (void)!write(2, line, (size_t)k);
    }
}

int main(int argc, char **argv)
{
    int nthreads = argc > 1 ? atoi(argv[1]) : 4;
    if (argc > 2)
        per_thread = atol(argv[2]);
    if (nthreads < 1 || nthreads > MAXT)
        nthreads = 4;
    pthread_t th[MAXT];
    pthread_barrier_init(&allocated, NULL, (unsigned)nthreads);
    pthread_barrier_init(&ready, NULL, (unsigned)nthreads);
    pthread_barrier_init(&hold, NULL, (unsigned)nthreads);
    for (int t = 1; t < nthreads; t++)
        pthread_create(&th[t], NULL, thread_main, (void *)(uintptr_t)(t * 7919));
    work(1);
    pthread_barrier_wait(&ready);           /* every thread has allocated and freed */
    static const char *const names[] = {"generic.current_allocated_bytes", "generic.heap_size",
        "tcmalloc.current_total_thread_cache_bytes", "tcmalloc.central_cache_free_bytes",
        "tcmalloc.transfer_cache_free_bytes", "tcmalloc.pageheap_free_bytes",
        "tcmalloc.pageheap_unmapped_bytes"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        stat_line(names[i]);
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
