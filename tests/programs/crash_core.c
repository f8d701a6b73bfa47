/* crash_core.c - a small clean heap, then abort(): the kernel writes the core (tests truncate
 * it to check the behaviour on a damaged core). 2000 allocations, every other one freed
 * (and its pointer cleared).
 * Build: gcc -g -O0 -pthread -o crash_core crash_core.c */
#include <stdlib.h>
#include <string.h>

int main(void)
{
    static void *v[2000];
    for (int i = 0; i < 2000; i++) {
        v[i] = malloc(16 + i % 300);
        memset(v[i], 1, 16);
    }
    for (int i = 0; i < 2000; i += 2) {
        free(v[i]);
        v[i] = NULL;                     /* no dangling pointers: a clean program */
    }
    abort();
}
