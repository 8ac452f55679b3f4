"""Starting and stopping a JACK server (``jackd``) of our own.

Tests, ``ouro bench live`` and ``ouro start`` each run a private server under a unique name,
so they never touch a server somebody else runs, and stop exactly the process they started.
This module runs the ``jackd`` program; it does not import :mod:`jack` (only
:mod:`rtcore.host` does).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from rtcore.errors import OuroError

_counter = itertools.count()


def terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM a child we started, SIGKILL it if it has not exited after ``timeout_s``;
    returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
    return proc.returncode


class JackServerError(OuroError, RuntimeError):
    """A JACK server could not be started (or is missing)."""


def unique_server_name(prefix: str = "ouro") -> str:
    """A server name no other process of this machine will pick: prefix, PID, counter."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def sound_card_present(cards: Path = Path("/proc/asound/cards")) -> bool:
    """True when ALSA lists at least one sound card."""
    try:
        text = cards.read_text()
    except OSError:
        return False
    return any(line[:3].strip().isdigit() for line in text.splitlines())


def jackd_command(name: str, driver: str = "dummy", sample_rate: int = 48000,
                  period_frames: int = 128, realtime: bool = True,
                  device: str = "hw:0") -> list[str]:
    """The ``jackd`` argument list for a server called ``name``.

    The dummy driver sleeps ``-w`` microseconds per period; it must match the period, or the
    server runs faster or slower than real time.

    >>> jackd_command("t", period_frames=64)[-2:]
    ['-w', '1333']
    """
    exe = shutil.which("jackd")
    if exe is None:
        raise JackServerError("jackd not found: install the jackd2 package "
                              "(apt-get install jackd2)")
    cmd = [exe, "-n", name, "-R" if realtime else "-r", "-d", driver,
           "-r", str(sample_rate), "-p", str(period_frames)]
    if driver == "dummy":
        cmd += ["-w", str(period_frames * 1_000_000 // sample_rate)]
    elif driver == "alsa":
        cmd += ["-d", device, "-n", "2"]
    else:
        raise JackServerError(f"unsupported JACK driver {driver!r} (use 'dummy' or 'alsa')")
    return cmd


class JackServer:
    """One ``jackd`` process that this program started and will stop.

    >>> srv = JackServer(unique_server_name("doc"), period_frames=256)
    >>> srv.running
    False
    """

    def __init__(self, name: str | None = None, *, driver: str = "dummy",
                 sample_rate: int = 48000, period_frames: int = 128, realtime: bool = True,
                 device: str = "hw:0", log_path: Path | None = None):
        self.name = name or unique_server_name()
        self.driver = driver
        self.sample_rate = sample_rate
        self.period_frames = period_frames
        self.realtime = realtime
        self.device = device
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout_s: float = 10.0) -> JackServer:
        """Start ``jackd`` and wait until a client can connect to it."""
        from rtcore.host import server_reachable

        if self.running:
            return self
        cmd = jackd_command(self.name, self.driver, self.sample_rate, self.period_frames,
                            self.realtime, self.device)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                where = f"; see {self.log_path}" if self.log_path else ""
                raise JackServerError(f"jackd for server {self.name!r} exited with code "
                                      f"{code} while starting ({' '.join(cmd)}){where}")
            if server_reachable(self.name):
                return self
            time.sleep(0.05)
        self.stop()
        raise JackServerError(f"jackd for server {self.name!r} did not answer within "
                              f"{timeout_s:g} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server this object started (SIGTERM, then SIGKILL); idempotent."""
        if self.proc is not None:
            terminate(self.proc, timeout_s)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash (no goodbye to its clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5.0)
        self.proc = None

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
