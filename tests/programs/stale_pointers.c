/* stale_pointers.c MODE - pointers in the program's own variables, checked against the heap.
 *
 *   clean  lists, a tree, arrays of pointers, structs holding pointers; everything freed is
 *          also cleared. A correct analyser reports no use-after-free and no size-mismatch.
 *   stale  g_head (a global) still points to a freed list node; the local struct `conn`
 *          keeps conn.buf after free(conn.buf); the live heap object `holder` keeps
 *          holder->data after free; `big` was allocated with sizeof(struct big *) instead of
 *          sizeof(struct big). Expect use-after-free for g_head, conn.buf, holder->data and
 *          size-mismatch for big. Stops at heaplens_checkpoint().
 *   segv   a node is freed, then the program walks n->next->value through it: the freed
 *          node's next field now holds tcache's (safe-linked) link, so the walk faults.
 *          Expect a critical use-after-free for `n` in walk_list, the crashing frame.
 *
 * Build: gcc -g -O0 -pthread -o stale_pointers stale_pointers.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { struct node *next; long value; char *label; };
struct tree { struct tree *left, *right; int key; };
struct conn { int fd; char *buf; struct node *route; };
struct holder { char *data; struct node *list; };
struct big { long a[16]; struct node *n; };

struct node *g_head;
struct tree *g_root;
static char *g_names[32];

__attribute__((noinline)) void heaplens_checkpoint(void) { __asm__ volatile("" ::: "memory"); }

static struct node *push(struct node *head, long v)
{
    struct node *n = malloc(sizeof *n);
    n->next = head;
    n->value = v;
    n->label = malloc(16);
    snprintf(n->label, 16, "n%ld", v);
    return n;
}

static struct tree *insert(struct tree *t, int key)
{
    if (!t) {
        t = calloc(1, sizeof *t);
        t->key = key;
        return t;
    }
    if (key < t->key)
        t->left = insert(t->left, key);
    else
        t->right = insert(t->right, key);
    return t;
}

__attribute__((noinline)) static long walk_list(struct node *n)
{
    long sum = 0;
    for (int i = 0; i < 3 && n; i++) {
        sum += n->next->value;          /* n is freed: n->next is the allocator's link now */
        n = n->next;
    }
    return sum;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "clean";
    for (int i = 0; i < 200; i++)
        g_head = push(g_head, i);
    for (int k = 0; k < 100; k++)
        g_root = insert(g_root, (k * 37) % 101);
    for (int i = 0; i < 32; i++) {
        g_names[i] = malloc(24 + i);
        strcpy(g_names[i], "name");
    }
    struct conn conn = { 3, malloc(512), g_head };
    struct holder *holder = malloc(sizeof *holder);
    holder->data = malloc(100);
    holder->list = g_head;

    /* clean frees: every freed pointer is cleared */
    for (int i = 0; i < 32; i += 2) {
        free(g_names[i]);
        g_names[i] = NULL;
    }
    struct node *second = g_head->next;
    g_head->next = second->next;
    free(second->label);
    free(second);
    second = NULL;

    if (strcmp(mode, "stale") == 0) {
        struct big *big = malloc(sizeof(struct big *));   /* the classic wrong sizeof */
        struct node *old = g_head;
        g_head = old->next;
        free(old->label);
        free(old);                       /* ... but g_head is set back below: stale */
        g_head = old;
        free(conn.buf);                  /* conn.buf left dangling */
        free(holder->data);              /* holder->data left dangling */
        heaplens_checkpoint();
        (void)big;
    } else if (strcmp(mode, "segv") == 0) {
        struct node *n = g_head->next->next;
        g_head->next->next = NULL;
        free(n->label);
        free(n);                         /* n->next becomes the tcache link (garbage) */
        printf("%ld\n", walk_list(n));   /* faults inside walk_list */
    } else {
        heaplens_checkpoint();
    }
    printf("%d %ld\n", conn.fd, holder->list ? holder->list->value : 0L);
    return 0;
}
