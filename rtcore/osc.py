"""The engine's OSC control server: the one command API of the engine process.

The pedal UI, tablets and OSC controllers send ``/ouro/<command> args...`` over UDP; every
command of :data:`rtcore.commands.VOCABULARY` is reachable, with its arguments in
``Spec.args`` order. Replies (status, pong, errors) go from the server's socket back to the
sender's address. The address space is documented in ``docs/osc.md``.

The server shares its process, and the GIL, with the audio thread, so it keeps out of the
way: it blocks only in the kernel (``select``/``recvfrom`` release the GIL), each packet is
small and bounded work, a token bucket caps the messages handled per second (when it runs
dry the server stops reading and lets the kernel drop the excess), and the status document
is built at most once per :data:`STATUS_CACHE_S` however many clients ask for it.

>>> class Quiet:
...     columns, rows = 5, 5
...     def submit(self, cmd): pass
...     def status_json(self): return "{}"
>>> with OscServer(Quiet(), port=0) as server:
...     server.port > 0
True
"""

from __future__ import annotations

import errno
import logging
import math
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from pythonosc.osc_message import OscMessage
from pythonosc.osc_packet import OscPacket

from rtcore.commands import (
    _VALUE_KIND,  # the vocabulary's own table of value kinds, so signature() never drifts
    LEVEL,
    OPTIONAL_ARGS,
    SOURCE,
    SWITCH,
    VOCABULARY,
    Command,
    parse_args,
)
from rtcore.errors import ConfigError, OuroError

__all__ = [
    "DEFAULT_PORT",
    "MIDI_ADDRESSES",
    "PREFIX",
    "RECORDER_ADDRESSES",
    "SERVER_ADDRESSES",
    "SESSION_ADDRESSES",
    "Controller",
    "CountingController",
    "MidiController",
    "OscError",
    "OscServer",
    "osc_text",
    "signature",
]

log = logging.getLogger(__name__)

PREFIX = "/ouro/"
DEFAULT_PORT = 9951
# Addresses the server answers itself, besides the command vocabulary.
SERVER_ADDRESSES = ("status", "subscribe", "unsubscribe", "ping", "ack")
# MIDI map addresses (answered by the controller's ``midi_request``, see docs/osc.md)
MIDI_ADDRESSES = ("midi/learn", "midi/unlearn", "midi/map", "midi/reset")
# sessions on disk and the session recorder (``session_request``, ``recorder_request``)
SESSION_ADDRESSES = ("session/save", "session/save_as", "session/load", "session/list",
                     "session/delete", "session/new")
RECORDER_ADDRESSES = ("recorder/start", "recorder/stop")
# address group -> (the controller's handler, what a server without one says)
_REQUESTS = {
    "midi": ("midi_request", "this server keeps no MIDI map"),
    "session": ("session_request", "this server keeps no sessions"),
    "recorder": ("recorder_request", "this server has no session recorder"),
}
_GROUPED = MIDI_ADDRESSES + SESSION_ADDRESSES + RECORDER_ADDRESSES

# Commands and controller packets are a few dozen bytes; refusing big packets before
# parsing keeps the worst case per packet small.
MAX_PACKET_BYTES = 8192
MAX_MESSAGES_PER_PACKET = 32
MAX_BUNDLE_DEPTH = 8
# Small enough that a flood queues a few dozen packets in the kernel, not thousands that
# would all be handled (late) once the flood is over.
RCVBUF_BYTES = 64 * 1024
# Largest payload of one UDP datagram over IPv4.
MAX_DATAGRAM_BYTES = 65507
STATUS_CACHE_S = 0.010
SUBSCRIBE_MAX_HZ = 60
# A subscriber whose pushes fail this many times in a row is dropped.
SUBSCRIBER_MAX_FAILURES = 16
ERROR_TEXT_MAX = 1000
STOP_JOIN_S = 0.5
_IDLE_WAIT_S = 1.0  # the wake-up socket interrupts this; it is only a safety net
# /ouro/ack: how often the server looks whether the audio thread has taken the commands
# (only while an acknowledgement is pending), how long it waits, and how many may wait
ACK_POLL_S = 0.0002
ACK_TIMEOUT_S = 1.0
MAX_PENDING_ACKS = 64
_LOG_EVERY_S = 10.0  # unexpected exceptions: log at most one traceback per this

# the type tags python-osc decodes, and the argument bytes each fixed-size one takes
_FIXED_TAG_BYTES = {"i": 4, "f": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8,
                    "T": 0, "F": 0, "N": 0, "[": 0, "]": 0}
_BUNDLE_HEAD = b"#bundle\x00"

assert not set(SERVER_ADDRESSES) & set(VOCABULARY), "a command shadows a server address"


class OscError(OuroError, OSError):
    """The OSC server could not be set up, e.g. its port could not be bound."""


class Controller(Protocol):
    """What the server drives; the live engine implements it."""

    columns: int
    rows: int

    def submit(self, cmd: Command) -> None:
        """Queue a command; raise :class:`~rtcore.errors.OuroError` with a message if refused."""
        ...

    def status_json(self) -> str:
        """The status document as a JSON string."""
        ...


class CountingController(Controller, Protocol):
    """A controller that counts its commands, which ``/ouro/ack`` needs (the live engine
    does)."""

    def command_marks(self) -> tuple[int, int]:
        """(commands queued so far, commands the audio thread has taken so far)."""
        ...


class MidiController(Controller, Protocol):
    """A controller that also keeps a MIDI map (the live engine does)."""

    def midi_request(self, name: str, args: list[Any], reply: Any) -> bytes:
        """Handle ``/ouro/midi/<name>``; returns a datagram to answer with, or b"".
        ``reply(dgram)`` sends one later (a learned binding arrives with the MIDI)."""
        ...


def signature(name: str) -> str:
    """The OSC arguments of a command, as ``docs/osc.md`` lists them.

    >>> signature("volume")
    'column i, row i, value f'
    >>> signature("monitor")
    'value i, [gain f]'
    >>> signature("tap")
    '-'
    """
    parts = []
    for arg in VOCABULARY[name].args:
        if arg in ("column", "row"):
            tag = "i"
        elif arg == "gain":
            tag = "f"
        else:
            kind = _VALUE_KIND.get(name, LEVEL)
            tag = "i" if kind == SWITCH else "s" if kind == SOURCE else "f"
        part = f"{arg} {tag}"
        parts.append(f"[{part}]" if arg in OPTIONAL_ARGS else part)
    return ", ".join(parts) or "-"


@dataclass(slots=True)
class _Subscriber:
    period_s: float
    due: float
    failures: int = 0


class OscServer:
    """A UDP OSC server driving ``controller``; bound on construction, served by :meth:`start`.

    ``max_rate`` caps the OSC messages handled per second (bursts of about a tenth of it);
    ``max_subscribers`` caps the addresses that receive status pushes.
    Raises :class:`OscError` when ``host:port`` cannot be bound.
    """

    def __init__(self, controller: Controller, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, *, max_rate: float = 2000.0,
                 max_subscribers: int = 16) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"OSC port must be an integer 0..65535, got {port!r}")
        if (isinstance(max_rate, bool) or not isinstance(max_rate, int | float)
                or not math.isfinite(max_rate) or max_rate <= 0):
            raise ConfigError(f"max_rate must be a positive number of messages/s, "
                              f"got {max_rate!r}")
        if (isinstance(max_subscribers, bool) or not isinstance(max_subscribers, int)
                or max_subscribers < 0):
            raise ConfigError(f"max_subscribers must be an integer >= 0, "
                              f"got {max_subscribers!r}")
        self.controller = controller
        self.host = host
        self.max_rate = float(max_rate)
        self.max_subscribers = max_subscribers
        # stop() writes to this pair to wake the loop out of select() at once
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            self._sock = _bind(host, port)
        except OscError:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._closed = False

        # token bucket: one token per OSC message
        self._burst = max(1.0, self.max_rate / 10.0)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._throttled_since = -1.0

        self._subs: dict[Any, _Subscriber] = {}
        # (commands queued when asked, token, sender, give up at) per pending /ouro/ack
        self._acks: deque[tuple[int, int, Any, float]] = deque()
        self._status_dgram = b""
        self._status_at = -math.inf
        self._buf = bytearray(65536)  # any datagram fits, so its real size is known
        self._last_log = -math.inf
        self._counts: dict[str, int | float] = dict.fromkeys(
            ("received", "messages", "handled", "errors", "throttled", "throttled_s",
             "send_errors", "recv_errors", "internal_errors", "pushes", "status_builds"), 0)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Serve in a daemon thread named ``ouro-osc``."""
        if self._closed:
            raise RuntimeError("the OSC server was stopped; make a new one")
        if self._thread is not None:
            raise RuntimeError("the OSC server is already running")
        self._thread = threading.Thread(target=self._run, name="ouro-osc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, join the thread and close the socket (safe to call twice)."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # closed already, or its buffer is full of earlier wake-ups: either is fine
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_JOIN_S)
            if thread.is_alive():
                log.warning("the OSC thread did not stop within %.1f s", STOP_JOIN_S)
        if not self._closed:
            self._closed = True
            for s in (self._sock, self._wake_r, self._wake_w):
                s.close()

    def __enter__(self) -> OscServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the server thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, int | float]:
        """Counters, cheap to read from any thread.

        ``received`` packets, ``messages`` in them, ``handled`` (answered or accepted),
        ``errors`` (answered with ``/ouro/error``), ``throttled`` (times reading paused for
        the rate limit) and ``throttled_s`` (time paused), ``send_errors``, ``recv_errors``,
        ``internal_errors`` (unexpected exceptions), ``pushes`` (subscription updates sent),
        ``status_builds`` and ``subscribers``.
        """
        out = dict(self._counts)  # one C-level copy: consistent without a lock
        since = self._throttled_since
        if since >= 0:
            out["throttled_s"] += time.monotonic() - since
        out["subscribers"] = len(self._subs)
        return out

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        everything = selectors.DefaultSelector()
        everything.register(self._sock, selectors.EVENT_READ)
        everything.register(self._wake_r, selectors.EVENT_READ)
        wake_only = selectors.DefaultSelector()
        wake_only.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping:
                try:
                    self._step(everything, wake_only)
                except Exception:  # the loop outlives any bug in a handler or here
                    if self._stopping:  # stop() closed the sockets under a late loop
                        break
                    self._unexpected("in the OSC loop")
                    # a fault that repeats every round must not spin on the GIL
                    time.sleep(0.01)
        finally:
            everything.close()
            wake_only.close()

    def _step(self, everything: selectors.BaseSelector,
              wake_only: selectors.BaseSelector) -> None:
        now = time.monotonic()
        next_push = self._push_due(now)
        self._refill(now)
        counts = self._counts
        if self._throttled_since >= 0:
            # paused: wait until a good part of the burst is back, so that a flood costs a
            # few wake-ups per second and the kernel drops what does not fit its buffer
            target = min(self._burst, max(1.0, self._burst / 2))
            if self._tokens < target:
                pause = (target - self._tokens) / self.max_rate
                wake_only.select(max(0.0, min(pause, next_push - now)))
                return
            counts["throttled_s"] += now - self._throttled_since
            self._throttled_since = -1.0
        if self._tokens < 1.0:
            counts["throttled"] += 1
            self._throttled_since = now
            return
        timeout = max(0.0, min(_IDLE_WAIT_S, next_push - now))
        if self._acks:
            self._settle_acks(now)
            if self._acks:
                timeout = min(timeout, ACK_POLL_S)
        for key, _ in everything.select(timeout):
            if key.fileobj is self._sock:
                self._receive()

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self.max_rate)
        self._refilled = now

    def _receive(self) -> None:
        """Read and handle the packets waiting, while tokens last (a few per round)."""
        for _ in range(16):  # then go back to the loop for due pushes
            if self._stopping or self._tokens < 1.0:
                return
            try:
                size, sender = self._sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._counts["recv_errors"] += 1
                return
            self._counts["received"] += 1
            self._packet(bytes(memoryview(self._buf)[:size]), sender)

    # ------------------------------------------------------------------ packets

    def _packet(self, data: bytes, sender: Any) -> None:
        size = len(data)
        if size > MAX_PACKET_BYTES:
            self._tokens -= 1
            self._error(sender, f"packet of {size} bytes is too large "
                                f"(at most {MAX_PACKET_BYTES}); nothing handled")
            return
        count, problem = _survey(data)
        self._tokens -= max(1, count)
        if problem:
            self._error(sender, problem)
            return
        try:
            messages = [timed.message for timed in OscPacket(data).messages]
        except Exception as exc:  # python-osc raises more than its ParseError
            self._error(sender, f"malformed OSC packet ({size} bytes): {_reason(exc)}")
            return
        self._counts["messages"] += len(messages)
        for i, msg in enumerate(messages):
            if i:
                # let a waiting audio thread have the GIL between the messages of a bundle
                # instead of after up to 5 ms (the interpreter's switch interval)
                time.sleep(0)
            self._message(msg, sender)

    def _message(self, msg: OscMessage, sender: Any) -> None:
        address = msg.address
        try:
            if not address.startswith(PREFIX):
                self._error(sender, f"address {_short(address)!r} is outside {PREFIX}: "
                                    f"this server answers {PREFIX}<command> only")
                return
            name = address[len(PREFIX):]
            args = msg.params
            ctl = self.controller
            reply = b""
            if name in VOCABULARY:
                cmd = parse_args(name, args, columns=ctl.columns, rows=ctl.rows)
                ctl.submit(cmd)
            elif name == "status":
                self._no_args(name, args)
                reply = self._status()
            elif name == "ping":
                self._no_args(name, args)
                reply = _PONG
            elif name == "ack":
                reply = self._ack(sender, args)
            elif name == "subscribe":
                self._subscribe(sender, args)
            elif name == "unsubscribe":
                self._no_args(name, args)
                self._subs.pop(sender, None)
            elif name in _GROUPED:
                group, _, op = name.partition("/")
                attr, missing = _REQUESTS[group]
                handler = getattr(ctl, attr, None)
                if handler is None:
                    raise _Refused(f"{name}: {missing}")
                reply = handler(op, list(args),
                                lambda dgram, to=sender: self._send(to, dgram, reply=True))
            else:
                self._error(sender, f"unknown address {_short(address)!r}: commands are "
                                    f"{PREFIX}{{{','.join(VOCABULARY)}}}; also "
                                    f"{PREFIX}{{{','.join(SERVER_ADDRESSES + _GROUPED)}}}")
                return
            # counted before the reply goes out, so whoever got the reply sees the count
            self._counts["handled"] += 1
            if reply:
                self._send(sender, reply, reply=True)
        except OuroError as exc:
            self._error(sender, str(exc))
        except Exception as exc:
            self._unexpected(f"handling {_short(address)}")
            self._error(sender, f"internal error handling {_short(address)}: "
                                f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _no_args(name: str, args: list[Any]) -> None:
        if args:
            raise _Refused(f"{name}: takes no arguments, got {len(args)}")

    def _ack(self, sender: Any, args: list[Any]) -> bytes:
        """``/ouro/ack token``: answered with ``/ouro/ack token`` once the audio thread has
        taken every command queued before it (at once if it has)."""
        if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int):
            raise _Refused(f"ack: takes one integer token, got {_describe_args(args)}")
        token = args[0]
        if not -(1 << 31) <= token < (1 << 31):
            raise _Refused(f"ack: the token {token} does not fit a 32-bit OSC integer")
        marks = getattr(self.controller, "command_marks", None)
        if marks is None:
            raise _Refused("ack: this server's controller does not count its commands")
        submitted, taken = marks()
        if taken >= submitted:
            return _osc_int("/ouro/ack", token)
        if len(self._acks) >= MAX_PENDING_ACKS:
            raise _Refused(f"ack: {MAX_PENDING_ACKS} acknowledgements are already waiting "
                           f"for the audio thread")
        self._acks.append((submitted, token, sender, time.monotonic() + ACK_TIMEOUT_S))
        return b""

    def _settle_acks(self, now: float) -> None:
        """Answer the pending acknowledgements whose commands the audio thread has taken,
        and give up on the ones it has not taken in time (the audio is not running)."""
        taken = self.controller.command_marks()[1]  # type: ignore[attr-defined]
        acks = self._acks
        while acks:
            target, token, sender, give_up = acks[0]
            if taken >= target:
                self._send(sender, _osc_int("/ouro/ack", token), reply=True)
            elif now >= give_up:
                self._error(sender, f"ack {token}: the audio thread did not take the "
                                    f"commands before it within {ACK_TIMEOUT_S:g} s "
                                    f"(is the audio running?)")
            else:
                return  # queued in order: the later ones wait for this one
            acks.popleft()

    def _subscribe(self, sender: Any, args: list[Any]) -> None:
        if len(args) != 1:
            raise _Refused(f"subscribe: takes rate (Hz, 0..{SUBSCRIBE_MAX_HZ}), "
                           f"got {len(args)} argument(s)")
        rate = args[0]
        if isinstance(rate, bool) or not isinstance(rate, int):
            raise _Refused(f"subscribe: rate must be an integer number of Hz, got {rate!r}")
        if not 0 <= rate <= SUBSCRIBE_MAX_HZ:
            raise _Refused(f"subscribe: rate {rate} Hz out of range 0..{SUBSCRIBE_MAX_HZ} "
                           f"(0 unsubscribes)")
        if rate == 0:
            self._subs.pop(sender, None)
            return
        sub = self._subs.get(sender)
        if sub is None:
            if len(self._subs) >= self.max_subscribers:
                raise _Refused(f"subscribe: already {len(self._subs)} subscribers, the most "
                               f"this server keeps; poll {PREFIX}status instead")
            # due now: the first push answers the subscription at once
            self._subs[sender] = _Subscriber(1.0 / rate, time.monotonic())
        else:
            sub.period_s = 1.0 / rate
            sub.due = min(sub.due, time.monotonic() + sub.period_s)

    # ------------------------------------------------------------------ replies

    def _status(self) -> bytes:
        """The ``/ouro/status`` datagram, rebuilt at most once per STATUS_CACHE_S."""
        now = time.monotonic()
        if now - self._status_at >= STATUS_CACHE_S:
            self._status_at = now
            self._counts["status_builds"] += 1
            try:
                self._status_dgram = _osc("/ouro/status", self.controller.status_json())
            except Exception as exc:
                # cached like a status, so a failing controller is not asked more often
                self._unexpected("building the status")
                self._status_dgram = _osc("/ouro/error", _clip(
                    f"internal error building the status: {type(exc).__name__}: {exc}"))
        return self._status_dgram

    def _push_due(self, now: float) -> float:
        """Send the status to every subscriber that is due; returns when the next one is."""
        if not self._subs:
            return math.inf
        next_due = math.inf
        for addr, sub in list(self._subs.items()):
            if sub.due <= now:
                if self._send(addr, self._status(), reply=True):
                    self._counts["pushes"] += 1
                    sub.failures = 0
                else:
                    sub.failures += 1
                    if sub.failures >= SUBSCRIBER_MAX_FAILURES:
                        del self._subs[addr]
                        continue
                sub.due += sub.period_s
                if sub.due <= now:  # fell behind (a pause): no catching up in a burst
                    sub.due = now + sub.period_s
            next_due = min(next_due, sub.due)
        return next_due

    def _error(self, sender: Any, text: str) -> None:
        self._counts["errors"] += 1
        self._send(sender, _osc("/ouro/error", _clip(text)), reply=False)

    def _send(self, addr: Any, dgram: bytes, *, reply: bool) -> bool:
        """Send without blocking; False (and counted) if it failed. ``reply``: explain a
        datagram too large to send with an error, which does fit."""
        try:
            self._sock.sendto(dgram, addr)
            return True
        except OSError as exc:
            self._counts["send_errors"] += 1
            if reply and exc.errno == errno.EMSGSIZE:
                # the asker would otherwise wait for an answer that never comes
                self._error(addr, f"reply of {len(dgram)} bytes is too large for one UDP "
                                  f"datagram (at most {MAX_DATAGRAM_BYTES})")
            return False

    def _unexpected(self, where: str) -> None:
        self._counts["internal_errors"] += 1
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:  # a flood of one fault stays one log line
            self._last_log = now
            log.exception("unexpected error %s (%d so far)", where,
                          self._counts["internal_errors"])


class _Refused(OuroError, ValueError):
    """A server-level request (status, subscribe...) with wrong arguments."""


def _bind(host: str, port: int) -> socket.socket:
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM)[0]
    except (OSError, UnicodeError) as exc:
        raise OscError(f"cannot bind the OSC server to {where}: {_why(exc)}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.bind(sockaddr)
        # select() says when to read; a non-blocking send drops a reply rather than wait
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OscError(f"cannot bind the OSC server to {where}: {_why(exc)}") from exc
    return sock


def _why(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or (
        type(exc).__name__)


def _osc_string(data: bytes) -> bytes:
    # OSC strings end with a NUL and are padded with NULs to a multiple of 4 bytes
    return data + b"\x00" * (4 - len(data) % 4)


def osc_text(address: str, *texts: str) -> bytes:
    """An OSC message of string arguments, for the controller's replies (whole: a MIDI map
    is longer than an error text may be; a reply too big for a datagram is answered with an
    error by the server's send)."""
    return _osc(address, *texts)


def _osc(address: str, *texts: str) -> bytes:
    """An OSC message of string arguments. Built here rather than with python-osc's builder,
    which parses every message it builds, a byte at a time: for a status document that held
    the interpreter for a millisecond.

    >>> _osc("/ouro/error", "no")
    b'/ouro/error\\x00,s\\x00\\x00no\\x00\\x00'
    """
    parts = [_osc_string(address.encode()), _osc_string(("," + "s" * len(texts)).encode())]
    parts.extend(_osc_string(t.encode()) for t in texts)
    return b"".join(parts)


_PONG = _osc("/ouro/pong")


def _osc_int(address: str, value: int) -> bytes:
    """An OSC message of one 32-bit integer.

    >>> _osc_int("/ouro/ack", 7)
    b'/ouro/ack\\x00\\x00\\x00,i\\x00\\x00\\x00\\x00\\x00\\x07'
    """
    return _osc_string(address.encode()) + b",i\x00\x00" + struct.pack(">i", value)


def _describe_args(args: list[Any]) -> str:
    return f"{len(args)} argument(s)" if len(args) != 1 else f"{args[0]!r}"


def _clip(text: str) -> str:
    # a NUL would end the OSC string early; a huge text would make a huge reply
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 3] + "..."


def _short(address: str) -> str:
    return address if len(address) <= 64 else address[:61] + "..."


def _reason(exc: BaseException) -> str:
    """The innermost message of python-osc's nested parse errors."""
    seen = 0
    while seen < 8:
        seen += 1
        inner = next((a for a in exc.args if isinstance(a, BaseException)), None)
        if inner is None:
            inner = exc.__context__
        if inner is None:
            break
        exc = inner
    if isinstance(exc, UnicodeDecodeError):
        return f"text is not UTF-8 ({exc.reason} at byte {exc.start} of a string)"
    return str(exc) or type(exc).__name__


def _survey(data: bytes) -> tuple[int, str]:
    """Check a packet's framing; returns (messages in it, the problem or "").

    Reads sizes, addresses and type tags and checks that the argument bytes match the
    tags, leaving the decoding to python-osc. python-osc pads a cut-off float with zeros
    (a truncated ``/ouro/volume`` would set 0.0) and only logs unknown type tags, so both
    are refused here.
    """
    size = len(data)
    head = f"malformed OSC packet ({size} bytes)"
    if not size:
        return 0, ("empty packet (0 bytes): an OSC packet starts with '/' (a message) or "
                   "'#bundle' (a bundle)")
    count = 0
    todo = [(0, size, 0)]  # (start, end, depth): the elements still to look at
    while todo:
        start, end, depth = todo.pop()
        if data.startswith(_BUNDLE_HEAD, start, end):
            if depth >= MAX_BUNDLE_DEPTH:
                return count, f"{head}: bundles nested more than {MAX_BUNDLE_DEPTH} deep"
            i = start + 16
            if i > end:
                return count, f"{head}: bundle at byte {start} is cut short in its time tag"
            while i < end:
                if i + 4 > end:
                    return count, f"{head}: bundle element size at byte {i} is cut short"
                length = int.from_bytes(data[i:i + 4], "big", signed=True)
                if length <= 0 or length % 4 or i + 4 + length > end:
                    return count, (f"{head}: bundle element at byte {i} claims {length} "
                                   f"bytes; {end - i - 4} follow")
                todo.append((i + 4, i + 4 + length, depth + 1))
                i += 4 + length
        elif data.startswith(b"/", start, end):
            count += 1
            if count > MAX_MESSAGES_PER_PACKET:
                return count, (f"packet holds more than {MAX_MESSAGES_PER_PACKET} messages; "
                               f"nothing handled")
            problem = _survey_message(data, start, end)
            if problem:
                return count, f"{head}: {problem}"
        else:
            what = "packet" if start == 0 else f"bundle element at byte {start}"
            return count, (f"{head}: {what} starts with {data[start:start + 8]!r}, not '/' "
                           f"(a message) or '#bundle' (a bundle)")
    return count, ""


def _survey_message(data: bytes, start: int, end: int) -> str:
    stop = data.find(b"\x00", start, end)
    if stop < 0:
        return f"the address at byte {start} has no terminating NUL"
    address = data[start:stop].decode("utf-8", "replace")
    where = _short(address)
    i = _padded(stop + 1 - start) + start
    if i > end:
        return f"the address {where!r} is cut short in its padding"
    if i == end:
        return ""  # no type tags at all: a message without arguments
    if data[i] != ord(","):
        return f"{where}: the type tags at byte {i} do not start with ','"
    stop = data.find(b"\x00", i, end)
    if stop < 0:
        return f"{where}: the type tags have no terminating NUL"
    tags = data[i + 1:stop].decode("ascii", "replace")
    i += _padded(stop + 1 - i)
    for tag in tags:
        fixed = _FIXED_TAG_BYTES.get(tag)
        if fixed is not None:
            i += fixed
        elif tag == "s":
            stop = data.find(b"\x00", i, end)
            if stop < 0:
                return f"{where}: a string argument has no terminating NUL"
            i += _padded(stop + 1 - i)
        elif tag == "b":
            if i + 4 > end:
                break
            length = int.from_bytes(data[i:i + 4], "big", signed=True)
            if length < 0:
                return f"{where}: a blob argument claims {length} bytes"
            i += 4 + _padded(length)
        else:
            return f"{where}: unsupported OSC type tag {tag!r} (use i, f, s, ...)"
        if i > end:
            break
    if i > end:
        return (f"{where}: the arguments are cut short ({_bytes(i - end)} missing for "
                f"',{tags}')")
    if i < end:
        return f"{where}: {_bytes(end - i)} too many after the arguments ',{tags}'"
    return ""


def _bytes(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"


def _padded(n: int) -> int:
    return (n + 3) & ~3
