/* tc_invalid_free.c MODE - tcmalloc's free() given a pointer malloc never returned.
 *
 * MODE "interior": free(p + 16) on a live 64-byte object p: tcmalloc looks the page's size
 *   class up and pushes p+16 onto the thread cache unchecked (p's bytes 16..23 become a link).
 *   Expected: "invalid-free" at p+16; p stays live.
 * MODE "sized": tc_free_sized(p, 300) on a 64-byte object p (a sized delete with the wrong
 *   size): tcmalloc trusts the size and files p in the 320-byte class's list.
 *   Expected: "invalid-free" at p; p is recorded freed (it is in a free list, the wrong one).
 * MODE "link": a write after free puts 0x4141414141414141 into the first word (the free-list
 *   link) of a freed, cached 48-byte object p.  Expected: "metadata-corruption" at p.
 *
 * Build: gcc -g -O0 -pthread -o tc_invalid_free tc_invalid_free.c  (run with tcmalloc)
 */
#define TRUTH_ANY_ALLOCATOR     /* no glibc chunk headers to read */
#include "truth.h"
#include <dlfcn.h>

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "interior";
    void *p;
    if (strcmp(mode, "interior") == 0) {
        p = tmalloc(64);
        tmalloc(64);                       /* live guard */
        char *volatile inside = (char *)p + 16;
        truth_expect("invalid-free", inside);
        sink(p);
        free(inside);
    } else if (strcmp(mode, "sized") == 0) {
        void (*free_sized)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "tc_free_sized");
        if (!free_sized)
            return 3;
        p = tmalloc(64);
        tmalloc(64);
        truth_free(p);
        truth_expect("invalid-free", p);
        sink(p);
        free_sized(p, 300);
    } else if (strcmp(mode, "link") == 0) {
        p = tmalloc(48);
        void *q = tmalloc(48);
        tmalloc(48);
        tfree(q);
        tfree(p);                           /* cache: p -> q -> ... */
        *(void *volatile *)p = (void *)0x4141414141414141ull;   /* write after free */
        truth_forget(q);                    /* cut off from its list: shown as allocated */
        truth_expect("metadata-corruption", p);
    } else {
        static const char msg[] = "usage: tc_invalid_free interior|sized|link\n";
        (void)!write(2, msg, sizeof msg - 1);
        return 2;
    }
    truth_thread();
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
