/* tc_double_free.c MODE - an object freed twice under tcmalloc, which does not notice.
 *
 * MODE "same": main frees p twice in a row: its thread-cache list becomes p -> p (a loop).
 * MODE "cross": thread A frees p into its cache; then thread B frees two objects of its own of
 *   the same size and p again: p heads both caches, and A's list runs on into B's (A's
 *   length_ is 1, the link now points at B's objects).
 * MODE "central": thread A frees p and exits, which releases its cache to the central lists
 *   (p goes back onto its span's free list); then main frees p again into its own cache.
 * Each mode uses a size class nothing else in the program uses.
 *
 * Expected finding: "double-free" at p (truth: `expect double-free p`).  p is recorded freed;
 * B's objects are freed, the guards live.  Objects are recorded with truth_live() (tmalloc()
 * reads a glibc chunk header).  Surviving threads stay blocked through the checkpoint.
 *
 * Build: gcc -g -O0 -pthread -o tc_double_free tc_double_free.c  (run with tcmalloc)
 */
#define TRUTH_ANY_ALLOCATOR     /* no glibc chunk headers to read */
#include "truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

static void *p;
static pthread_barrier_t step, hold;

static void *thread_a(void *arg)
{
    (void)arg;
    tmalloc(16);                           /* gives A a thread cache (a free without one goes
                                               straight to the central lists) */
    pthread_barrier_wait(&step);
    tfree(p);                               /* first free: into A's cache */
    pthread_barrier_wait(&step);
    truth_thread();
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&hold);            /* never released */
    return NULL;
}

static void *thread_b(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&step);            /* A has freed p */
    void *b0 = tmalloc(104), *b1 = tmalloc(104);
    tfree(b0);
    tfree(b1);
    truth_expect("double-free", p);
    sink(p);
    free(p);                                /* second free: into B's cache */
    truth_thread();
    pthread_barrier_wait(&step);
    pthread_barrier_wait(&hold);
    return NULL;
}

static void *thread_exit_after_free(void *arg)
{
    (void)arg;
    tfree(p);                               /* into this thread's cache, released at exit */
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "same";
    pthread_t a, b;
    if (strcmp(mode, "same") == 0) {
        p = tmalloc(200);
        tmalloc(200);                      /* live guard */
        tfree(p);
        truth_expect("double-free", p);
        sink(p);
        free(p);                            /* p -> p */
    } else if (strcmp(mode, "cross") == 0) {
        p = tmalloc(104);
        tmalloc(104);                      /* live guard */
        pthread_barrier_init(&step, NULL, 3);
        pthread_barrier_init(&hold, NULL, 4);
        pthread_create(&a, NULL, thread_a, NULL);
        pthread_create(&b, NULL, thread_b, NULL);
        pthread_barrier_wait(&step);
        pthread_barrier_wait(&step);
        pthread_barrier_wait(&step);        /* both have freed p */
    } else if (strcmp(mode, "central") == 0) {
        p = tmalloc(136);
        tmalloc(136);                      /* live guard */
        pthread_create(&a, NULL, thread_exit_after_free, NULL);
        pthread_join(a, NULL);              /* A's cache went back to the central lists */
        truth_expect("double-free", p);
        sink(p);
        free(p);
    } else {
        static const char msg[] = "usage: tc_double_free same|cross|central\n";
        (void)!write(2, msg, sizeof msg - 1);
        return 2;
    }
    truth_thread();
    truth_write();
    heaplens_checkpoint();
    _exit(0);
}
