/* clean_small.c - tiny clean single-threaded heap (sanity test).
 *
 * State at heaplens_checkpoint():
 *   live:  a (32), c (500), e (64), guard (24)
 *   freed: b (100)  -> tcache bin 0x70
 *          d (2000) -> unsorted bin (live neighbours c/e, so no coalescing)
 *   one thread (main).
 * A correct analyser reports no findings.
 *
 * Build: gcc -g -O0 -pthread -o clean_small clean_small.c
 */
#include "truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

int main(void)
{
    void *a = tmalloc(32);
    void *b = tmalloc(100);
    void *c = tmalloc(500);
    void *d = tmalloc(2000);
    void *e = tmalloc(64);
    void *guard = tmalloc(24);      /* keeps d/e away from top */
    memset(a, 'a', 32);
    memset(c, 'c', 500);

    tfree(b);                       /* tcache */
    tfree(d);                       /* > tcache max: unsorted bin */

    sink(e);
    sink(guard);
    truth_thread();
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
