/* freelist_overwrite.c MODE - a free-list link overwritten after free (UAF).
 *
 * MODE "tcache": user size 72 (chunk 0x50).  free(q), free(p), free(r) give
 *   tcache bin 0x50 = r -> p -> q (count 3); then p's next link (first 8
 *   bytes of p) is overwritten with 0x4141414141414141.  The walk from the
 *   bin head reaches p and then garbage; q becomes unreachable (q is cached
 *   but deliberately NOT recorded in the truth file).
 * MODE "smallbin": user size 300 (chunk 0x140).  Seven fillers fill the
 *   tcache bin, p (between live guards) is freed into the unsorted bin, and
 *   a 1200-byte malloc (served from top) sorts p into small bin 0x140.  Then
 *   p's fd (first 8 bytes) is overwritten with the address of a global array
 *   (p->fd->bk != p).
 *
 * Expected findings: "metadata-corruption" at p.  No malloc/free runs after
 * the overwrite, so glibc never notices.
 *
 * Build: gcc -g -O0 -pthread -o freelist_overwrite freelist_overwrite.c
 */
#include "truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

size_t fake_chunk[8];                   /* target of the forged fd */

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "tcache";
    void *p;

    if (strcmp(mode, "tcache") == 0) {
        void *r = tmalloc(72);
        p = tmalloc(72);
        void *q = tmalloc(72);
        tmalloc(72);                    /* live guard */
        tfree(q);
        tfree(p);
        tfree(r);                       /* tcache 0x50: r -> p -> q */
        truth_forget(q);                /* unreachable once p->next is smashed */
        *(volatile uint64_t *)p = 0x4141414141414141ull;
    } else if (strcmp(mode, "smallbin") == 0) {
        void *fill[7];
        for (int i = 0; i < 7; i++)
            fill[i] = tmalloc(300);
        tmalloc(24);                    /* guard before p */
        p = tmalloc(300);
        tmalloc(24);                    /* guard after p (keeps it off top) */
        for (int i = 0; i < 7; i++)
            tfree(fill[i]);             /* tcache 0x140 full */
        tfree(p);                       /* -> unsorted bin */
        tmalloc(1200);                  /* from top; sorts p into small bin 0x140 */
        *(void *volatile *)p = fake_chunk;
    } else {
        static const char msg[] = "usage: freelist_overwrite tcache|smallbin\n";
        (void)!write(2, msg, sizeof msg - 1);
        return 2;
    }
    truth_expect("metadata-corruption", p);
    truth_thread();
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
