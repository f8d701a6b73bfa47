"""The files of a program that runs on another machine.

heaplens reads the loaded objects' ELF files (libc's version string and TLS slots, an
allocator's build-id for its layout table, the DWARF maps). Over gdbserver those files are the
target's: this machine may lack them or hold another build. ensure_local() keeps each one that
is missing here, or whose build-id differs from the target's, as a copy fetched from the target
(the adapter's `fetch`: gdb's `remote get`), cached by build-id under the heaplens cache, and
registers it (common.elfinfo.use_local_copy) so every reader opens the copy.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Iterable, List, Optional

from .elfinfo import ElfInfo, use_local_copy
from .maps.cache import cache_dir

MAX_FILE = 1 << 30          # a loaded object larger than this is not fetched over the link

FetchFn = Callable[[str, str], Optional[str]]      # (target path, local dest) -> error sentence or None


def _build_id(path: str) -> Optional[str]:
    """The build-id of the file at `path` itself (not a registered copy), or None."""
    try:
        info = ElfInfo(path)
    except Exception:        # missing, unreadable or not ELF: as good as missing
        return None
    try:
        return info.build_id
    except Exception:
        return None
    finally:
        info.close()


def copies_dir() -> str:
    return os.path.join(os.path.dirname(cache_dir()), "remote-files")


def ensure_local(paths: Iterable[str], build_id_of: Callable[[str], Optional[str]], fetch: FetchFn) -> List[str]:
    """Fetch what is missing or different; returns one note per file fetched or not fetchable."""
    notes: List[str] = []
    for path in paths:
        want = build_id_of(path)
        have = _build_id(path) if os.path.exists(path) else None
        if have is not None and (want is None or have == want):
            continue                                     # this machine has the target's file
        key = want or "path-" + hashlib.sha1(path.encode()).hexdigest()[:16]
        dest = os.path.join(copies_dir(), key, os.path.basename(path) or "file")
        if not (os.path.exists(dest) and want is not None and _build_id(dest) == want):
            why = "is not on this machine" if have is None else f"here is another build (build-id {have})"
            try:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
            except OSError as e:
                notes.append(f"{path} {why}, and no copy can be kept ({e.strerror or e})")
                continue
            part = f"{dest}.{os.getpid()}.part"
            err = fetch(path, part)
            if err is None and want is not None and _build_id(part) != want:
                err = "the copy's build-id differs from what the debugger loaded"
            if err is None and os.path.getsize(part) > MAX_FILE:
                err = "larger than 1 GiB"
            if err is not None:
                notes.append(f"{path} {why} and could not be fetched from the target ({err}): "
                             "what heaplens reads from that file is missing")
                try:
                    os.unlink(part)
                except OSError:
                    pass
                continue
            os.replace(part, dest)
            notes.append(f"{path} {why}: fetched from the target ({os.path.getsize(dest):,} bytes, kept in {dest})")
        use_local_copy(path, dest)
    return notes


def namespace_copies(pid: int, paths: Iterable[str]) -> List[str]:
    """A process on this machine but in another mount namespace (a container) maps files by its
    own paths: where one of them is missing here or is another file, read it through
    /proc/PID/root (no copy needed). Returns one note per such file."""
    notes: List[str] = []
    root = f"/proc/{pid}/root"
    for path in paths:
        if not path.startswith("/"):
            continue
        alt = root + path
        try:
            st_alt = os.stat(alt)
        except OSError:
            continue
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (st_alt.st_dev, st_alt.st_ino):
                continue                                  # the same file: nothing to do
        except OSError:
            pass
        use_local_copy(path, alt)
        notes.append(f"{path} is read through {root} (the process's own mount namespace)")
    return notes
