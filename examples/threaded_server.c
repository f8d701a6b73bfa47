/* threaded_server.c - the case study: a response buffer freed twice by two threads.
 *
 * The handler thread (handler_query_response) allocates a response buffer and hands the
 * query to a worker thread. On an erroneous error path the worker frees the buffer itself
 * ("release the buffer on error") but leaves job->response set; the handler, seeing the
 * error, frees `response` again.
 *
 *   threaded_server          312-byte response. glibc 2.36 does not notice: its tcache
 *                            double-free check looks only in the freeing thread's own tcache,
 *                            and the first free went to the worker's. The buffer now sits in
 *                            two threads' tcaches; both threads' next malloc(312) will get it.
 *                            The program stops at heaplens_checkpoint() to be inspected.
 *   threaded_server big      4000-byte response (too big for tcache). The worker's free puts it
 *                            in a bin; the handler's free() aborts: "double free or corruption
 *                            (!prev)". Inspect the abort (live or core).
 *
 * Build: gcc -g -O0 -pthread -o threaded_server threaded_server.c   (make -C examples)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job {
    int id;
    const char *query;
    char *response;            /* owned by the handler... in theory */
    size_t cap;
    int status;                /* 0 ok, -1 error */
    int done;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct job *pending;    /* the job handed to the worker */
static int shutting_down;
static size_t response_size = 312;
static char *request_log[8];   /* unrelated live allocations */

__attribute__((noinline)) void heaplens_checkpoint(void) { __asm__ volatile("" ::: "memory"); }

static int run_query(struct job *job)
{
    if (strchr(job->query, ';'))            /* a malformed query */
        return -1;
    snprintf(job->response, job->cap, "result of %s", job->query);
    return 0;
}

static void *worker_main(void *arg)
{
    (void)arg;
    struct job *job = NULL;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (!pending && !shutting_down)
            pthread_cond_wait(&cv, &mu);
        if (shutting_down) {
            pthread_mutex_unlock(&mu);
            return NULL;
        }
        job = pending;
        pending = NULL;
        pthread_mutex_unlock(&mu);

        job->status = run_query(job);
        if (job->status < 0)
            free(job->response);            /* BUG: the handler owns it (and frees it too) */

        pthread_mutex_lock(&mu);
        job->done = 1;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
}

static void handler_query_response(int id, const char *query)
{
    struct job job = { .id = id, .query = query, .cap = response_size };
    char *response = malloc(response_size);
    char *trace = malloc(48);               /* a request trace, still live at the end */
    snprintf(trace, 48, "query %d", id);
    request_log[id % 8] = trace;
    job.response = response;

    pthread_mutex_lock(&mu);
    pending = &job;
    pthread_cond_broadcast(&cv);
    while (!job.done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    if (job.status < 0) {
        fprintf(stderr, "query %d failed\n", id);
        free(response);                     /* the second free */
        return;
    }
    printf("%s\n", response);
    free(response);
}

static void *handler_main(void *arg)
{
    (void)arg;
    handler_query_response(1, "select 1");
    handler_query_response(2, "select 2; drop table users");
    heaplens_checkpoint();                  /* in the default mode glibc did not notice */
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "big") == 0)
        response_size = 4000;
    for (int i = 0; i < 8; i++)
        if (!request_log[i])
            request_log[i] = malloc(64 + 16 * i);
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_t handler, worker;
    pthread_create(&handler, NULL, handler_main, NULL);
    pthread_create(&worker, NULL, worker_main, NULL);
    pthread_join(handler, NULL);
    pthread_mutex_lock(&mu);
    shutting_down = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(worker, NULL);
    return 0;
}
