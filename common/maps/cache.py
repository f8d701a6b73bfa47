"""On-disk cache of decoded maps, one file per (build-id, format version), in numpy's .npz
format loaded with allow_pickle=False: integer columns as int64 arrays, string columns as
one NUL-joined UTF-8 buffer, expression blobs as one byte buffer plus offsets, and a JSON
header. Nothing in it is executable, and a damaged or foreign file is a cache miss.

Location: $HEAPLENS_CACHE_DIR, else $XDG_CACHE_HOME/heaplens/maps, else ~/.cache/heaplens/maps.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np

#: bump whenever the column layout changes: old entries are then ignored. The key also holds a
#: digest of the decoder's source, so any change to the code that writes the maps invalidates too.
FORMAT_VERSION = 1
_SOURCES = ("cache.py", "decode.py", "exprs.py", "files.py", "globals.py", "locations.py", "typemap.py")
_digest: Optional[str] = None


def code_digest() -> str:
    global _digest
    if _digest is None:
        h = hashlib.sha1()
        here = os.path.dirname(os.path.abspath(__file__))
        for name in _SOURCES:
            try:
                with open(os.path.join(here, name), "rb") as f:
                    h.update(f.read())
            except OSError:
                h.update(name.encode())
        _digest = h.hexdigest()[:10]
    return _digest

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def cache_dir(override: Optional[str] = None) -> str:
    if override:
        return override
    env = os.environ.get("HEAPLENS_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "heaplens", "maps")


def cache_path(key: str, directory: Optional[str] = None) -> str:
    safe = "".join(c for c in key if c.isalnum() or c in "-_.")[:120]
    return os.path.join(cache_dir(directory), f"{safe}.v{FORMAT_VERSION}-{code_digest()}.npz")


def _ints(col: List[int]) -> np.ndarray:
    try:
        return np.asarray(col, dtype=np.int64)
    except OverflowError:
        return np.asarray([((v + (1 << 63)) % (1 << 64)) - (1 << 63) for v in col], dtype=np.int64)


def _strings(col: List[str]) -> np.ndarray:
    return np.frombuffer("\0".join(col).encode("utf-8", "surrogatepass"), dtype=np.uint8)


def save(path: str, meta: dict, columns: Dict[str, List[int]], strings: Dict[str, List[str]],
         blobs: List[bytes], unsigned=()) -> bool:
    """Write atomically; False (and no file) when the directory is not writable."""
    arrays = {}
    for name, col in columns.items():
        arrays["i:" + name] = (np.asarray(col, dtype=np.uint64) if name in unsigned else _ints(col))
    counts = {}
    for name, col in strings.items():
        arrays["s:" + name] = _strings(col)
        counts[name] = len(col)
    offs = np.zeros(len(blobs) + 1, dtype=np.int64)
    if blobs:
        offs[1:] = np.cumsum([len(b) for b in blobs])
    arrays["b:data"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    arrays["b:offsets"] = offs
    header = dict(meta, format=FORMAT_VERSION, code=code_digest(), string_counts=counts, unsigned=list(unsigned))
    arrays["meta"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _prune(path)
        return True
    except OSError:
        return False


def load(path: str) -> Optional[Tuple[dict, Dict[str, list], Dict[str, List[str]], List[bytes]]]:
    """(meta, int columns as lists, string columns, blobs), or None for a miss or a bad file."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if meta.get("format") != FORMAT_VERSION or meta.get("code") != code_digest():
                return None
            cols: Dict[str, list] = {}
            strs: Dict[str, List[str]] = {}
            data = offs = None
            for name in z.files:
                kind, _, col = name.partition(":")
                if kind == "i":
                    cols[col] = z[name].tolist()
                elif kind == "s":
                    n = meta["string_counts"].get(col, 0)
                    strs[col] = bytes(z[name]).decode("utf-8", "surrogatepass").split("\0") if n else []
                    if len(strs[col]) != n:
                        return None
                elif name == "b:data":
                    data = bytes(z[name])
                elif name == "b:offsets":
                    offs = z[name].tolist()
            if data is None or offs is None:
                return None
            blobs = [data[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]
            return meta, cols, strs, blobs
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError, TypeError):
        return None


def _prune(path: str) -> None:
    """Remove older generations (other format versions or code digests) of the same entry."""
    d, base = os.path.split(path)
    stem = base.split(".v", 1)[0] + ".v"
    try:
        for name in os.listdir(d):
            if name.startswith(stem) and name.endswith(".npz") and name != base:
                os.unlink(os.path.join(d, name))
    except OSError:
        pass
