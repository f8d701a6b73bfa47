/* truth.h - ground-truth recorder shared by the heaplens test programs.
 *
 * Records are kept in a static table (no malloc) and written, when the
 * environment variable HEAPLENS_TRUTH names a file, by truth_write() with
 * snprintf + write(2) only, so recording never disturbs the heap.
 *
 * File format, one record per line (addresses 0x-hex, sizes decimal):
 *   live 0xADDR SIZE       allocated at the checkpoint (SIZE = requested size)
 *   freed 0xADDR SIZE      freed and not reused since (chunk is free/cached)
 *   mmapped 0xADDR SIZE    live allocation served by mmap (IS_MMAPPED set;
 *                          it has no "live" line)
 *   expect KIND 0xADDR     finding the analyser must report (double-free,
 *                          metadata-corruption)
 *   thread TID             kernel tid of a thread alive at the checkpoint
 *
 * Reuse tracking: truth_live() on an address that has a "freed" record turns
 * that record back into "live"; truth_free() turns a "live" record into
 * "freed" (or drops an "mmapped" one).  All functions are thread-safe.
 */
#ifndef HEAPLENS_TRUTH_H
#define HEAPLENS_TRUTH_H

#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef TRUTH_MAX
#define TRUTH_MAX 8192
#endif

enum { T_NONE, T_LIVE, T_FREED, T_MMAPPED, T_EXPECT, T_THREAD };

struct truth_rec {
    int kind;
    const char *what;   /* finding kind for T_EXPECT */
    uintptr_t addr;     /* address, or tid for T_THREAD */
    size_t size;
};

static struct truth_rec truth_tab[TRUTH_MAX];
static size_t truth_n;
static pthread_mutex_t truth_mu = PTHREAD_MUTEX_INITIALIZER;

#define TRUTH_FN static __attribute__((unused))

/* Chunk header helpers (glibc malloc_chunk layout, 64-bit). */
TRUTH_FN inline size_t chunk_size_field(const void *p)
{
    /* via uintptr_t: gcc's -Warray-bounds would object to p[-1] */
    return *(const size_t *)((uintptr_t)p - sizeof(size_t));
}
TRUTH_FN inline int chunk_is_mmapped(const void *p)
{
    return (chunk_size_field(p) & 2) != 0;
}

/* Escape hatch so -O2 keeps every malloc/free and every store. */
__attribute__((noinline)) TRUTH_FN void sink(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

TRUTH_FN struct truth_rec *truth_add(int kind, uintptr_t addr, size_t size)
{
    if (truth_n >= TRUTH_MAX) {
        static const char msg[] = "truth.h: TRUTH_MAX exceeded\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(2);
    }
    struct truth_rec *r = &truth_tab[truth_n++];
    r->kind = kind;
    r->what = NULL;
    r->addr = addr;
    r->size = size;
    return r;
}

TRUTH_FN struct truth_rec *truth_find(int kind, uintptr_t addr)
{
    for (size_t i = truth_n; i-- > 0;)
        if (truth_tab[i].kind == kind && truth_tab[i].addr == addr)
            return &truth_tab[i];
    return NULL;
}

/* p was just returned by malloc/calloc/realloc with requested size n. */
TRUTH_FN void truth_live(void *p, size_t n)
{
    pthread_mutex_lock(&truth_mu);
    struct truth_rec *r = truth_find(T_FREED, (uintptr_t)p);
    if (r) {                    /* reused a freed chunk */
        r->kind = T_LIVE;
        r->size = n;
    } else {
        truth_add(T_LIVE, (uintptr_t)p, n);
    }
    pthread_mutex_unlock(&truth_mu);
}

TRUTH_FN void truth_mmapped(void *p, size_t n)
{
    pthread_mutex_lock(&truth_mu);
    truth_add(T_MMAPPED, (uintptr_t)p, n);
    pthread_mutex_unlock(&truth_mu);
}

/* p (recorded live) is being freed (call just before free(p)). */
TRUTH_FN void truth_free(void *p)
{
    pthread_mutex_lock(&truth_mu);
    struct truth_rec *r = truth_find(T_LIVE, (uintptr_t)p);
    if (r)
        r->kind = T_FREED;
    else if ((r = truth_find(T_MMAPPED, (uintptr_t)p)))
        r->kind = T_NONE;       /* munmapped: nothing left to see */
    pthread_mutex_unlock(&truth_mu);
}

/* p is no longer known exactly: drop every live/freed record for it. */
TRUTH_FN void truth_forget(void *p)
{
    pthread_mutex_lock(&truth_mu);
    for (size_t i = 0; i < truth_n; i++)
        if ((truth_tab[i].kind == T_LIVE || truth_tab[i].kind == T_FREED) &&
            truth_tab[i].addr == (uintptr_t)p)
            truth_tab[i].kind = T_NONE;
    pthread_mutex_unlock(&truth_mu);
}

TRUTH_FN void truth_expect(const char *what, void *p)
{
    pthread_mutex_lock(&truth_mu);
    truth_add(T_EXPECT, (uintptr_t)p, 0)->what = what;
    pthread_mutex_unlock(&truth_mu);
}

/* Record the calling thread's kernel tid. */
TRUTH_FN void truth_thread(void)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    pthread_mutex_lock(&truth_mu);
    truth_add(T_THREAD, (uintptr_t)tid, 0);
    pthread_mutex_unlock(&truth_mu);
}

/* Record a fresh allocation as live or mmapped (from the chunk header).  Programs that run
 * on another allocator (jemalloc, tcmalloc) define TRUTH_ANY_ALLOCATOR before including this
 * file: there is no glibc chunk header before p (those bytes may belong to another object, or
 * to an unmapped page), so every allocation is recorded as live. */
TRUTH_FN void truth_alloc(void *p, size_t n)
{
#ifdef TRUTH_ANY_ALLOCATOR
    truth_live(p, n);
#else
    if (chunk_is_mmapped(p))
        truth_mmapped(p, n);
    else
        truth_live(p, n);
#endif
}

/* Instrumented wrappers. */
TRUTH_FN void *tmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        abort();
    sink(p);
    truth_alloc(p, n);
    return p;
}

TRUTH_FN void *tcalloc(size_t k, size_t n)
{
    void *p = calloc(k, n);
    if (!p)
        abort();
    sink(p);
    truth_alloc(p, k * n);
    return p;
}

TRUTH_FN void tfree(void *p)
{
    sink(p);
    truth_free(p);      /* record first: p must not be used after free */
    free(p);
}

/* Write all records to $HEAPLENS_TRUTH (if set).  No malloc. */
TRUTH_FN void truth_write(void)
{
    const char *path = getenv("HEAPLENS_TRUTH");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    static char buf[1 << 16];
    size_t len = 0;
    pthread_mutex_lock(&truth_mu);
    for (size_t i = 0; i < truth_n; i++) {
        const struct truth_rec *r = &truth_tab[i];
        char line[96];
        int k = 0;
        switch (r->kind) {
        case T_LIVE:
            k = snprintf(line, sizeof line, "live 0x%lx %zu\n",
                         (unsigned long)r->addr, r->size);
            break;
        case T_FREED: {
            /* paranoia: a freed address allocated again is not free */
            int reused = 0;
            for (size_t j = i + 1; j < truth_n && !reused; j++)
                reused = truth_tab[j].addr == r->addr &&
                         (truth_tab[j].kind == T_LIVE || truth_tab[j].kind == T_MMAPPED);
            if (reused)
                continue;
        }
            k = snprintf(line, sizeof line, "freed 0x%lx %zu\n",
                         (unsigned long)r->addr, r->size);
            break;
        case T_MMAPPED:
            k = snprintf(line, sizeof line, "mmapped 0x%lx %zu\n",
                         (unsigned long)r->addr, r->size);
            break;
        case T_EXPECT:
            k = snprintf(line, sizeof line, "expect %s 0x%lx\n", r->what,
                         (unsigned long)r->addr);
            break;
        case T_THREAD:
            k = snprintf(line, sizeof line, "thread %lu\n",
                         (unsigned long)r->addr);
            break;
        default:
            continue;
        }
        if (len + (size_t)k > sizeof buf) {
            (void)!write(fd, buf, len);
            len = 0;
        }
        memcpy(buf + len, line, (size_t)k);
        len += (size_t)k;
    }
    pthread_mutex_unlock(&truth_mu);
    (void)!write(fd, buf, len);
    close(fd);
}


#endif
