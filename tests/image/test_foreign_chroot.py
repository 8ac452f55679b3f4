"""image/foreign_chroot.py's seccomp filter, for real in a child process: statx and
faccessat2 answer ENOSYS (so qemu-user and glibc fall back to calls proot translates), and
everything else, stat and access included, still works."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "image" / "foreign_chroot.py"

CHILD = f"""
import ctypes, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("fc", {str(SCRIPT)!r})
fc = importlib.util.module_from_spec(spec); spec.loader.exec_module(fc)
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(512)
def statx():
    r = libc.syscall(332, -100, b"/", 0, 0x7ff, buf)
    return 0 if r == 0 else ctypes.get_errno()
def faccessat2():
    r = libc.syscall(439, -100, b"/", 0, 0)
    return 0 if r == 0 else ctypes.get_errno()
before = (statx(), faccessat2())
fc.install(fc.enosys_filter(fc.ENOSYS_CALLS))
after = (statx(), faccessat2())
print(*before, *after, os.stat("/").st_ino > 0, os.access("/", os.R_OK))
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the filter is for x86_64 hosts")
def test_the_filter_turns_statx_and_faccessat2_into_enosys_and_nothing_else() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True).stdout.split()
    # before: both calls work; after: ENOSYS (38); stat and access still work
    assert out == ["0", "0", "38", "38", "True", "True"], out


def test_without_qemu_named_it_refuses_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OURO_QEMU"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "/nonexistent", "true"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "OURO_QEMU" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


def run_filter(prog: list[tuple[int, int, int, int]], arch: int, nr: int) -> int:
    """The classic BPF program, interpreted for one call (only the opcodes it uses)."""
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == 0x20:  # ld word at k: 0 is nr, 4 is arch
            acc = {0: nr, 4: arch}[k]
        elif code == 0x15:  # jeq k
            pc += jt if acc == k else jf
        elif code == 0x06:  # ret k
            return k
        pc += 1


def test_the_filter_program_decides_each_call() -> None:
    spec = importlib.util.spec_from_file_location("fc", SCRIPT)
    assert spec and spec.loader
    fc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fc)
    prog = fc.enosys_filter((332, 439, 1))
    enosys, allow = fc.SECCOMP_RET_ERRNO | fc.ENOSYS, fc.SECCOMP_RET_ALLOW
    x86_64, i386 = fc.AUDIT_ARCH_X86_64, 0x40000003
    assert [run_filter(prog, x86_64, nr) for nr in (332, 439, 1, 0, 257, 438)] == \
        [enosys, enosys, enosys, allow, allow, allow]
    assert run_filter(prog, i386, 332) == allow  # another ABI's numbers mean other calls
