# check_truth.py - independent checker for the truth files of the programs in
# this directory (a development aid; it is not part of heaplens).  It relies
# on glibc 2.36 debug info (libc6-dbg) for main_arena/tcache, walks every
# tcache (per thread), fastbin and bin list, and checks each record:
#   live     -> in no free list, not IS_MMAPPED, big enough, next PREV_INUSE set,
#               not inside a listed free chunk
#   freed    -> in exactly one free list (more only if an `expect` names it)
#   mmapped  -> IS_MMAPPED set;  thread -> alive;  expect -> printed for review
# Usage:  HEAPLENS_TRUTH=/tmp/t.txt gdb -q -batch -x check_truth.py --args PROG ARGS
# Env: VERBOSE=1 lists where each freed pointer was found; ASLR=1 keeps ASLR on.
# Prints "RESULT OK" or the problems found.
import gdb, os, bisect, sys

def u64(addr):
    return int.from_bytes(bytes(gdb.selected_inferior().read_memory(addr, 8)), 'little')

gdb.execute("set pagination off")
gdb.execute("set confirm off")
if os.environ.get("ASLR"): gdb.execute("set disable-randomization off")
gdb.execute("break heaplens_checkpoint")
gdb.execute("run", to_string=True)
truth = os.environ["HEAPLENS_TRUTH"]
recs = [l.split() for l in open(truth) if l.strip()]

free = {}   # user ptr -> list of locations
free_chunks = []  # (start, size)
problems = []
def add(p, where, chunksize=None):
    free.setdefault(p, []).append(where)
    if chunksize is not None:
        free_chunks.append((p - 16, chunksize))

inf = gdb.selected_inferior()
# tcache per thread
tids = []
for th in inf.threads():
    th.switch()
    tid = th.ptid[1]
    tids.append(tid)
    try:
        tc = int(gdb.parse_and_eval("(unsigned long)tcache"))
    except gdb.error as e:
        tc = 0
    if not tc:
        continue
    for i in range(64):
        cnt = int(gdb.parse_and_eval("((tcache_perthread_struct*)%d)->counts[%d]" % (tc, i)))
        e = int(gdb.parse_and_eval("(unsigned long)((tcache_perthread_struct*)%d)->entries[%d]" % (tc, i)))
        n = 0; seen = set()
        while e and n < cnt + 5:
            add(e, "tcache[%d] idx%d (0x%x)" % (tid, i, (i+2)*16), (i + 2) * 16)
            n += 1
            if e in seen:
                break
            seen.add(e)
            if e & 15:
                break
            try:
                e = (e >> 12) ^ u64(e)
            except gdb.MemoryError:
                problems.append("tcache[%d] idx %d: unreadable entry 0x%x" % (tid, i, e)); break
        if n != cnt:
            problems.append("tcache[%d] idx %d: count %d walked %d" % (tid, i, cnt, n))
gdb.execute("thread 1", to_string=True)

ma = int(gdb.parse_and_eval("(unsigned long)&main_arena"))
ar = ma; arenas = []
while True:
    arenas.append(ar)
    ar = int(gdb.parse_and_eval("(unsigned long)((struct malloc_state*)%d)->next" % ar))
    if ar == ma:
        break
for ai, ar in enumerate(arenas):
    A = "((struct malloc_state*)%d)" % ar
    for i in range(10):
        c = int(gdb.parse_and_eval("(unsigned long)%s->fastbinsY[%d]" % (A, i)))
        n = 0
        seen = set()
        while c and n < 10000:
            add(c + 16, "arena%d fastbin[%d]" % (ai, i), u64(c + 8) & ~7)
            if c in seen: break
            seen.add(c); n += 1
            if c & 15: break
            try:
                c = ((c + 16) >> 12) ^ u64(c + 16)
            except gdb.MemoryError:
                problems.append("arena%d fastbin %d unreadable 0x%x" % (ai, i, c)); break
    binsaddr = int(gdb.parse_and_eval("(unsigned long)&%s->bins" % A))
    for b in range(1, 127):
        hdr = binsaddr + (b - 1) * 16 - 16
        c = u64(hdr + 16); n = 0
        while c != hdr and n < 100000:
            name = "unsorted" if b == 1 else ("small" if b < 64 else "large")
            try:
                add(c + 16, "arena%d %s bin %d" % (ai, name, b), u64(c + 8) & ~7)
                nxt = u64(c + 16)
                if u64(nxt + 24) != c:
                    problems.append("arena%d bin %d: fd->bk mismatch at chunk 0x%x (fd=0x%x)" % (ai, b, c, nxt))
                    break
                c = nxt; n += 1
            except gdb.MemoryError:
                problems.append("arena%d bin %d unreadable 0x%x" % (ai, b, c)); break

free_chunks.sort()
starts = [s for s, _ in free_chunks]
def inside_free(p):
    i = bisect.bisect_right(starts, p - 16) - 1
    # any free chunk strictly containing p (not starting at p-16)
    for j in range(max(0, i - 2), i + 1):
        s, sz = free_chunks[j]
        if s < p - 16 < s + sz:
            return True
    return False

expected = {int(r[2], 16) for r in recs if r[0] == "expect"}
ok = {"live": 0, "freed": 0, "mmapped": 0, "thread": 0, "expect": 0}
for r in recs:
    k = r[0]
    if k in ("live", "freed", "mmapped"):
        p = int(r[1], 16); req = int(r[2])
        sz = u64(p - 8)
        if k == "live" and p in expected:
            print("EXPECTED-LIVE 0x%x size field 0x%x (not checked)" % (p, sz))
        elif k == "live":
            if p in free: problems.append("live 0x%x is in free lists: %s" % (p, free[p])); continue
            if sz & 2: problems.append("live 0x%x has IS_MMAPPED" % p); continue
            cs = sz & ~7
            if cs - 8 < req: problems.append("live 0x%x chunk 0x%x too small for %d" % (p, cs, req)); continue
            try:
                nx = u64(p - 16 + cs + 8)
            except gdb.MemoryError:
                nx = 0
            if not (nx & 1): problems.append("live 0x%x next PREV_INUSE clear" % p); continue
            if inside_free(p): problems.append("live 0x%x inside a free chunk" % p); continue
        elif k == "freed":
            if p not in free: problems.append("freed 0x%x (%d) not in any free list" % (p, req)); continue
            if len(free[p]) > 1 and not any(x[0] == "expect" and int(x[2], 16) == p for x in recs):
                problems.append("freed 0x%x listed %d times %s" % (p, len(free[p]), free[p])); continue
        else:
            if not (sz & 2): problems.append("mmapped 0x%x lacks IS_MMAPPED (0x%x)" % (p, sz)); continue
            if (sz & ~7) - 16 < req: problems.append("mmapped 0x%x too small" % p); continue
        ok[k] += 1
    elif k == "thread":
        if int(r[1]) not in tids: problems.append("thread %s not alive (%s)" % (r[1], tids))
        else: ok[k] += 1
    elif k == "expect":
        p = int(r[2], 16)
        print("EXPECT %s 0x%x: in lists %s; size field 0x%x; first words 0x%x 0x%x" %
              (r[1], p, free.get(p), u64(p - 8), u64(p), u64(p + 8)))
        ok[k] += 1
nthr = sum(1 for r in recs if r[0] == "thread")
if nthr != len(tids):
    problems.append("gdb sees %d threads, truth has %d" % (len(tids), nthr))
cats = {}
for p, locs in free.items():
    for l in locs:
        a = l.split()[0] if not l.startswith("tcache") else "tcache"
        kind = "tcache" if l.startswith("tcache") else l.split()[1]
        cats.setdefault((a, kind), 0)
        cats[(a, kind)] += 1
print("FREE BY ARENA/KIND", sorted(cats.items()))
if os.environ.get("VERBOSE"):
    for r in recs:
        if r[0] in ("freed", "expect"):
            p = int(r[1 if r[0] == "freed" else 2], 16)
            print("  ", " ".join(r), "->", free.get(p))
print("ARENAS", len(arenas), "THREADS", len(tids), "FREE-LIST ENTRIES", sum(len(v) for v in free.values()))
print("CHECKED", ok)
def is_expected(pr):
    return any(("0x%x " % (p - 16)) in pr + " " or ("0x%x)" % (p - 16)) in pr for p in expected)
expected_problems = [pr for pr in problems if is_expected(pr)]
problems = [pr for pr in problems if not is_expected(pr)]
for pr in expected_problems:
    print("EXPECTED-PROBLEM", pr)
for pr in problems:
    print("PROBLEM", pr)
print("RESULT", "OK" if not problems else "FAIL (%d problems)" % len(problems))
gdb.execute("kill")
