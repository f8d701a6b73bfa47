/* tcache_double_free.c MODE - a chunk freed twice, without glibc noticing.
 *
 * MODE "cross": user size 40 (chunk 0x30).  Seven other chunks fill the
 *   tcache bin, free(p) sends p to fastbin 0x30; seven mallocs of 40 empty
 *   the tcache again (served from tcache only: the fastbin is not touched);
 *   the second free(p) puts p into the now non-full tcache bin, whose key
 *   check passes because p's key word was never set.  p ends up in BOTH
 *   tcache bin 0x30 and fastbin 0x30.
 * MODE "key": free(p) -> tcache; a use-after-free write clears p's tcache
 *   key word (((void **)p)[1] = 0), so the second free(p) is not detected:
 *   tcache bin 0x30 = p -> p -> p ... (count 2, a self-loop).
 *
 * Expected findings: "double-free" at p (truth: `expect double-free p`).
 * p is recorded as freed; the refilled chunks and the guard are live.
 *
 * Build: gcc -g -O0 -pthread -o tcache_double_free tcache_double_free.c
 */
#include "truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "cross";
    void *fill[7];
    void *p;

    if (strcmp(mode, "cross") == 0) {
        for (int i = 0; i < 7; i++)
            fill[i] = tmalloc(40);
        p = tmalloc(40);
        tmalloc(40);                    /* live guard after p */
        for (int i = 0; i < 7; i++)
            tfree(fill[i]);             /* tcache 0x30 full */
        tfree(p);                       /* -> fastbin 0x30 */
        for (int i = 0; i < 7; i++)
            tmalloc(40);                /* tcache 0x30 empty again; reuses fill[] */
        truth_expect("double-free", p);
        sink(p);
        free(p);                        /* -> tcache 0x30 as well */
    } else if (strcmp(mode, "key") == 0) {
        p = tmalloc(40);
        tmalloc(40);                    /* live guard after p */
        tfree(p);                       /* -> tcache 0x30 */
        ((void *volatile *)p)[1] = 0;   /* UAF write: clears the tcache key */
        truth_expect("double-free", p);
        sink(p);
        free(p);                        /* undetected: p -> p */
    } else {
        static const char msg[] = "usage: tcache_double_free cross|key\n";
        (void)!write(2, msg, sizeof msg - 1);
        return 2;
    }
    truth_thread();
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
