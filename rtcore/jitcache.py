"""numba's on-disk cache of the engine's compiled kernels, checked before the engine uses it.

numba writes a cache file to a temporary name and renames it, without fsync. After a power
cut the file can be empty, cut short or full of zeros, and numba does not catch what its
loader then raises (``EOFError``, ``UnpicklingError``): the first call of a kernel fails,
and with it the engine. ``prune`` walks every cache file of our kernels as a pickle opcode
stream (nothing is unpickled, nothing runs) and removes each damaged group, index and data
files together, so numba compiles those kernels again and writes a fresh cache.
"""

from __future__ import annotations

import importlib
import io
import pickletools
import time
from pathlib import Path

# a temporary cache file older than this is left from an interrupted write, not in progress
STALE_TMP_S = 3600.0
# the modules holding the engine's numba kernels (cache=True)
JIT_MODULES = ("rtcore.kernels", "rtcore.sync", "rtcore.jackio", "rtcore.recorder")


def cache_dirs(modules: tuple[str, ...] = JIT_MODULES) -> set[Path]:
    """Where numba keeps (or would keep) the cache of these modules' kernels."""
    from numba.core.dispatcher import Dispatcher

    dirs = set()
    for name in modules:
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, Dispatcher):
                path = getattr(getattr(value, "_cache", None), "_cache_path", None)
                if path:
                    dirs.add(Path(path))
    return dirs


def _check_pickles(path: Path, count: int) -> None:
    """Raise ValueError unless ``path`` is exactly ``count`` whole pickles."""
    stream = io.BytesIO(path.read_bytes())
    for _ in range(count):
        for _op in pickletools.genops(stream):
            pass
    if stream.read(1):
        raise ValueError("bytes after the last pickle")


def prune(dirs: set[Path] | list[Path]) -> list[str]:
    """Remove damaged numba cache files (and leftovers of interrupted writes) in ``dirs``;
    returns one line per removal, naming the file and what was wrong with it."""
    removed: list[str] = []
    for directory in sorted(dirs):
        if not directory.is_dir():
            continue
        for leftover in sorted(directory.glob("*.nb[ic].tmp.*")):
            # another process may be writing this one right now: only old ones are litter
            try:
                age = time.time() - leftover.stat().st_mtime
            except FileNotFoundError:
                continue  # renamed into place meanwhile
            if age > STALE_TMP_S:
                leftover.unlink(missing_ok=True)
                removed.append(f"{leftover}: an interrupted write, removed")
        for index in sorted(directory.glob("*.nbi")):
            base = index.name.removesuffix(".nbi")
            group = [index, *sorted(directory.glob(f"{base}.*.nbc"))]
            problem = None
            for path in group:
                try:
                    # an index holds two pickles (numba's version, then the overloads)
                    _check_pickles(path, 2 if path is index else 1)
                except (OSError, ValueError) as exc:
                    problem = f"{path.name}: {exc}"
                    break
            if problem is not None:
                for path in group:
                    path.unlink(missing_ok=True)
                removed.append(f"{directory}: damaged compiled-kernel cache removed "
                               f"({problem}); those kernels compile again")
    return removed


def prune_engine_cache() -> list[str]:
    """``prune`` over the engine's own kernel caches."""
    return prune(cache_dirs())
