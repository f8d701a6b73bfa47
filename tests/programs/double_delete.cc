// double_delete.cc - C++: an object deleted twice through two owners; glibc aborts in the
// second delete ("free(): double free detected in tcache 2").
// Build: g++ -g -O0 -o double_delete double_delete.cc
#include <cstdio>
#include <cstring>

struct Session { int id; char name[40]; Session *peer; };

static void close_session(Session *s) { delete s; }

int main()
{
    Session *session = new Session();
    std::strcpy(session->name, "alice");
    Session *alias = session;          // a second owner
    close_session(alias);
    delete session;                    // the second delete
    std::puts("not reached");
    return 0;
}
