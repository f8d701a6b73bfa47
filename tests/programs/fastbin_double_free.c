/* fastbin_double_free.c - classic fastbin dup: free(a), free(b), free(a).
 *
 * User size 40 (chunk 0x30).  Seven chunks fill the tcache bin first, so the
 * three frees go to fastbin 0x30; glibc only compares against the bin head,
 * so the list becomes a -> b -> a -> b ... (a cycle).
 *
 * Expected findings: "double-free" at a.  a and b are recorded freed, the
 * seven tcache chunks freed, the guard live.
 *
 * Build: gcc -g -O0 -pthread -o fastbin_double_free fastbin_double_free.c
 */
#include "truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

int main(void)
{
    void *fill[7];
    for (int i = 0; i < 7; i++)
        fill[i] = tmalloc(40);
    void *a = tmalloc(40);
    void *b = tmalloc(40);
    tmalloc(40);                        /* live guard before top */
    for (int i = 0; i < 7; i++)
        tfree(fill[i]);                 /* tcache 0x30 full */
    tfree(a);                           /* fastbin: a */
    tfree(b);                           /* fastbin: b -> a */
    truth_expect("double-free", a);
    sink(a);
    free(a);                            /* fastbin: a -> b -> a (head was b) */
    truth_thread();
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
