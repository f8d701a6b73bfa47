"""The gdb side of scripts/demo.sh: sourced by gdb (`-x scripts/demo_gdb.py`) after
gdb_plugin/gdbinit.py has loaded the heaplens commands.

It runs the demo's gdb commands one by one, echoing each as `(gdb) COMMAND` under a section
header, keeps going when one fails, and makes gdb exit with status 1 if any did.

Environment (set by scripts/demo.sh):
  HEAPLENS_DEMO_MODE  "live": run the program to heaplens_checkpoint, report, save a core;
                      "core": report on the core file gdb was started with.
  HEAPLENS_DEMO_CORE  where the live run saves its core (gcore).
"""
import os

import gdb

MODE = os.environ.get("HEAPLENS_DEMO_MODE", "live")
CORE = os.environ.get("HEAPLENS_DEMO_CORE", "")
STOP_FUNCTION = "heaplens_checkpoint"
REPORT_FUNCTION = "report_done"  # the caller of heaplens_checkpoint, where `response` lives

failed = []


def header(title):
    gdb.write("\n==== %s ====\n" % title)
    gdb.flush()


def step(command, quiet_failure=False):
    """Runs one gdb command as a user would type it; True if it worked."""
    if not quiet_failure:
        gdb.write("(gdb) %s\n" % command)
        gdb.flush()
    try:
        gdb.execute(command, from_tty=False)
        return True
    except Exception as exc:  # gdb.error from gdb, anything else from a plugin bug
        if not quiet_failure:
            gdb.write("demo: '%s' failed: %s\n" % (command, exc), gdb.STDERR)
            failed.append(command)
        return False
    finally:
        gdb.flush()


def has_process():
    inferior = gdb.selected_inferior()
    return inferior is not None and inferior.pid != 0 and gdb.selected_thread() is not None


def frame_name():
    try:
        return gdb.selected_frame().name()
    except gdb.error:
        return None


def select_report_frame():
    """Selects the frame of report_done (where `response` is in scope)."""
    gdb.write("(gdb) frame function %s\n" % REPORT_FUNCTION)
    if step("frame function %s" % REPORT_FUNCTION, quiet_failure=True):
        return
    gdb.write("demo: no %s frame in the stack; trying `up`\n" % REPORT_FUNCTION)
    step("up")


def report(where):
    header("heap-check (%s)" % where)
    step("heap-check")
    header("info alloc response (%s, in %s)" % (where, REPORT_FUNCTION))
    select_report_frame()
    step("info alloc response")


def live():
    header("Running the program to %s" % STOP_FUNCTION)
    step("break %s" % STOP_FUNCTION)
    step("run")
    if not has_process():
        gdb.write("demo: the program ended without stopping at %s\n" % STOP_FUNCTION, gdb.STDERR)
        failed.append("run")
        return
    if frame_name() != STOP_FUNCTION:
        gdb.write("demo: warning: stopped in %s, not %s\n" % (frame_name(), STOP_FUNCTION))
    step("bt")
    report("live process")
    header("Saving a core file of the stopped process")
    if CORE:
        step("gcore %s" % CORE)
    # gdb -batch kills the program when it exits.


def core():
    if not has_process():
        gdb.write("demo: gdb has no core file loaded\n", gdb.STDERR)
        failed.append("core-file")
        return
    header("Where the core was taken")
    step("bt")
    report("core file")


def main():
    if MODE == "core":
        core()
    else:
        live()
    if failed:
        gdb.write("\ndemo: %d command(s) failed: %s\n" % (len(failed), "; ".join(failed)),
                  gdb.STDERR)
        gdb.flush()
        gdb.execute("quit 1")


main()
