"""A power cut can leave numba's cache files empty, short or zeroed: numba then fails on the
kernel's first call, and ``rtcore.jitcache.prune`` must find and remove exactly the damaged
files so the next call compiles again. Real numba, real cache files, fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rtcore.jitcache import JIT_MODULES, STALE_TMP_S, cache_dirs, prune

KERNELS = textwrap.dedent("""
    import numba

    @numba.njit(cache=True)
    def twice(x):
        return 2 * x

    @numba.njit(cache=True)
    def plus_one(x):
        return x + 1
""")


def call(src: Path) -> subprocess.CompletedProcess[str]:
    """Both kernels called in a fresh interpreter (so the cache, not memory, is used)."""
    code = "import kernels_under_test as k; print(k.twice(21), k.plus_one(41))"
    return subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(src),
                                                       "NUMBA_CACHE_DIR": str(src / "cache")})


@pytest.fixture
def cached(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "kernels_under_test.py").write_text(KERNELS)
    first = call(tmp_path)
    assert first.stdout.split() == ["42", "42"], first.stderr
    (cache,) = {p.parent for p in (tmp_path / "cache").rglob("*.nbi")}
    return tmp_path, cache


def test_an_intact_cache_is_left_alone(cached: tuple[Path, Path]) -> None:
    _src, cache = cached
    before = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len([p for p in before if p.suffix == ".nbi"]) == 2
    assert prune([cache]) == []
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == before


@pytest.mark.parametrize("damage", ["empty", "short", "zeros"])
def test_a_damaged_index_stops_numba_and_prune_removes_just_that_kernels_files(
        cached: tuple[Path, Path], damage: str) -> None:
    src, cache = cached
    (index,) = cache.glob("*twice*.nbi")
    whole = index.read_bytes()
    index.write_bytes({"empty": b"", "short": whole[: len(whole) // 2],
                       "zeros": bytes(len(whole))}[damage])
    # what the engine met on the pedal: numba's loader raises on the first call
    broken = call(src)
    assert broken.returncode != 0
    assert "Error" in broken.stderr.splitlines()[-1], broken.stderr
    other = sorted(p.name for p in cache.glob("*plus_one*"))
    removed = prune([cache])
    assert len(removed) == 1 and index.name in removed[0], removed
    assert not list(cache.glob("*twice*"))  # the index and its data file
    assert sorted(p.name for p in cache.glob("*plus_one*")) == other
    healed = call(src)
    assert healed.stdout.split() == ["42", "42"], healed.stderr
    assert index.exists() and prune([cache]) == []  # written again, whole


def test_a_damaged_data_file_and_leftover_temporaries_are_removed(
        cached: tuple[Path, Path]) -> None:
    src, cache = cached
    (data,) = cache.glob("*plus_one*.nbc")
    data.write_bytes(data.read_bytes()[:-7])
    leftover = cache / (data.name + ".tmp.0123456789abcdef")
    leftover.write_bytes(b"\x80")
    old = time.time() - 2 * STALE_TMP_S
    os.utime(leftover, (old, old))
    # a temporary file as fresh as another engine's write in progress stays
    writing = cache / (data.name + ".tmp.fedcba9876543210")
    writing.write_bytes(b"\x80")
    removed = prune([cache])
    assert len(removed) == 2, removed
    assert any("interrupted write" in line and leftover.name in line for line in removed)
    assert any(data.name in line for line in removed)
    assert not leftover.exists() and writing.exists()
    writing.unlink()
    assert not list(cache.glob("*plus_one*"))
    assert len(list(cache.glob("*twice*"))) == 2
    assert call(src).stdout.split() == ["42", "42"]


def test_the_engines_kernel_caches_are_found() -> None:
    import rtcore.kernels

    dirs = cache_dirs()
    cache = rtcore.kernels.mix_rows._cache  # type: ignore[attr-defined]
    assert Path(cache._cache_path) in dirs
    assert len(JIT_MODULES) == 4 and dirs
    assert prune([Path("/nonexistent/ouro")]) == []
