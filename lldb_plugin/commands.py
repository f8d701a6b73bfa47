"""lldb commands: thin wrappers that build an LldbTarget, call common.commands, print.

Every command of common.commands.COMMANDS (heap-check, heap-stats, heap-frames, heap-leaks, ...),
with its help text, plus `info alloc` (lldb has no `info` command: heaplens adds an `info`
container command holding `alloc`, so the gdb spelling works; `info-alloc` is the same command
at the top level), `heap-why EXPR` (EXPR evaluated by lldb, like info alloc's) and
`heaplens-annotate on|off` (lldb's form of gdb's `set heaplens annotate-frames`).
"""
from __future__ import annotations

import re
import traceback

import lldb

from common import commands as C
from common.allocators import NoAllocator
from common.target import TargetError

from .program import tagged
from .target import LldbTarget

LOG = "/tmp/heaplens-error.log"
_MASK = (1 << 64) - 1


def _sbtarget(debugger, exe_ctx):
    t = exe_ctx.GetTarget() if exe_ctx is not None else None
    if t is None or not t.IsValid():
        t = debugger.GetSelectedTarget()
    return t


def _emit(res: C.Result, result) -> None:
    if res.text and res.json_out is None:        # `--json -` prints only JSON: parseable
        result.AppendMessage(res.text.rstrip("\n"))
    if res.json_out:
        result.AppendMessage(res.json_out)
    for e in res.errors:
        result.AppendMessage(f"heaplens: {e}")
    if res.fail:
        result.SetError(res.fail)               # the command fails: `lldb -b` exits non-zero
    else:
        result.SetStatus(lldb.eReturnStatusSuccessFinishResult)


class _Command:
    """One lldb command (`command script add -c`): known problems become one error sentence,
    nothing becomes a traceback."""
    name = ""
    short = ""
    long = ""

    def __init__(self, debugger, internal_dict):
        self.debugger = debugger

    def get_short_help(self):
        return self.short

    def get_long_help(self):
        return self.long

    def __call__(self, debugger, command, exe_ctx, result):
        made = []

        def target():                                    # made after the arguments are checked
            made.append(LldbTarget(_sbtarget(debugger, exe_ctx)))
            return made[-1]
        try:
            self.run(target, command or "", exe_ctx, result)
        except (C.UsageError, TargetError, NoAllocator) as e:
            result.SetError(f"{self.name}: {e}")
        except KeyboardInterrupt:
            result.SetError(f"{self.name}: interrupted")
        except Exception as e:                           # a bug of ours: say so, log the details
            try:
                with open(LOG, "a") as f:
                    f.write(f"--- {self.name} {command!r}\n{traceback.format_exc()}\n")
            except OSError:
                pass
            result.SetError(f"{self.name}: internal error ({type(e).__name__}: {e}); "
                            f"details in {LOG} — please report it")
        finally:
            for t in made:
                t.close()

    def run(self, target, arg, exe_ctx, result):
        raise NotImplementedError


def _help(text: str):
    """(short, long) lldb help from a command table entry: lldb wraps long help itself, so
    each paragraph becomes one line; `Usage:` lines stay on their own."""
    lines = text.strip().splitlines()
    paras, cur = [], []
    for line in lines[1:]:
        if line.startswith("Usage:") or not line.strip():
            if cur:
                paras.append(" ".join(cur))
            cur = []
            if line.strip():
                paras.append(line.strip())
        else:
            cur.append(line.strip())
    if cur:
        paras.append(" ".join(cur))
    return lines[0], "\n\n".join(paras)


def _class_name(name: str) -> str:
    return "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", name)) + "Command"


def _command_class(spec: "C.CommandSpec"):
    """An lldb command for an entry of common.commands.COMMANDS: parse, make the target, run, print."""
    short, long = _help(spec.help)

    def run(self, target, arg, exe_ctx, result):
        args = spec.parse(arg)
        t = target()
        _emit(spec.run(t, args, t.cache_key()), result)
    cls = type(_class_name(spec.name), (_Command,), {"name": spec.name, "short": short, "long": long, "run": run})
    globals()[cls.__name__] = cls                     # `command script add -c` imports it by name
    return cls


for _spec in C.COMMANDS:
    _command_class(_spec)


class InfoAlloc(_Command):
    name = "info alloc"
    short, long = _help(C.INFO_ALLOC_HELP)
    long += ("\n\nIn lldb, EXPR is evaluated in the selected frame (frame select N first for another "
             "frame's variables); info-alloc EXPR is the same command.")

    def run(self, target, arg, exe_ctx, result):
        args = C.parse_info_alloc(arg)
        t = target()
        ptr = evaluate_pointer(t.target, exe_ctx, args.rest)
        _emit(C.run_info_alloc(t, ptr, args, t.cache_key()), result)


class HeapWhy(_Command):
    name = "heap-why"

    def run(self, target, arg, exe_ctx, result):
        from common import tracecmds as T
        args = T.parse_heap_why(arg)
        t = target()
        ptr = evaluate_pointer(t.target, exe_ctx, args.rest)
        _emit(T.run_heap_why(t, ptr, args, t.cache_key()), result)


def _heap_why_help():
    try:
        from common import tracecmds as T
        short, long = _help(T.HEAP_WHY_HELP)
        return short, long + "\n\nIn lldb, EXPR is evaluated in the selected frame (frame select N first)."
    except ImportError:                     # an older core without the tracing commands
        return "", ""


HeapWhy.short, HeapWhy.long = _heap_why_help()


ANNOTATE_HELP = """Annotate heap pointers wherever lldb prints them (frame variable, bt, p, expression).
Usage: heaplens-annotate [on|off]
Each pointer into the heap shows the state of its chunk, e.g. response = 0x55555555a2a0
[cached: tcache[6] (0x80) of thread 1, 120 B, freed last]. Off by default; without an argument,
says whether it is on. (lldb's form of gdb's `set heaplens annotate-frames on`: a type summary
for pointer types, in the type category `heaplens`.)"""


class Annotate(_Command):
    name = "heaplens-annotate"
    short, long = _help(ANNOTATE_HELP)
    package = "lldb_plugin"

    def run(self, target, arg, exe_ctx, result):
        from . import scripting
        debugger = self.debugger
        word = arg.strip().lower()
        if word in ("on", "off", "1", "0", "true", "false", "yes", "no", "enable", "disable"):
            scripting.set_annotations(debugger, word in ("on", "1", "true", "yes", "enable"), self.package)
        elif word:
            raise C.UsageError("usage: heaplens-annotate [on|off]")
        on = scripting.annotations_on(debugger)
        result.AppendMessage("heaplens: pointer annotations " + ("on" if on else "off"))
        result.SetStatus(lldb.eReturnStatusSuccessFinishResult)


_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)[uUlL]*")


def evaluate_pointer(sbtarget, exe_ctx, expr: str) -> C.Pointer:
    """EXPR -> address and static type, as lldb evaluates it in the selected frame."""
    if _INT.fullmatch(expr.strip()):                     # a bare address: no evaluation needed
        digits = expr.strip().rstrip("uUlL")
        sign, body = (-1, digits[1:]) if digits[0] == "-" else (1, digits.lstrip("+"))
        base = 16 if body[:2].lower() == "0x" else 8 if len(body) > 1 and body[0] == "0" else 10
        return C.Pointer((sign * int(body, base)) & _MASK, expr, None, None)
    frame = exe_ctx.GetFrame() if exe_ctx is not None else None
    if frame is None or not frame.IsValid():
        th = sbtarget.GetProcess().GetSelectedThread()
        frame = th.GetSelectedFrame() if th.IsValid() else None
    v = None
    if frame is not None and frame.IsValid():
        v = frame.GetValueForVariablePath(expr)          # a, p->next, a[1]: no code generation
        if not v.IsValid() or v.GetError().Fail():
            v = None
    if v is None:
        opts = lldb.SBExpressionOptions()
        opts.SetTimeoutInMicroSeconds(5_000_000)
        opts.SetTryAllThreads(False)
        opts.SetIgnoreBreakpoints(True)
        opts.SetUnwindOnError(True)
        v = (frame.EvaluateExpression(expr, opts) if frame is not None and frame.IsValid()
             else sbtarget.EvaluateExpression(expr, opts))
    err = v.GetError() if v is not None else None
    if v is None or not v.IsValid() or (err is not None and err.Fail()):
        raise C.UsageError(f"cannot evaluate '{expr}': {_first_error(err)}")
    typ = v.GetType()
    ct = typ.GetCanonicalType()
    type_name, tsize = _type_name(typ, frame), None
    cls = ct.GetTypeClass()
    if ct.IsPointerType():
        pt = ct.GetPointeeType().GetCanonicalType()
        if pt.GetBasicType() != lldb.eBasicTypeVoid and pt.GetTypeClass() != lldb.eTypeClassFunction:
            tsize = pt.GetByteSize() or None
        if tsize == 1 and pt.GetTypeFlags() & lldb.eTypeIsInteger:
            tsize = None                                 # char *: a byte buffer, not a typed object
        addr = v.GetValueAsUnsigned(0)
    elif ct.IsArrayType():
        addr = v.GetLoadAddress()
        if addr in (None, lldb.LLDB_INVALID_ADDRESS):
            addr = v.AddressOf().GetValueAsUnsigned(0)
    elif cls in (lldb.eTypeClassBuiltin, lldb.eTypeClassEnumeration) and \
            ct.GetTypeFlags() & (lldb.eTypeIsInteger | lldb.eTypeIsEnumeration):
        addr = v.GetValueAsUnsigned(0)
        type_name = None
    else:
        raise C.UsageError(f"'{expr}' is a {type_name}, not a pointer or an address "
                           f"(try &{expr} for the object's own address)")
    return C.Pointer(addr & _MASK, expr, type_name, tsize)


_C_LANGS = {getattr(lldb, n) for n in ("eLanguageTypeC", "eLanguageTypeC89", "eLanguageTypeC99",
                                         "eLanguageTypeC11") if hasattr(lldb, n)}
_TAGS = {lldb.eTypeClassStruct: "struct", lldb.eTypeClassUnion: "union", lldb.eTypeClassEnumeration: "enum"}


def _type_name(typ, frame) -> str:
    """The type as a C programmer (and gdb) spells it: lldb says `log_entry *` where C says
    `struct log_entry *` (typedef names are kept as they are)."""
    name = typ.GetName() or ""
    try:
        lang = frame.GetCompileUnit().GetLanguage() if frame is not None and frame.IsValid() else None
    except Exception:
        lang = None
    if lang not in _C_LANGS:
        return name
    base = typ
    while base.IsPointerType() or base.IsArrayType():
        base = base.GetPointeeType() if base.IsPointerType() else base.GetArrayElementType()
    base = base.GetUnqualifiedType()
    tag = _TAGS.get(base.GetTypeClass())
    bare = base.GetName() or ""
    if tag and bare and not bare.startswith(tag + " "):
        name = tagged(name, bare, tag)
    return name


def _first_error(err) -> str:
    """lldb's diagnostic, reduced to its first real sentence."""
    text = (err.GetCString() or "") if err is not None else ""
    for line in text.splitlines():
        line = re.sub(r"^(error:\s*)?(<user expression \d+>:\d+:\d+:\s*)?(error:\s*)?", "", line.strip())
        if line and not line.endswith("failed to parse:"):
            return line
    return "lldb gave no value"



INFO_HELP = "Commands added by plugins that show information (heaplens: info alloc)."


def register(debugger, package: str) -> None:
    """Add the commands (again, over themselves, when imported twice)."""
    ci = debugger.GetCommandInterpreter()

    def run(cmd: str):
        res = lldb.SBCommandReturnObject()
        ci.HandleCommand(cmd, res)
        return res
    mod = package + ".commands"
    Annotate.package = package
    table = [(spec.name, _class_name(spec.name)) for spec in C.COMMANDS] + [("info-alloc", "InfoAlloc"),
                                                                           ("heaplens-annotate", "Annotate")]
    if HeapWhy.short and not any(spec.name == "heap-why" for spec in C.COMMANDS):
        table.append(("heap-why", "HeapWhy"))
    for name, cls in table:
        r = run(f"command script add -o -c {mod}.{cls} {name}")
        if not r.Succeeded():
            print(f"heaplens: could not add the command {name}: {(r.GetError() or '').strip()}")
    if not ci.CommandExists("info"):
        run(f"command container add -h '{INFO_HELP}' info")
    r = run(f"command script add -o -c {mod}.InfoAlloc info alloc")
    if not r.Succeeded():
        print("heaplens: `info alloc` is not available (an `info` command that is not a container "
              f"already exists: {(r.GetError() or '').strip()}); use `info-alloc EXPR` instead")
