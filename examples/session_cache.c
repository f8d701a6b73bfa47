/* session_cache.c - a toy web "session cache" with a real double free.
 *
 * handle_request() allocates the response buffer and hands it to the caller
 * through *out.  On its error path (the session has expired) it frees the
 * buffer itself -- and the caller frees it again at the end.  glibc does not
 * abort: the first free happens while the tcache bin for 0x80-byte chunks is
 * full (seven expired sessions' cached responses were just freed), so
 * `response` goes to fastbin 0x80; the users logging in again drain that
 * tcache bin, and the second free puts `response` into the tcache as well.
 * It is now in both lists, and the next two malloc(120) calls would return
 * the same buffer.
 *
 * At heaplens_checkpoint() (called from report_done(response), so frame 1
 * has `response` in scope) heaplens should report a double free of
 * `response`:  (gdb) info alloc response   -- in frame 1 ("up").
 * Honours HEAPLENS_TRUTH (see tests/programs/truth.h for the format).
 *
 * Build: make -C examples   (gcc -g -O0 -o build/session_cache session_cache.c)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/syscall.h>

#define RESPONSE_SIZE 120          /* chunk 0x80: tcache/fastbin sized */
#define MAX_SESSIONS 16
#define MAX_LOG 64

struct session {
    int id;
    char *user;                 /* strdup'd login name */
    char *last_response;        /* cached rendered page, RESPONSE_SIZE bytes */
    int idle;                   /* ticks since last request */
};

struct log_entry {
    int session, status;
    char path[48];
};

static struct session *cache[MAX_SESSIONS];
static struct log_entry *access_log[MAX_LOG];
static int nlog;
static const char *users[] = {"alice", "bob", "carol", "dave",
                              "erin", "frank", "grace", "heidi"};

__attribute__((noinline)) void heaplens_checkpoint(void)
{
    __asm__ volatile("" ::: "memory");
}

static char *render(const struct session *s, const char *path)
{
    char *page = malloc(RESPONSE_SIZE);
    snprintf(page, RESPONSE_SIZE, "HTTP/1.0 200 OK\r\n\r\nHello %s, this is %s\n",
             s->user, path);
    return page;
}

static void session_open(int id)
{
    struct session *s = malloc(sizeof *s);
    s->id = id;
    s->user = strdup(users[id]);
    s->idle = 0;
    s->last_response = render(s, "/login");
    cache[id] = s;
}

static void session_close(struct session *s)
{
    cache[s->id] = NULL;
    free(s->last_response);
    free(s->user);
    free(s);
}

static void expire_idle(int max_idle)
{
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (cache[i] && cache[i]->idle > max_idle)
            session_close(cache[i]);
}

/* On success *out is the rendered response; the caller owns and frees it. */
static int handle_request(int id, const char *path, char **out)
{
    char *response = malloc(RESPONSE_SIZE);
    *out = response;
    struct log_entry *e = malloc(sizeof *e);
    e->session = id;
    snprintf(e->path, sizeof e->path, "%s", path);
    access_log[nlog++] = e;

    expire_idle(5);                     /* housekeeping before the lookup */
    struct session *s = cache[id];
    if (!s) {
        e->status = 401;
        free(response);                 /* BUG: *out still points here */
        return -1;
    }
    e->status = 200;
    snprintf(response, RESPONSE_SIZE, "HTTP/1.0 200 OK\r\n\r\n%s: %s\n", s->user, path);
    s->idle = 0;
    return 0;
}

static void write_truth(char *response);

__attribute__((noinline)) void report_done(char *response)
{
    write_truth(response);
    heaplens_checkpoint();              /* inspect the heap here */
}

int main(void)
{
    for (int id = 0; id < 8; id++)
        session_open(id);
    for (int id = 1; id < 8; id++)      /* time passes; only alice is active */
        cache[id]->idle = 10;

    char *response;
    if (handle_request(3, "/cart", &response) < 0)
        for (int id = 1; id < 8; id++)  /* expired users log in again */
            if (!cache[id])
                session_open(id);

    free(response);                     /* second free of the same buffer */
    report_done(response);
    _exit(0);
}

/* ---- test support: ground truth for heaplens' test-suite (no malloc) ---- */
static void put(int fd, const char *kind, const void *p, size_t n)
{
    char line[80];
    int k = snprintf(line, sizeof line, "%s %p %zu\n", kind, p, n);
    (void)!write(fd, line, (size_t)k);
}

static void write_truth(char *response)
{
    const char *path = getenv("HEAPLENS_TRUTH");
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    if (fd < 0)
        return;
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (cache[i]) {
            put(fd, "live", cache[i], sizeof *cache[i]);
            put(fd, "live", cache[i]->user, strlen(cache[i]->user) + 1);
            put(fd, "live", cache[i]->last_response, RESPONSE_SIZE);
        }
    for (int i = 0; i < nlog; i++)
        put(fd, "live", access_log[i], sizeof *access_log[i]);
    put(fd, "freed", response, RESPONSE_SIZE);
    char line[80];
    int k = snprintf(line, sizeof line, "expect double-free %p\nthread %ld\n",
                     (void *)response, (long)syscall(SYS_gettid));
    (void)!write(fd, line, (size_t)k);
    close(fd);
}
