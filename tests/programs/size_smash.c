/* size_smash.c - a heap overflow smashes the next chunk's size field.
 *
 * a (user 40, chunk 0x30) is followed by b (user 100); 20 live chunks
 * c1..c20 follow b, then x1 (200, freed -> tcache 0xd0) and x2 (2000, freed
 * -> unsorted bin), each followed by a live guard.  Writing 48 bytes into a
 * (40 usable) overwrites b's size field with 0x4141414141414141, so a heap
 * walk cannot step over b.  A good analyser resynchronises after b using the
 * free-list anchors (x1, x2) and still reports c1..c20 as live.
 *
 * Expected findings: "metadata-corruption" at b.  a, b, c1..c20 and the
 * guards are live; x1 and x2 are freed.
 *
 * Build: gcc -g -O0 -pthread -o size_smash size_smash.c
 */
#include "truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

/* The bug: copies n bytes into a buffer that holds fewer. */
__attribute__((noinline)) static void fill_bytes(char *dst, int c, size_t n)
{
    for (volatile size_t i = 0; i < n; i++)
        dst[i] = (char)c;
}

static volatile size_t overflow_len = 48;

int main(void)
{
    char *a = tmalloc(40);
    char *b = tmalloc(100);
    for (int i = 0; i < 20; i++)
        memset(tmalloc(16 + 24 * (size_t)i), 'c', 16);   /* c1..c20, live */
    void *x1 = tmalloc(200);
    tmalloc(24);                        /* guard */
    void *x2 = tmalloc(2000);
    tmalloc(24);                        /* guard before top */
    memset(b, 'b', 100);
    tfree(x1);                          /* tcache 0xd0 */
    tfree(x2);                          /* unsorted bin */

    fill_bytes(a, 'A', overflow_len);   /* 8 bytes past a: b's size field */

    truth_expect("metadata-corruption", b);
    truth_thread();
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
