"""Talking to a running engine: an OSC client, and starting ``ouro engine`` as a process.

What the pedal firmware, ``ouro start``'s tour, ``ouro bench live`` and the integration
tests use, so they all speak to the engine the way any OSC controller would.

>>> EngineClient("127.0.0.1", 9).address
('127.0.0.1', 9)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from rtcore.errors import OuroError
from rtcore.jackd import terminate


class EngineUnreachable(OuroError, TimeoutError):
    """The engine did not answer in time."""


def osc_message(address: str, *args: Any) -> bytes:
    """One OSC message; ints, floats and strings keep their OSC types."""
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


class EngineClient:
    """Sends ``/ouro/...`` messages from one UDP socket and reads the replies to it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9951):
        self.address = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1" if host.startswith("127.") else "", 0))
        self.errors: list[str] = []

    def send(self, name: str, *args: Any) -> None:
        """``send("record", 0, 1)`` sends ``/ouro/record 0 1``."""
        self.sock.sendto(osc_message(f"/ouro/{name}", *args), self.address)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.address)

    def receive(self, timeout_s: float = 2.0) -> OscMessage | None:
        """The next reply, or None when nothing came in time. ``/ouro/error`` replies
        are also kept in :attr:`errors`."""
        self.sock.settimeout(timeout_s)
        try:
            data, _ = self.sock.recvfrom(65536)
        except TimeoutError:
            return None
        msg = OscMessage(data)
        if msg.address == "/ouro/error":
            self.errors.append(str(msg.params[0]) if msg.params else "")
        return msg

    def request(self, name: str, *args: Any, reply: str | None = None,
                timeout_s: float = 2.0) -> OscMessage:
        """Send and wait for the reply at ``reply`` (default: the same address); other
        replies that arrive meanwhile (pushed status, errors) are skipped."""
        want = reply or f"/ouro/{name}"
        self.send(name, *args)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is not None and msg.address == want:
                return msg
        raise EngineUnreachable(f"no {want} from the engine at {self.address[0]}:"
                                f"{self.address[1]} within {timeout_s:g} s")

    def status(self, timeout_s: float = 2.0) -> dict[str, Any]:
        doc = json.loads(self.request("status", timeout_s=timeout_s).params[0])
        assert isinstance(doc, dict)
        return doc

    def command(self, name: str, *args: Any, timeout_s: float = 0.3) -> str | None:
        """Send a command and wait briefly for an error; returns the error text or None.

        Commands are not acknowledged (OSC controllers don't expect it), so a ping after the
        command marks the end of anything the engine answered to it.
        """
        self.send(name, *args)
        self.send("ping")
        deadline = time.monotonic() + timeout_s + 1.7
        error = None
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is None:
                break
            if msg.address == "/ouro/error" and error is None:
                error = str(msg.params[0])
            elif msg.address == "/ouro/pong":
                return error
        return error

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class EngineProcess:
    """``ouro engine`` as a child process, with its OSC port read from its data directory.

    It runs in a session of its own, so a Ctrl-C in the terminal reaches only the parent,
    which stops the engine with SIGTERM (the engine then saves its session).
    """

    def __init__(self, server: str, data_dir: Path, *, name: str = "ouroboros",
                 connect: bool = False, extra: list[str] | None = None,
                 log_path: Path | None = None):
        self.server = server
        self.data_dir = data_dir
        self.name = name
        self.connect = connect
        self.extra = extra or []
        self.log_path = log_path or data_dir / "engine.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.osc_port = 0

    def start(self, timeout_s: float = 20.0) -> EngineProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info = self.data_dir / "engine.json"
        info.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "rtcore.cli", "engine", "--server", self.server,
               "--name", self.name, "--osc-port", "0", "--data-dir", str(self.data_dir),
               *([] if self.connect else ["--no-connect"]), *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OuroError(f"ouro engine exited with code {self.proc.returncode} while "
                                f"starting: {self.log_tail()}")
            try:
                doc = json.loads(info.read_text())
                if doc.get("pid") == self.proc.pid:
                    self.osc_port = int(doc["osc_port"])
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise OuroError(f"ouro engine did not start within {timeout_s:g} s: {self.log_tail()}")

    def client(self) -> EngineClient:
        return EngineClient("127.0.0.1", self.osc_port)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (the engine saves its session and exits), SIGKILL if it hangs."""
        proc = self.proc
        if proc is None:
            return None
        self.proc = None
        return terminate(proc, timeout_s)

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
