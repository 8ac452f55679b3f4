"""The JACK host binding: the only module of the project that imports :mod:`jack`.

:class:`JackHost` owns the engine's JACK client and ports. Its process callback hands the
engine the port buffers and MIDI events and does nothing else; it notices missed cycles
from JACK's frame times and lets the engine catch up (:meth:`Engine.skip`). Everything
else (latency, connections, losing and finding the server again) happens in
:meth:`JackHost.poll`, which the engine process's main thread calls a few times a second.

Real-time rules of the process callback: it touches only buffers made before activation,
calls no function that blocks, logs nothing and raises nothing. The port buffers are copied
in and out by the compiled functions of :mod:`rtcore.jackio`, which call libjack directly.
Its cost, and how late JACK started it, are counted in :class:`CallbackStats`.

JACK-Client does not wrap JACK's latency API, so those functions of ``libjack`` are called
through :mod:`ctypes`; MIDI events, when there are any, move through JACK-Client's own cffi
handle, because the friendly wrappers create objects on every call.

:class:`XrunCounter` is a client without a process callback that counts the server's xruns.

:class:`SignalClient` is a test double that others can reuse: a JACK client that plays a
known signal (a function of JACK's frame time) and records what reaches its inputs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from threading import get_ident
from typing import Any, Protocol

import jack
import numpy as np
from numpy.typing import NDArray

from rtcore import jackio
from rtcore.errors import OuroError
from rtcore.midi import MAX_MESSAGE_BYTES, MidiBuffer

_ffi: Any = jack._ffi  # type: ignore[attr-defined]
_lib: Any = jack._lib  # type: ignore[attr-defined]

FRAME_MASK = 0xFFFFFFFF  # JACK frame times are unsigned 32-bit and wrap
HIST_US = 20000  # callback time histogram: 1 µs bins up to 20 ms, the last bin holds the rest
CAPTURE, PLAYBACK = 0, 1  # jack_latency_callback_mode_t
MAX_LATENCY_FRAMES = 48000


class HostedEngine(Protocol):
    """What :class:`JackHost` drives: the looper's :class:`rtcore.engine.Engine`, or the
    companion's player. ``process`` is called from the audio thread with blocks of at most
    ``block_size`` frames; ``skip`` after missed cycles; ``frame`` is the engine's own frame
    count (to map JACK's frame times onto it); ``latency_frames`` is set from JACK's
    latency."""

    sample_rate: int
    channels: int
    block_size: int
    frame: int
    latency_frames: int

    def process(self, inputs: NDArray[np.float32], main_out: NDArray[np.float32],
                click_out: NDArray[np.float32], midi_in: MidiBuffer | None = None,
                midi_out: MidiBuffer | None = None) -> None: ...

    def skip(self, missed_frames: int) -> None: ...


class HostError(OuroError, RuntimeError):
    """The JACK server is unreachable or refused something the engine needs."""


# ---------------------------------------------------------------------------- libjack bits

class _Range(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


_libjack = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
_libjack.jack_port_get_latency_range.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                 ctypes.POINTER(_Range)]
_libjack.jack_port_get_latency_range.restype = None
_libjack.jack_port_set_latency_range.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                 ctypes.POINTER(_Range)]
_libjack.jack_port_set_latency_range.restype = None
_LatencyCallback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)
_libjack.jack_set_latency_callback.argtypes = [ctypes.c_void_p, _LatencyCallback,
                                               ctypes.c_void_p]
_libjack.jack_set_latency_callback.restype = ctypes.c_int
_libjack.jack_recompute_total_latencies.argtypes = [ctypes.c_void_p]
_libjack.jack_recompute_total_latencies.restype = ctypes.c_int


def _address(ptr: Any) -> int:
    return int(_ffi.cast("uintptr_t", ptr))


def latency_range(port: jack.Port, mode: int) -> tuple[int, int]:
    """JACK's (min, max) latency of ``port`` in frames; ``mode`` is CAPTURE or PLAYBACK."""
    r = _Range()
    _libjack.jack_port_get_latency_range(_address(port._ptr), mode, ctypes.byref(r))
    return int(r.min), int(r.max)


def _quiet(_message: str) -> None:
    """libjack's own messages: the host reports what matters in the status instead."""


def server_reachable(server: str | None) -> bool:
    """True when a JACK server of that name (None: the default) accepts a client."""
    jack.set_error_function(_quiet)
    jack.set_info_function(_quiet)
    try:
        client = jack.Client("ouro-probe", no_start_server=True, servername=server)
    except jack.JackError:
        return False
    client.close()
    return True


def _open_client(name: str, server: str | None) -> jack.Client:
    jack.set_error_function(_quiet)
    jack.set_info_function(_quiet)
    try:
        return jack.Client(name, use_exact_name=True, no_start_server=True, servername=server)
    except jack.JackOpenError as exc:
        where = f"JACK server {server!r}" if server else "the default JACK server"
        status = exc.status
        if status.name_not_unique:
            raise HostError(f"{where} already has a client named {name!r} "
                            f"(another engine running? use --name)") from None
        raise HostError(f"cannot reach {where}: is jackd running? Start one, e.g. "
                        f"'jackd -d dummy' or 'ouro start' ({status})") from None


# ---------------------------------------------------------------------------- frame clock

class FrameClock:
    """Which JACK frame time each process cycle stands for, and how many frames were missed.

    ``jack_last_frame_time`` reads the server's shared timer. A callback that starts late,
    after the server began the next cycle, reads the next cycle's time; the cycle after it
    reads the right time again. So a jump forward counts as missed frames only when the
    next cycle confirms it; a one-cycle jump is a late read, and the cycle keeps the time
    it was expected to have. A real xrun is thus caught up one cycle late (that cycle plays
    the block it was expected to), and a late read never shifts the engine's timeline.
    """

    __slots__ = ("anomalies", "behind", "events", "expected", "glitches", "misses", "resyncs",
                 "started", "suspect")

    def __init__(self) -> None:
        self.started = False
        self.expected = 0
        self.suspect = 0
        self.glitches = 0  # jumps not confirmed by the next cycle: late reads
        self.misses = 0  # confirmed jumps: cycles really missed
        self.behind = 0
        self.resyncs = 0  # confirmed reads behind the expected time: the clock went back
        self.anomalies = 0  # every read that was not the expected time
        self.events: deque[tuple[int, int, int]] = deque(maxlen=16)  # (read, expected, gap)

    def reset(self) -> None:
        self.started = False
        self.suspect = 0
        self.behind = 0

    def advance(self, ft: int, frames: int) -> int:
        """Read ``ft`` at the start of a cycle of ``frames``. Returns the frames missed
        before this cycle (> 0: catch up), or minus how far the clock was ahead of JACK's
        (< 0, after a jump that was not real: the clock has gone back). Afterwards
        ``expected - frames`` is this cycle's time."""
        missed = 0
        if not self.started:
            self.started = True
            self.expected = ft
        else:
            gap = (ft - self.expected) & FRAME_MASK
            if gap:
                self.anomalies += 1
                self.events.append((ft, self.expected, gap))  # rare: kept for the status
            if gap >= 0x80000000:  # behind: a late read unwinding, or a wrong catch-up
                back = FRAME_MASK + 1 - gap
                self.suspect = 0
                if back == self.behind:  # twice the same: follow JACK's clock back
                    self.expected = ft
                    self.behind = 0
                    self.resyncs += 1
                    missed = -back
                else:
                    self.behind = back
            elif gap == 0:
                self.suspect = 0
                self.behind = 0
            elif self.suspect:  # a jump seen twice in a row: frames were really missed
                missed = min(gap, self.suspect)
                self.suspect = 0
                self.glitches -= 1
                self.misses += 1
            else:
                self.suspect = gap
                self.glitches += 1
        self.expected = (self.expected + max(missed, 0) + frames) & FRAME_MASK
        return missed

    def event_list(self) -> list[list[int]]:
        """The kept events as lists, oldest first, for a status document. Safe from another
        thread while the audio thread appends: ``list()`` copies the deque in one step
        under the GIL (iterating it in Python could see it change, and raise)."""
        return [list(e) for e in list(self.events)]


# ---------------------------------------------------------------------------- statistics

class CallbackStats:
    """Per-callback cost and start delay, counted without allocating arrays.

    Histograms have 1 µs bins, so percentiles are exact to the microsecond over every
    callback since the engine started. The count and maxima live in ``scalars`` so that
    the compiled cycle code (:mod:`rtcore.jackio`) updates them too.
    """

    def __init__(self) -> None:
        self.duration = np.zeros(HIST_US + 1, np.int64)
        self.delay = np.zeros(HIST_US + 1, np.int64)
        self.scalars = np.zeros(3, np.int64)
        # the summary's work space (status requests come from the OSC thread only)
        self._q = np.array([0.5, 0.99, 0.999])
        self._p = np.zeros(3, np.int64)
        self._nz = np.zeros((HIST_US + 1, 2), np.int64)
        self._nz_delay = np.zeros((HIST_US + 1, 2), np.int64)
        self.errors = 0
        self.last_error = ""

    @property
    def count(self) -> int:
        return int(self.scalars[jackio.COUNT])

    @property
    def max_us(self) -> int:
        return int(self.scalars[jackio.MAX_US])

    @property
    def max_delay_us(self) -> int:
        return int(self.scalars[jackio.MAX_DELAY_US])

    def summary(self, period_us: float) -> dict[str, Any]:
        """Percentiles in µs, and the sparse histogram ``[[µs, count], ...]`` of durations."""
        qs, out, nz = self._q, self._p, self._nz
        k = jackio.summarize(self.duration, qs, out, nz)
        p50, p99, p999 = int(out[0]), int(out[1]), int(out[2])
        jackio.summarize(self.delay, qs, out, self._nz_delay)
        d99 = int(out[1])
        return {
            "count": self.count, "p50_us": p50, "p99_us": p99, "p999_us": p999,
            "max_us": self.max_us, "period_us": round(period_us, 2),
            "p99_fraction": round(p99 / period_us, 4) if period_us else 0.0,
            "start_delay_p99_us": d99, "start_delay_max_us": self.max_delay_us,
            "errors": self.errors, "last_error": self.last_error,
            "hist": nz[:k].tolist(),
        }


def percentiles(hist: NDArray[np.int64], qs: Sequence[float]) -> list[int]:
    """Percentiles (bin indices) of a histogram with one bin per unit."""
    total = int(hist.sum())
    if total == 0:
        return [0 for _ in qs]
    cum = np.cumsum(hist)
    return [int(np.searchsorted(cum, q * total, side="left")) for q in qs]


def hist_from_sparse(pairs: Sequence[Sequence[int]]) -> NDArray[np.int64]:
    """The dense histogram back from ``summary()['hist']`` (for windows between two reads)."""
    hist = np.zeros(HIST_US + 1, np.int64)
    for us, n in pairs:
        hist[min(int(us), HIST_US)] += int(n)
    return hist


# ---------------------------------------------------------------------------- the host

class JackHost:
    """The engine's JACK client: ports, the process callback, latency, reconnection.

    Open it first (to learn the server's sample rate and block size), build the engine for
    them, then :meth:`attach` it. Call :meth:`poll` from one non-audio thread, often.
    """

    def __init__(self, server: str | None = None, client_name: str = "ouroboros", *,
                 channels: int = 2, connect: bool = True,
                 connections: Mapping[str, Sequence[str]] | None = None,
                 reconnect_interval_s: float = 1.0):
        self.server = server
        self.client_name = client_name
        self.channels = channels
        self.auto_connect = connect
        self.configured = {k: list(v) for k, v in (connections or {}).items()}
        self.reconnect_interval_s = reconnect_interval_s
        self.client = _open_client(client_name, server)
        self.sample_rate = int(self.client.samplerate)
        self.blocksize = int(self.client.blocksize)
        self.engine: HostedEngine | None = None
        self.state = "open"
        self.lost_reason = ""
        self.losses = 0
        self.reconnects = 0
        self.jack_xruns = 0
        self.latency_frames = 0
        self.capture_latency = 0
        self.playback_latency = 0
        self.latency_updates = 0
        self.frame_time_origin = 0
        self.stats = CallbackStats()
        self.audio_thread = 0
        self.remembered: dict[str, set[str]] = {}
        self.pending: dict[str, set[str]] = {}
        self.messages: deque[str] = deque(maxlen=20)
        self._lost = threading.Event()
        self._next_attempt = 0.0
        self._resync = True
        self.clock = FrameClock()
        self._perf = time.perf_counter_ns

    # ------------------------------------------------------------------ set-up

    def attach(self, engine: HostedEngine) -> None:
        """Register the ports, start the callback, connect. The engine's sample rate must
        be the server's."""
        if engine.sample_rate != self.sample_rate:
            raise HostError(f"engine runs at {engine.sample_rate} Hz but the JACK server at "
                            f"{self.sample_rate} Hz")
        self.engine = engine
        self._setup_client()
        desired = self._default_connections() if self.auto_connect else {}
        for port, others in self.configured.items():
            desired.setdefault(port, set()).update(others)
        self.pending = desired
        self._connect_pending()

    def _setup_client(self) -> None:
        engine = self.engine
        assert engine is not None
        client = self.client
        ch = engine.channels
        self.inports = [client.inports.register(f"in_{i + 1}") for i in range(ch)]
        self.outports = [client.outports.register(f"out_{i + 1}") for i in range(ch)]
        self.clickport = client.outports.register("click")
        self.midi_inport = client.midi_inports.register("midi_in")
        self.midi_outport = client.midi_outports.register("midi_out")
        self._client_addr = _address(client._ptr)
        self._in_addrs = np.array([_address(p._ptr) for p in self.inports], np.uintp)
        self._out_addrs = np.array([_address(p._ptr) for p in self.outports], np.uintp)
        self._click_addr = _address(self.clickport._ptr)
        self._midi_in_addr = _address(self.midi_inport._ptr)
        self._midi_out_addr = _address(self.midi_outport._ptr)
        self._info = np.zeros(3, np.int64)
        self._last_us = -1
        self._midi_in_ptr = self.midi_inport._ptr
        self._midi_out_ptr = self.midi_outport._ptr
        self._midi_event = _ffi.new("jack_midi_event_t*")
        self._midi_bytes = _ffi.new(f"unsigned char[{MAX_MESSAGE_BYTES}]")
        self.midi_in = MidiBuffer()
        self.midi_out = MidiBuffer()
        self._part_in = MidiBuffer()  # one engine-sized part of a larger JACK block
        self._part_out = MidiBuffer()
        self._make_buffers(int(client.blocksize))
        self._resync = True
        self._lost.clear()
        # compile (or load) the cycle code now, with the very argument types of the callback
        self._cycle(self.blocksize, warm_up=True)
        client.set_process_callback(self._process)
        client.set_xrun_callback(self._on_xrun)
        client.set_shutdown_callback(self._on_shutdown)
        client.set_blocksize_callback(self._on_blocksize)
        client.activate()
        self.blocksize = int(client.blocksize)
        self.state = "running"
        self._refresh_latency()

    def _make_buffers(self, frames: int) -> None:
        """The host's blocks, big enough for a JACK cycle of ``frames`` (never shrinking).
        Not the audio thread: JACK calls the buffer-size callback while no cycle runs."""
        assert self.engine is not None
        have = getattr(self, "inbuf", None)
        if have is not None and have.shape[0] >= frames:
            return
        ch = self.engine.channels
        self.inbuf = np.zeros((frames, ch), np.float32)
        self.outbuf = np.zeros((frames, ch), np.float32)
        self.clickbuf = np.zeros(frames, np.float32)
        bs = self.engine.block_size
        self._blocks = (self.inbuf[:bs], self.outbuf[:bs], self.clickbuf[:bs])

    def _default_connections(self) -> dict[str, set[str]]:
        """Physical capture i -> in_i, out_i -> physical playback i, and the click to the
        next playback port if the card has one more (a cue output); MIDI stays unconnected."""
        client = self.client
        ch = len(self.inports)
        caps = [p.name for p in client.get_ports(is_audio=True, is_output=True,
                                                 is_physical=True)]
        plays = [p.name for p in client.get_ports(is_audio=True, is_input=True,
                                                  is_physical=True)]
        out: dict[str, set[str]] = {}
        for i in range(ch):
            if i < len(caps):
                out.setdefault(f"in_{i + 1}", set()).add(caps[i])
            if i < len(plays):
                out.setdefault(f"out_{i + 1}", set()).add(plays[i])
        if len(plays) > ch:
            out["click"] = {plays[ch]}
        return out

    # ------------------------------------------------------------------ audio thread

    def _process(self, frames: int) -> None:
        """JACK's process callback (real time; see the module docstring)."""
        t0 = self._perf()
        try:
            self._cycle(frames)
        except Exception as exc:
            self.stats.errors += 1
            self.stats.last_error = repr(exc)
        self._last_us = (self._perf() - t0) // 1000  # recorded by the next cycle

    def _cycle(self, frames: int, warm_up: bool = False) -> None:
        eng = self.engine
        assert eng is not None
        if frames > self.inbuf.shape[0]:
            raise HostError(f"JACK cycle of {frames} frames, buffers of {self.inbuf.shape[0]}")
        info = self._info
        stats = self.stats
        jackio.cycle_in(self._client_addr, self._in_addrs, self._midi_in_addr, frames,
                        self.inbuf, info, stats.duration, stats.delay, stats.scalars,
                        self._last_us, self.sample_rate)
        if warm_up:
            jackio.cycle_out(self._out_addrs, self._click_addr, self._midi_out_addr, frames,
                             self.outbuf, self.clickbuf)
            return
        ft = int(info[jackio.FRAME_TIME])
        clock = self.clock
        if self._resync:
            self._resync = False
            self.audio_thread = get_ident()
            clock.reset()
            self.frame_time_origin = (ft - eng.frame) & FRAME_MASK
            clock.advance(ft, frames)
        else:
            missed = clock.advance(ft, frames)
            if missed > 0:
                eng.skip(missed)
            elif missed < 0:  # the engine ran ahead of JACK: keep the mapping true
                self.frame_time_origin = (self.frame_time_origin + missed) & FRAME_MASK
        midi_in = self.midi_in
        if info[jackio.MIDI_EVENTS]:
            self._read_midi(frames)
        elif midi_in.count:
            midi_in.clear()
        bs = eng.block_size
        if frames == bs:
            ins, outs, click = self._blocks
            eng.process(ins, outs, click, midi_in, self.midi_out)
        else:
            self._process_split(frames, bs)
        jackio.cycle_out(self._out_addrs, self._click_addr, self._midi_out_addr, frames,
                         self.outbuf, self.clickbuf)
        if self.midi_out.count:
            self._write_midi(frames)

    def _process_split(self, frames: int, bs: int) -> None:
        """A JACK block larger (or smaller) than the engine's: run it in engine-sized parts."""
        eng = self.engine
        assert eng is not None
        part_in, part_out, midi_out = self._part_in, self._part_out, self.midi_out
        midi_out.clear()
        for off in range(0, frames, bs):
            n = min(bs, frames - off)
            # each part gets the MIDI events of its frames, and its output is placed at them
            part_in.take_window(self.midi_in, off, off + n if off + n < frames else 1 << 62)
            eng.process(self.inbuf[off:off + n], self.outbuf[off:off + n],
                        self.clickbuf[off:off + n], part_in, part_out)
            midi_out.append_from(part_out, off)
        self.midi_in.clear()

    def _read_midi(self, frames: int) -> None:
        midi = self.midi_in
        midi.clear()
        buf = _lib.jack_port_get_buffer(self._midi_in_ptr, frames)
        count = _lib.jack_midi_get_event_count(buf)
        if count:
            event = self._midi_event
            for i in range(count):
                if _lib.jack_midi_event_get(event, buf, i) == 0:
                    size = event.size
                    if size <= MAX_MESSAGE_BYTES:
                        midi.add(event.time, event.buffer[0:size])
                    else:  # SysEx is not for the looper: counted, not copied
                        midi.dropped += 1

    def _write_midi(self, frames: int) -> None:
        buf = _lib.jack_port_get_buffer(self._midi_out_ptr, frames)  # cleared by cycle_out
        out = self.midi_out
        data = self._midi_bytes
        for i in range(out.count):
            size = int(out.sizes[i])
            for j in range(size):
                data[j] = int(out.data[i, j])
            _lib.jack_midi_event_write(buf, int(out.frames[i]), data, size)

    # ------------------------------------------------------------------ JACK's other threads

    def _on_xrun(self, _delayed_usecs: float) -> None:
        self.jack_xruns += 1

    def _on_shutdown(self, _status: jack.Status, reason: str) -> None:
        self.lost_reason = reason
        self._lost.set()

    def _on_blocksize(self, blocksize: int) -> None:
        # the cycle stops while the size changes: start counting frames afresh
        self.blocksize = blocksize
        self._make_buffers(blocksize)
        self._resync = True

    # ------------------------------------------------------------------ supervision

    def poll(self) -> None:
        """Latency, connections, and losing/finding the server. Not the audio thread."""
        if self.state == "running":
            if self._lost.is_set():
                self._on_lost()
                return
            self._refresh_latency()
            self._remember_connections()
            if self.pending:
                self._connect_pending()
        elif self.state == "lost" and time.monotonic() >= self._next_attempt:
            self._try_reconnect()

    def _refresh_latency(self) -> None:
        cap = max((latency_range(p, CAPTURE)[1] for p in self.inports), default=0)
        play = max((latency_range(p, PLAYBACK)[1] for p in self.outports), default=0)
        total = min(cap + play, MAX_LATENCY_FRAMES)
        if (cap, play) != (self.capture_latency, self.playback_latency) or (
                self.engine is not None and self.engine.latency_frames != total):
            self.capture_latency, self.playback_latency = cap, play
            self.latency_frames = total
            self.latency_updates += 1
            if self.engine is not None:
                # read only when a recording starts: a running recording keeps its own
                self.engine.latency_frames = total
                self.messages.append(f"round-trip latency {total} frames "
                                     f"(capture {cap}, playback {play})")

    def _own_ports(self) -> list[jack.OwnPort]:
        return [*self.inports, *self.outports, self.clickport, self.midi_inport,
                self.midi_outport]

    def _remember_connections(self) -> None:
        remembered: dict[str, set[str]] = {}
        for port in self._own_ports():
            names = {p.name for p in self.client.get_all_connections(port)}
            if names:
                remembered[port.shortname] = names
        self.remembered = remembered

    def _connect_pending(self) -> None:
        still: dict[str, set[str]] = {}
        by_name = {p.shortname: p for p in self._own_ports()}
        for short, others in self.pending.items():
            port = by_name.get(short)
            if port is None:
                self.messages.append(f"no port {short!r} to connect (ports: "
                                     f"{', '.join(by_name)})")
                continue
            for other in others:
                try:
                    if port.is_input:
                        self.client.connect(other, port)
                    else:
                        self.client.connect(port, other)
                except jack.JackError:
                    still.setdefault(short, set()).add(other)  # not there (yet)
        self.pending = still

    def _on_lost(self) -> None:
        self.state = "lost"
        self.losses += 1
        self.messages.append(f"JACK server lost: {self.lost_reason}")
        self.client.close()
        self._next_attempt = 0.0
        self.pending = {k: set(v) for k, v in self.remembered.items()}
        for port, others in self.configured.items():
            self.pending.setdefault(port, set()).update(others)

    def _try_reconnect(self) -> None:
        self._next_attempt = time.monotonic() + self.reconnect_interval_s
        try:
            client = _open_client(self.client_name, self.server)
        except HostError:
            return
        if int(client.samplerate) != self.sample_rate:
            self.messages.append(f"JACK server is back at {client.samplerate} Hz; the engine "
                                 f"runs at {self.sample_rate} Hz: waiting for a server at "
                                 f"{self.sample_rate} Hz (loops kept)")
            client.close()
            return
        self.client = client
        self._setup_client()
        self.reconnects += 1
        self.messages.append("JACK server found again: ports and connections restored")
        self._connect_pending()

    def close(self) -> None:
        """Deactivate and close the client (idempotent)."""
        if self.state == "running":
            self.client.deactivate()
        self.client.close()
        self.state = "closed"

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The host's part of the status document. Not real time."""
        running = self.state == "running"
        period_us = self.blocksize * 1e6 / self.sample_rate
        return {
            "state": self.state,
            "server": self.server or "default",
            "client": self.client_name,
            "sample_rate": self.sample_rate,
            "blocksize": self.blocksize,
            "dsp_load": round(float(self.client.cpu_load()), 2) if running else None,
            "realtime": bool(self.client.realtime) if running else None,
            "xruns_reported": self.jack_xruns,
            "losses": self.losses,
            "reconnects": self.reconnects,
            "lost_reason": self.lost_reason,
            "latency": {"capture_frames": self.capture_latency,
                        "playback_frames": self.playback_latency,
                        "round_trip_frames": self.latency_frames,
                        "updates": self.latency_updates},
            "frame_time_origin": self.frame_time_origin,
            "connections": {k: sorted(v) for k, v in self.remembered.items()},
            "pending_connections": {k: sorted(v) for k, v in self.pending.items()},
            "late_frame_time_reads": self.clock.glitches,
            "frame_time_anomalies": self.clock.anomalies,
            "frame_time_resyncs": self.clock.resyncs,
            "frame_time_events": self.clock.event_list(),
            "callback": self.stats.summary(period_us),
            "messages": list(self.messages),
        }


# ---------------------------------------------------------------------------- test double

def probe_signal(frame_times: NDArray[np.int64], channel: int = 0) -> NDArray[np.float32]:
    """A signal whose every sample names its JACK frame time (and channel): a hash of the
    frame time scaled to [-0.5, 0.5). A sample found in an output tells where it came from.

    >>> float(probe_signal(np.array([0]))[0])
    -0.5
    """
    mult = (2654435761, 2246822519, 3266489917, 668265263)[channel % 4]
    h = (frame_times.astype(np.uint64) * np.uint64(mult)) & np.uint64(0xFFFFFF)
    return (h.astype(np.float32) / np.float32(1 << 24) - np.float32(0.5)).astype(np.float32)


class XrunCounter:
    """A JACK client with no process callback (libjack runs its part of the graph without
    entering Python) that counts the server's xrun notifications: a benchmark's witness
    that costs the cycle nothing."""

    def __init__(self, server: str | None, name: str = "ouro-xruns", activate: bool = True):
        self.client = _open_client(name, server)
        self.xruns = 0  # the server's xrun notifications (for everyone, not just this client)
        self.client.set_xrun_callback(self._on_xrun)
        if activate:
            self.client.activate()

    def _on_xrun(self, _delayed_usecs: float) -> None:
        self.xruns += 1

    def cpu_load(self) -> float:
        """JACK's DSP load, in percent."""
        return float(self.client.cpu_load())

    def set_blocksize(self, frames: int) -> None:
        """Change the server's period (every client's cycle)."""
        self.client.blocksize = frames

    def close(self) -> None:
        """Deactivate and close; after the server died, closing only frees the client."""
        try:
            self.client.deactivate()
        except jack.JackError:
            pass
        self.client.close()


class SignalClient(XrunCounter):
    """A JACK client for tests and benchmarks: plays :func:`probe_signal` (or silence) on its
    outputs and records what reaches its inputs, both indexed by JACK frame time.

    ``capture_latency`` / ``playback_latency`` are announced on its output / input ports,
    as an audio interface's driver would, so a connected engine sees a round trip.
    """

    def __init__(self, server: str | None, name: str, *, outputs: int = 0, inputs: int = 0,
                 record_seconds: float = 0.0, capture_latency: int = 0,
                 playback_latency: int = 0, playing: bool = True,
                 source: Callable[[NDArray[np.int64], int], NDArray[np.float32]] = probe_signal):
        # like the engine: other threads of this process give up the GIL within 0.1 ms
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0001))
        super().__init__(server, name, activate=False)
        self.sample_rate = int(self.client.samplerate)
        self.outputs = [self.client.outports.register(f"out_{i + 1}") for i in range(outputs)]
        self.inputs = [self.client.inports.register(f"in_{i + 1}") for i in range(inputs)]
        self.capture_latency = capture_latency
        self.playback_latency = playback_latency
        self.playing = playing
        self.source = source
        cap = max(1, int(record_seconds * self.sample_rate))
        self.recorded = np.zeros((cap, max(inputs, 1)), np.float32)
        self.recorded_ft = np.full(cap, -1, np.int64)  # frame time of each recorded frame
        self.write = 0
        self.cycles = 0
        self.clock = FrameClock()
        self._latency_cb = _LatencyCallback(self._on_latency)
        _libjack.jack_set_latency_callback(_address(self.client._ptr), self._latency_cb, None)
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _on_latency(self, mode: int, _arg: Any) -> None:
        if mode == CAPTURE:
            r = _Range(self.capture_latency, self.capture_latency)
            for p in self.outputs:
                _libjack.jack_port_set_latency_range(_address(p._ptr), CAPTURE, ctypes.byref(r))
        else:
            r = _Range(self.playback_latency, self.playback_latency)
            for p in self.inputs:
                _libjack.jack_port_set_latency_range(_address(p._ptr), PLAYBACK,
                                                     ctypes.byref(r))

    def set_latency(self, capture: int | None = None, playback: int | None = None) -> None:
        """Announce other latencies (as a driver would after a settings change) and have
        JACK recompute the graph's latencies."""
        if capture is not None:
            self.capture_latency = capture
        if playback is not None:
            self.playback_latency = playback
        _libjack.jack_recompute_total_latencies(_address(self.client._ptr))

    def _process(self, frames: int) -> None:
        self.clock.advance(int(self.client.last_frame_time), frames)
        ft = self.clock.expected - frames
        times = np.arange(ft, ft + frames, dtype=np.int64)
        for i, port in enumerate(self.outputs):
            buf = port.get_array()
            if self.playing:
                buf[:] = self.source(times, i)
            else:
                buf.fill(0.0)
        if self.inputs:
            cap = self.recorded.shape[0]
            w = self.write % cap
            n = min(frames, cap - w)
            for i, port in enumerate(self.inputs):
                data = port.get_array()
                self.recorded[w:w + n, i] = data[:n]
                self.recorded[: frames - n, i] = data[n:]
            self.recorded_ft[w:w + n] = times[:n]
            self.recorded_ft[: frames - n] = times[n:]
            self.write += frames
        self.cycles += 1

    def connect(self, source: str, destination: str) -> None:
        self.client.connect(source, destination)

    def port_name(self, short: str) -> str:
        return f"{self.client.name}:{short}"

    def frames_at(self, ft_start: int, frames: int, channel: int = 0) -> NDArray[np.float32]:
        """What reached input ``channel`` at JACK frame times ``ft_start ...``; raises if
        any of those frames was not (or no longer) recorded."""
        ft = self.recorded_ft
        idx = np.flatnonzero(ft == ft_start)
        if idx.size == 0:
            raise LookupError(f"frame time {ft_start} was not recorded")
        i = int(idx[0])
        rows = (np.arange(frames) + i) % ft.shape[0]
        if not np.array_equal(ft[rows], np.arange(ft_start, ft_start + frames)):
            raise LookupError(f"frame times {ft_start}..{ft_start + frames} not all recorded")
        return self.recorded[rows, channel].copy()

    def latest_frame_time(self) -> int:
        return int(self.recorded_ft.max())


class MidiTestClient(XrunCounter):
    """A JACK client for tests: sends MIDI at exact JACK frame times from its ``midi_out``
    port and records what reaches its ``midi_in`` port, with the frame time of each event.

    :meth:`send` queues ``(frame_time, bytes)`` events, in order of frame time; the process
    callback writes each one at its own offset within the cycle that holds its frame (one
    whose frame time has already passed goes out at the start of the next cycle, and is
    counted in :attr:`late`). What was really written is in :attr:`sent`, what arrived in
    :attr:`received`, both as ``(frame_time, bytes)``. The queues are deques: the callback
    never waits for the test's thread.
    """

    def __init__(self, server: str | None, name: str, *, keep: int = 1 << 16):
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0001))
        super().__init__(server, name, activate=False)
        self.sample_rate = int(self.client.samplerate)
        self.midi_out = self.client.midi_outports.register("midi_out")
        self.midi_in = self.client.midi_inports.register("midi_in")
        self.clock = FrameClock()
        self.outgoing: deque[tuple[int, bytes]] = deque()
        self.sent: deque[tuple[int, bytes]] = deque(maxlen=keep)
        self.received: deque[tuple[int, bytes]] = deque(maxlen=keep)
        self.late = 0  # events written after their frame time (a cycle of this client missed)
        self.write_errors = 0  # events JACK refused (buffer full)
        self.cycles = 0
        self.cycle_frame_time = -1  # the frame time of the last cycle
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        self.clock.advance(int(self.client.last_frame_time), frames)
        ft = (self.clock.expected - frames) & FRAME_MASK
        port = self.midi_out
        port.clear_buffer()
        queue = self.outgoing
        while queue:
            at, data = queue[0]
            offset = (at - ft) & FRAME_MASK
            if offset >= 0x80000000:  # its frame has passed
                offset = 0
                self.late += 1
            elif offset >= frames:
                break
            queue.popleft()
            try:
                port.write_midi_event(offset, data)
            except jack.JackError:
                self.write_errors += 1
                continue
            self.sent.append(((ft + offset) & FRAME_MASK, data))
        for offset, data in self.midi_in.incoming_midi_events():
            self.received.append(((ft + offset) & FRAME_MASK, bytes(data)))
        self.cycle_frame_time = ft
        self.cycles += 1

    def frame_time(self) -> int:
        """JACK's estimate of the current frame time (for scheduling from another thread)."""
        return int(self.client.frame_time)

    def send(self, events: Sequence[tuple[int, bytes | Sequence[int]]]) -> None:
        """Queue ``(frame_time, message)`` events, after those already queued; frame times
        must not decrease."""
        for at, data in events:
            self.outgoing.append((int(at) & FRAME_MASK, bytes(data)))

    def send_soon(self, *messages: bytes | Sequence[int], delay_frames: int = 4800,
                  spacing: int = 1) -> int:
        """Queue ``messages`` from ``delay_frames`` after now, ``spacing`` frames apart;
        returns the frame time of the first."""
        at = self.frame_time() + delay_frames
        self.send([(at + i * spacing, m) for i, m in enumerate(messages)])
        return at & FRAME_MASK

    def drained(self) -> bool:
        """True when every queued event has been written."""
        return not self.outgoing

    def connect(self, source: str, destination: str) -> None:
        self.client.connect(source, destination)
