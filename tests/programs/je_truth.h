/* je_truth.h - truth.h for the jemalloc test programs (tests/programs/je_*.c).
 *
 * With TRUTH_ANY_ALLOCATOR, truth.h's tmalloc()/tcalloc() record every
 * allocation as plain "live" (there is no glibc chunk header to read).
 * Extra records, appended to the truth file by je_truth_write() (truth.py
 * ignores unknown lines; tests/test_jemalloc.py reads them):
 *   freedby 0xADDR TID      the thread that freed ADDR last (its tcache holds it)
 *   jestat NAME VALUE       jemalloc's own statistic (mallctl "stats.NAME")
 * mallctl is looked up with dlsym, so the programs run under LD_PRELOAD and
 * linked with -ljemalloc alike.
 */
#ifndef HEAPLENS_JE_TRUTH_H
#define HEAPLENS_JE_TRUTH_H

#define TRUTH_ANY_ALLOCATOR     /* no glibc chunk headers to read */
#include "truth.h"
#include <dlfcn.h>
#include <stdint.h>

#ifndef JE_FREED_MAX
#define JE_FREED_MAX 65536
#endif

static struct { uintptr_t addr; long tid; } je_freed[JE_FREED_MAX];
static size_t je_nfreed;

TRUTH_FN void je_note_free(void *p)
{
    long tid = (long)syscall(SYS_gettid);
    pthread_mutex_lock(&truth_mu);
    if (je_nfreed < JE_FREED_MAX) {
        je_freed[je_nfreed].addr = (uintptr_t)p;
        je_freed[je_nfreed].tid = tid;
        je_nfreed++;
    }
    pthread_mutex_unlock(&truth_mu);
}

TRUTH_FN void jfree(void *p)
{
    sink(p);
    truth_free(p);
    je_note_free(p);
    free(p);
}

typedef int (*je_mallctl_fn)(const char *, void *, size_t *, void *, size_t);

TRUTH_FN je_mallctl_fn je_mallctl(void)
{
    return (je_mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
}

/* Flush the calling thread's tcache back to the slabs. */
TRUTH_FN void je_flush_tcache(void)
{
    je_mallctl_fn ctl = je_mallctl();
    if (!ctl || ctl("thread.tcache.flush", NULL, NULL, NULL, 0) != 0)
        abort();
}

/* truth_write() plus freedby and jestat lines. No malloc after the stats are read. */
TRUTH_FN void je_truth_write(void)
{
    static const char *names[] = {"allocated", "active", "resident", "mapped", "metadata"};
    size_t vals[5] = {0};
    je_mallctl_fn ctl = je_mallctl();
    if (ctl) {
        uint64_t epoch = 1;
        size_t sz = sizeof epoch;
        ctl("epoch", &epoch, &sz, &epoch, sz);
        for (int i = 0; i < 5; i++) {
            char name[32];
            size_t len = sizeof vals[i];
            snprintf(name, sizeof name, "stats.%s", names[i]);
            ctl(name, &vals[i], &len, NULL, 0);
        }
    }
    truth_write();
    const char *path = getenv("HEAPLENS_TRUTH");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return;
    char line[96];
    for (size_t i = 0; i < je_nfreed; i++) {
        int k = snprintf(line, sizeof line, "freedby 0x%lx %ld\n", (unsigned long)je_freed[i].addr,
                         je_freed[i].tid);
        (void)!write(fd, line, (size_t)k);
    }
    for (int i = 0; ctl && i < 5; i++) {
        int k = snprintf(line, sizeof line, "jestat %s %zu\n", names[i], vals[i]);
        (void)!write(fd, line, (size_t)k);
    }
    close(fd);
}

#endif
