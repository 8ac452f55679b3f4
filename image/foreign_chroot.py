#!/usr/bin/env python3
"""image/foreign_chroot.py ROOT COMMAND [ARG...]: `chroot` for a root file system of another CPU
architecture, on a machine without binfmt_misc.

image/build puts this first on PATH under the name ``chroot`` (mmdebstrap and
image/foreign-apt call ``chroot`` from PATH). It runs COMMAND inside ROOT with proot, which
follows every exec and starts the target's binaries with qemu-user (``OURO_QEMU``, e.g.
qemu-aarch64-static).

Debian's proot (5.1) predates two system calls that bookworm's programs use, statx and
faccessat2: it passes their paths through untranslated, so ``stat`` looks at the build
machine's files and ``sh`` finds no script to run. A seccomp filter, inherited by proot and
everything it starts, answers those two calls with ENOSYS; qemu-user and glibc then fall back
to fstatat and faccessat, which proot does translate.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

AUDIT_ARCH_X86_64 = 0xC000003E
# x86_64 system call numbers: statx, faccessat2
ENOSYS_CALLS = (332, 439)
ENOSYS = 38

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def enosys_filter(calls: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """A classic BPF program: these x86_64 calls fail with ENOSYS, everything else runs."""
    n = len(calls)
    prog = [(BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
            (BPF_JEQ_K, 0, n + 1, AUDIT_ARCH_X86_64),  # another ABI: allow
            (BPF_LD_W_ABS, 0, 0, 0)]  # seccomp_data.nr
    for i, nr in enumerate(calls):
        prog.append((BPF_JEQ_K, n - i, 0, nr))  # match: jump to the ERRNO return
    prog += [(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
             (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS)]
    return prog


def install(prog: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    fprog = SockFprog(len(prog), code)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(
            PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot install the seccomp filter: {os.strerror(err)}")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: foreign_chroot.py ROOT COMMAND [ARG...]", file=sys.stderr)
        return 2
    root, command = argv[0], argv[1:]
    qemu = os.environ.get("OURO_QEMU")
    if not qemu:
        print("foreign_chroot.py: set OURO_QEMU (e.g. qemu-aarch64-static)", file=sys.stderr)
        return 2
    if os.uname().machine == "x86_64":
        install(enosys_filter(ENOSYS_CALLS))
    os.execvp("proot", ["proot", "-0", "-q", qemu, "-r", root, "-w", "/", "-b", "/dev",
                        "-b", "/proc", "-b", "/sys", *command])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
