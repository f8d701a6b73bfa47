/* je_bugs.c MODE - jemalloc heap bugs that jemalloc itself does not notice.
 *
 * MODE:
 *   same      free(p) twice in one thread: p sits twice in its tcache bin
 *   cross     free(p) in thread A, then again in thread B: p in both tcaches
 *   flushed   free(p), flush the tcache (p back in its slab, bitmap free),
 *             free(p) again: p cached while its slab says free
 *   released  the same without a live neighbour: the flush releases the
 *             whole slab (a dirty extent), and p is cached inside it
 *   interior  free(p + 16): jemalloc caches the interior pointer unchecked
 *   large     free(p) twice for a 20 KiB (tcache-able large) block
 * Every mode also keeps a few clean live and freed blocks, and a worker
 * thread that stays alive (so its tcache is not flushed at exit).
 *
 * Truth: live/freed lines; "expect double-free ADDR" or "expect
 * invalid-free ADDR" for the bug.
 * Build: gcc -g -O0 -pthread -o je_bugs je_bugs.c
 */
#include "je_truth.h"

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

static pthread_barrier_t step1, step2, done;
static void *shared;
static const char *mode;

static void *worker(void *arg)
{
    (void)arg;
    truth_thread();
    void *w = tmalloc(200);
    sink(w);
    pthread_barrier_wait(&step1);          /* main freed `shared` */
    if (!strcmp(mode, "cross")) {
        je_note_free(shared);
        free(shared);                      /* the second free, from another thread */
    }
    pthread_barrier_wait(&step2);
    pthread_barrier_wait(&done);
    return NULL;
}

int main(int argc, char **argv)
{
    mode = argc > 1 ? argv[1] : "same";
    pthread_t th;
    pthread_barrier_init(&step1, NULL, 2);
    pthread_barrier_init(&step2, NULL, 2);
    pthread_barrier_init(&done, NULL, 2);
    truth_thread();
    pthread_create(&th, NULL, worker, NULL);
    void *keep[6];
    for (int i = 0; i < 6; i++)
        keep[i] = tmalloc(40 + 100 * (size_t)i);
    jfree(keep[1]);
    jfree(keep[4]);
    if (!strcmp(mode, "interior")) {
        char *p = tmalloc(64);
        truth_expect("invalid-free", p + 16);
        je_note_free(p + 16);
        free(p + 16);                      /* p itself stays allocated */
    } else if (!strcmp(mode, "large")) {
        void *p = tmalloc(20000);
        jfree(p);
        truth_expect("double-free", p);
        je_note_free(p);
        free(p);
    } else {
        void *neighbour = NULL;
        if (!strcmp(mode, "flushed"))
            neighbour = tmalloc(96);       /* keeps the slab in use after the flush */
        shared = tmalloc(96);
        sink(neighbour);
        jfree(shared);
        if (!strcmp(mode, "flushed") || !strcmp(mode, "released"))
            je_flush_tcache();             /* shared goes back to its slab */
        truth_expect("double-free", shared);
        if (strcmp(mode, "cross")) {
            je_note_free(shared);
            free(shared);                  /* the second free, same thread */
        }
    }
    pthread_barrier_wait(&step1);
    pthread_barrier_wait(&step2);
    sink(keep);
    je_truth_write();
    heaplens_checkpoint();
    _exit(0);
}
