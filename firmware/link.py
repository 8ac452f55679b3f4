"""The pedal's line to the engine: OSC over UDP, status pushes, acknowledged commands.

The link subscribes to the engine's status (``/ouro/subscribe``) and keeps the latest
document. When no status has come for ``timeout_s`` the engine counts as unreachable (it
crashed, restarts, or was never started); the link then subscribes again every
``retry_s`` until pushes come back, so the pedal reconnects by itself, whatever port the
engine comes back on if ``port_file`` names the engine's ``engine.json``.

Commands go out at once from the caller's thread (a footswitch callback) followed by
``/ouro/ack <token>``; the engine answers the token once its audio thread has taken the
command, which :meth:`EngineLink.wait_ack` waits for (the benchmark's end point).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pythonosc.osc_message import OscMessage

from rtcore.client import osc_message

__all__ = ["EngineLink", "engine_address"]

DEFAULT_RATE_HZ = 30


def engine_address(spec: str | None, data_dir: Path | None) -> tuple[str, int, Path | None]:
    """``host:port`` from ``spec``; else the engine's ``engine.json`` in ``data_dir`` (read
    again on every reconnect, since the port may change); else 127.0.0.1:9951."""
    if spec:
        host, sep, port = spec.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--engine wants host:port (e.g. 127.0.0.1:9951), got {spec!r}")
        return host or "127.0.0.1", int(port), None
    info = data_dir / "engine.json" if data_dir is not None else None
    found = _read_port_file(info) if info is not None else None
    where = found or ("127.0.0.1", 9951)
    return where[0], where[1], info


def _read_port_file(path: Path) -> tuple[str, int] | None:
    try:
        doc = json.loads(path.read_text())
        host = str(doc.get("osc_host") or "127.0.0.1")
        port = int(doc["osc_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ("127.0.0.1" if host in ("0.0.0.0", "") else host), port


class EngineLink:
    """Status in, commands out. Thread-safe: commands may come from any thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9951, *,
                 rate_hz: int = DEFAULT_RATE_HZ, timeout_s: float = 1.0, retry_s: float = 0.5,
                 port_file: Path | None = None,
                 on_error: Callable[[str], None] | None = None):
        self.address = (host, port)
        self.rate_hz = rate_hz
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.port_file = port_file
        self.on_error = on_error
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1" if host.startswith("127.") else "", 0))
        self.status: dict[str, Any] | None = None
        self.status_at = 0.0  # monotonic time of the latest status
        self.statuses = 0
        self.reconnects = 0  # times the engine came back after being unreachable
        self.errors: deque[str] = deque(maxlen=32)
        self.send_errors = 0
        self._token = 0
        self._acked: dict[int, float] = {}  # token -> when its /ouro/ack came
        self._ack_cv = threading.Condition()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._was_reachable = False
        self._thread = threading.Thread(target=self._run, name="ouro-pedal-link", daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> EngineLink:
        self._subscribe()
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._send("/ouro/unsubscribe")
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> EngineLink:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def reachable(self) -> bool:
        return self.status is not None and time.monotonic() - self.status_at < self.timeout_s

    def wait_reachable(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.reachable:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # ------------------------------------------------------------------ commands

    def command(self, name: str, *args: Any, ack: bool = True) -> int:
        """Send ``/ouro/<name> args`` now; returns the token of the ``/ouro/ack`` sent
        after it (0 without one)."""
        self._send(f"/ouro/{name}", *args)
        if not ack:
            return 0
        with self._ack_cv:
            self._token = self._token % 0x7FFFFFFF + 1
            token = self._token
        self._send("/ouro/ack", token)
        return token

    def wait_ack(self, token: int, timeout_s: float = 1.0) -> float | None:
        """When the engine acknowledged ``token`` (monotonic time), or None on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._ack_cv:
            while token not in self._acked:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._ack_cv.wait(left)
            return self._acked.pop(token)

    def _send(self, address: str, *args: Any) -> None:
        try:
            with self._send_lock:
                self.sock.sendto(osc_message(address, *args), self.address)
        except OSError:
            self.send_errors += 1  # unreachable shows in the status age, not here

    def _subscribe(self) -> None:
        if self.port_file is not None:
            found = _read_port_file(self.port_file)
            if found is not None:
                self.address = found
        self._send("/ouro/subscribe", self.rate_hz)

    # ------------------------------------------------------------------ receiving

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        next_retry = time.monotonic() + self.retry_s
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                data = b""
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)  # e.g. ECONNREFUSED from an earlier send: not fatal
                data = b""
            now = time.monotonic()
            if data:
                self._handle(data, now)
            if not self.reachable:
                self._was_reachable = False
                if now >= next_retry:
                    next_retry = now + self.retry_s
                    self._subscribe()

    def _handle(self, data: bytes, now: float) -> None:
        try:
            msg = OscMessage(data)
        except Exception:  # a garbled datagram: ignore it, the next push will come
            return
        if msg.address == "/ouro/status" and msg.params:
            try:
                doc = json.loads(msg.params[0])
            except (TypeError, ValueError):
                return
            if isinstance(doc, dict):
                self.status = doc
                self.status_at = now
                self.statuses += 1
                if not self._was_reachable:
                    self._was_reachable = True
                    if self.statuses > 1:
                        self.reconnects += 1
        elif msg.address == "/ouro/ack" and msg.params:
            with self._ack_cv:
                self._acked[int(msg.params[0])] = now
                if len(self._acked) > 256:  # nobody waits for the old ones
                    for old in sorted(self._acked)[:128]:
                        del self._acked[old]
                self._ack_cv.notify_all()
        elif msg.address == "/ouro/error" and msg.params:
            text = str(msg.params[0])
            self.errors.append(text)
            if self.on_error is not None:
                self.on_error(text)
