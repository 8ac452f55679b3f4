"""``ouro start``: the pedal's main job. A JACK server, the engine on it, and a short tour.

It uses the JACK server that answers under the given name (the default server when none is
given), or starts one: on the first sound card with the ALSA driver, else with the dummy
driver. Then it runs ``ouro engine`` as a child process (:class:`~rtcore.client.EngineProcess`)
connected to the card, and, unless told not to, plays a scripted performance through the
engine's OSC API, as any controller would: a JACK client (``ouro-tour``) plays a plucked
phrase into the engine while the tour records it as a 4-beat loop and overdubs a melody
over it. A status line per beat shows the loop being built. Then the engine keeps running
until Ctrl-C or SIGTERM (or ``seconds``); the engine saves its session when it stops, and
a server this command started is stopped too.

The tour's phrase (:class:`TourSource`) is a pure function of JACK frame time, as every
source of :class:`~rtcore.host.SignalClient` is: the tour only tells it which phrase to
play over which frames.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtcore.client import EngineClient, EngineProcess, EngineUnreachable
from rtcore.errors import OuroError
from rtcore.jackd import JackServer, JackServerError, sound_card_present
from rtcore.live import DEFAULT_OSC_PORT, default_data_dir

__all__ = [
    "PHRASES",
    "TOUR_CLIENT",
    "TOUR_TEMPO_BPM",
    "Phrase",
    "Section",
    "StartError",
    "Tour",
    "TourError",
    "TourSource",
    "beat_line",
    "check_seconds",
    "midi_hz",
    "open_server",
    "run_start",
]

TOUR_CLIENT = "ouro-tour"
TOUR_TEMPO_BPM = 120.0
ENGINE_CLIENT = "ouroboros"
# A sound card gets JACK's default short period (128 frames, 2 periods: 5.3 ms at 48 kHz);
# nobody hears the dummy driver, so it gets a longer one that costs less CPU.
ALSA_PERIOD_FRAMES = 128
DUMMY_PERIOD_FRAMES = 256
POLL_S = 0.02  # status polls during the tour: a beat (0.5 s) is seen within 20 ms
STATUS_TIMEOUT_S = 0.5
SESSION_TIMEOUT_S = 10.0  # saving or emptying the matrix before the tour
STATUS_ATTEMPTS = 3
_FRAME_MASK = 0xFFFFFFFF  # JACK frame times are unsigned 32-bit and wrap

Out = Callable[[str], None]


class StartError(OuroError, RuntimeError):
    """Something ``ouro start`` needs could not be started (exit code 2)."""


class TourError(OuroError, RuntimeError):
    """The tour did not go as scripted: an ``/ouro/error``, a refusal, a missed beat."""


class _Stopped(Exception):
    """Ctrl-C or SIGTERM during the tour."""


# ---------------------------------------------------------------------------- the phrase

def midi_hz(note: int) -> float:
    """Equal-tempered frequency of a MIDI note number (0 is a rest: 0 Hz).

    >>> midi_hz(69)
    440.0
    """
    return 0.0 if note == 0 else 440.0 * 2.0 ** ((note - 69) / 12)


@dataclass(frozen=True, slots=True)
class Phrase:
    """Notes of equal length, ``notes_per_beat`` to a beat, repeated while it plays."""

    name: str
    notes: tuple[int, ...]  # MIDI note numbers; 0 is a rest
    notes_per_beat: int
    pan: tuple[float, float]  # gain of the left and right output

    @property
    def freqs(self) -> NDArray[np.float64]:
        return np.array([midi_hz(n) for n in self.notes], np.float64)


PHRASES = (
    # Am F C G, one chord a beat, arpeggiated in sixteenths
    Phrase("plucked arpeggios (Am F C G)",
           (57, 64, 69, 72, 53, 60, 65, 69, 60, 67, 72, 76, 55, 62, 67, 71), 4, (1.0, 0.8)),
    # a melody in eighths over the same chords, an octave up
    Phrase("a melody over them", (76, 72, 77, 72, 79, 76, 74, 71), 2, (0.8, 1.0)),
)

PEAK = 0.3
_HARMONICS = (1.0, 0.5, 0.25, 0.125)  # a plucked string: bright attack, higher ones die first
# The largest |envelope x harmonics| of a note, over every note, sample rate and tempo
# tried (measured: 1.36; the harmonics never peak together); the output peaks at PEAK.
_NOTE_PEAK = 1.4
_ATTACK_S = 0.002
_RELEASE_S = 0.004  # every note ends at 0, so phrases can start and stop on any note


@dataclass(frozen=True, slots=True)
class Section:
    """Play ``PHRASES[phrase]`` on engine frames ``[start_frame, end_frame)``, its first
    note at ``start_frame``."""

    start_frame: int
    end_frame: int
    phrase: int


class TourSource:
    """The tour's musician: a :class:`~rtcore.host.SignalClient` source (``source(frame_times,
    channel)``) that plays :data:`PHRASES` over the :class:`Section` list in
    :attr:`sections`, and silence elsewhere.

    Sections are in engine frames; ``origin_frame_time`` (the status's
    ``jack.frame_time_origin``) is the JACK frame time of engine frame 0. The output is a
    function of the frame times and these attributes only, so it does not depend on how
    JACK cuts time into blocks. The tour replaces :attr:`sections` as a whole (one attribute
    store), so the audio thread never sees half an update.

    >>> src = TourSource(48000, 120.0, origin_frame_time=1000)
    >>> src.sections = (Section(0, 4 * 24000, 0),)
    >>> x = src(np.arange(1000, 1000 + 4 * 24000, dtype=np.int64), 0)
    >>> x.dtype == np.float32 and 0.25 < float(np.abs(x).max()) <= PEAK
    True
    >>> float(np.abs(src(np.arange(1000 + 4 * 24000, 1000 + 5 * 24000), 0)).max())
    0.0
    """

    def __init__(self, sample_rate: int = 48000, tempo_bpm: float = TOUR_TEMPO_BPM,
                 origin_frame_time: int = 0):
        self.sample_rate = sample_rate
        self.tempo_bpm = tempo_bpm
        self.origin_frame_time = origin_frame_time
        self.sections: tuple[Section, ...] = ()
        self._freqs = [p.freqs for p in PHRASES]

    def __call__(self, frame_times: NDArray[np.int64], channel: int) -> NDArray[np.float32]:
        sections = self.sections  # read once: see the class docstring
        out = np.zeros(frame_times.shape[0], np.float32)
        if not sections:
            return out
        frames = (frame_times.astype(np.int64) - self.origin_frame_time) & _FRAME_MASK
        for sec in sections:
            inside = np.flatnonzero((frames >= sec.start_frame) & (frames < sec.end_frame))
            if inside.size:
                out[inside] = self._render(frames[inside] - sec.start_frame, sec.phrase,
                                           channel)
        return out

    def _render(self, pos: NDArray[np.int64], phrase: int,
                channel: int) -> NDArray[np.float32]:
        """``pos`` frames after the phrase's first note."""
        p = PHRASES[phrase]
        sr = self.sample_rate
        slot = sr * 60.0 / self.tempo_bpm / p.notes_per_beat  # frames per note
        note_s = slot / sr
        idx = np.floor(pos / slot).astype(np.int64)
        t = (pos - idx * slot) / sr  # seconds into the note
        freqs = self._freqs[phrase]
        freq = freqs[idx % freqs.shape[0]]
        env = (np.minimum(1.0, t / _ATTACK_S) * np.exp(-t / (0.6 * note_s))
               * np.clip((note_s - t) / _RELEASE_S, 0.0, 1.0))
        wave = np.zeros(pos.shape[0], np.float64)
        for h, amp in enumerate(_HARMONICS, start=1):
            wave += amp * np.exp(-t * (h - 1) * 8.0) * np.sin(2.0 * np.pi * h * freq * t)
        gain = PEAK / _NOTE_PEAK * p.pan[channel % 2]
        return (gain * env * wave).astype(np.float32)


# ---------------------------------------------------------------------------- status lines

def beat_line(status: Mapping[str, Any]) -> str:
    """One line for a status document: the beat, the running columns, the non-empty cells.

    ``beat 7 | col 0: 4 beats, pos 1.02 | (0,0) playing  (0,1) idle -> recording``
    (positions in beats; ``-> state`` for what the next beat boundary will do).
    """
    spb = status["sample_rate"] * 60.0 / status["tempo"]
    cols = []
    for c, col in enumerate(status["columns"]):
        pos = col["position"] / spb
        if col["beats"]:
            cols.append(f"col {c}: {col['beats']} beats, pos {pos:.2f}"
                        + ("" if col["running"] else " (stopped)"))
        elif col["running"]:
            cols.append(f"col {c}: first loop, pos {pos:.2f}")
    cells = []
    for c, column in enumerate(status["cells"]):
        for r, cell in enumerate(column):
            state, nxt = cell["state"], cell["next_state"]
            if state == "empty" and nxt == "empty":
                continue
            text = f"({c},{r}) {state}"
            if nxt != state:
                text += f" -> {nxt}"
            if cell["volume"] != 1.0:
                text += f" vol {cell['volume']:.2f}"
            cells.append(text)
    parts = [f"beat {status['beat']}", "  ".join(cols) or "no loops yet"]
    if cells:
        parts.append("  ".join(cells))
    return " | ".join(parts)


# ---------------------------------------------------------------------------- the tour

class Tour:
    """The scripted performance, driven by the engine's beats as its status reports them.

    At 120 BPM: the click goes on and cell (0,0) records from the next beat (phrase 0),
    closed after 4 beats (the column gets 4 beats); it plays alone for one pass; then
    (0,1) records one loop length (phrase 1) and plays; its volume goes to 0.7; both keep
    playing. Each command goes out as an OSC message; any ``/ouro/error``, any refusal in
    the status and any beat the tour missed raises :class:`TourError`. ``stop`` ends it
    early (the tour then raises an internal exception that :func:`run_start` handles).
    """

    def __init__(self, client: EngineClient, source: TourSource, *, out: Out,
                 stop: threading.Event | None = None):
        self.client = client
        self.source = source
        self.out = out
        self.stop = stop or threading.Event()
        self.beat = -2  # the last beat seen
        self.rejected = 0

    # -- talking to the engine

    def _status(self) -> dict[str, Any]:
        if self.stop.is_set():
            raise _Stopped
        for attempt in range(STATUS_ATTEMPTS):
            try:
                st = self.client.status(timeout_s=STATUS_TIMEOUT_S)
                break
            except EngineUnreachable:
                # UDP on loopback may still drop a datagram on a loaded machine
                if attempt == STATUS_ATTEMPTS - 1:
                    raise TourError(f"the engine did not answer /ouro/status "
                                    f"{STATUS_ATTEMPTS} times in a row") from None
        self._check(st)
        return st

    def _check(self, st: Mapping[str, Any]) -> None:
        if self.client.errors:
            raise TourError(f"the engine answered /ouro/error: {self.client.errors[0]}")
        if st["rejected"] > self.rejected:
            raise TourError(f"the engine refused something: {st['last_rejected']}")

    def _send(self, name: str, *args: Any, why: str) -> None:
        self.out(f"  tour: /ouro/{name} {' '.join(map(str, args))}  ({why})")
        error = self.client.command(name, *args)
        if error is not None:
            raise TourError(f"the engine answered /ouro/{name} with /ouro/error: {error}")
        if self.client.errors:
            raise TourError(f"the engine answered /ouro/error: {self.client.errors[0]}")

    def _show(self, shows: Callable[[Mapping[str, Any]], bool]) -> dict[str, Any]:
        """Print the status line once it ``shows`` the command just sent (the engine takes
        commands at its next block, and the server caches the status for 10 ms), or after
        0.3 s anyway."""
        deadline = time.monotonic() + 0.3
        while True:
            st = self._status()
            if shows(st) or time.monotonic() > deadline:
                break
            if self.stop.wait(POLL_S / 4):
                raise _Stopped
        self.out(beat_line(st))
        return st

    def _next_beat(self) -> dict[str, Any]:
        """Wait for the next beat boundary; its status, not printed yet."""
        while True:
            st = self._status()
            if st["beat"] != self.beat:
                self.beat = st["beat"]
                return st
            if self.stop.wait(POLL_S):
                raise _Stopped

    def _until(self, beat: int) -> dict[str, Any]:
        """Print a line per beat until ``beat`` begins; its status, not printed yet."""
        while True:
            st = self._next_beat()
            if st["beat"] == beat:
                return st
            if st["beat"] > beat:
                raise TourError(f"the tour fell behind: it saw beat {st['beat']} before beat "
                                f"{beat} (is the machine overloaded?)")
            self.out(beat_line(st))

    @staticmethod
    def _cell(st: Mapping[str, Any], column: int, row: int) -> dict[str, Any]:
        cell: dict[str, Any] = st["cells"][column][row]
        return cell

    def _expect(self, st: Mapping[str, Any], column: int, row: int, state: str,
                beats: int | None = None) -> None:
        cell = self._cell(st, column, row)
        if cell["state"] != state or (beats is not None and cell["beats"] != beats):
            want = state + (f" with {beats} beats" if beats is not None else "")
            raise TourError(f"cell ({column},{row}) should be {want} at beat {st['beat']}, "
                            f"but it is {cell['state']} with {cell['beats']} beats "
                            f"(last refusal: {st['last_rejected'] or 'none'})")

    def _session(self, name: str, *args: Any) -> None:
        msg = self.client.request(f"session/{name}", *args, reply="/ouro/session/done",
                                  timeout_s=SESSION_TIMEOUT_S)
        result = json.loads(msg.params[0])
        if not result.get("ok"):
            raise TourError(f"/ouro/session/{name} failed: {result.get('error')}")

    def _keep_loops(self) -> dict[str, Any]:
        """The engine holds loops (the last session came back): keep them as a named
        session, then start the tour from an empty matrix."""
        name = time.strftime("before the tour %Y-%m-%d %H-%M-%S")
        self.out(f"  tour: the loops already here are kept as the session {name!r} "
                 f"(/ouro/session/load brings them back)")
        self._session("save_as", name)
        self._session("new")
        deadline = time.monotonic() + SESSION_TIMEOUT_S
        while True:
            st = self._status()
            if all(cell["state"] == "empty" for column in st["cells"] for cell in column):
                return st
            if time.monotonic() > deadline:
                raise TourError("the matrix did not empty after /ouro/session/new")
            if self.stop.wait(POLL_S):
                raise _Stopped

    # -- the script

    def run(self) -> dict[str, Any]:
        """Play the tour; returns the last status. Takes about 15 beats (7.5 s)."""
        st = self._status()
        self.rejected = st["rejected"]
        # the beat under way may be nearly over: act on the next boundary, with a beat ahead
        self.beat = st["beat"]
        if any(cell["state"] != "empty" for column in st["cells"] for cell in column):
            st = self._keep_loops()
        if st["tempo"] != TOUR_TEMPO_BPM:
            self._send("tempo", TOUR_TEMPO_BPM, why="the tour plays at 120 BPM")
            self._next_beat()  # the tempo changes on a beat boundary
        self._send("click", 1, why="the click, on every beat")
        st = self._next_beat()
        start = st["beat"] + 1
        src = self.source
        src.sample_rate = st["sample_rate"]
        src.tempo_bpm = st["tempo"]
        src.origin_frame_time = st["jack"]["frame_time_origin"]
        spb = st["sample_rate"] * 60.0 / st["tempo"]
        next_frame = st["next_beat_frame"]  # the frame of beat `start`

        def frame(beat: int) -> int:
            return next_frame + round((beat - start) * spb)

        def play(phrase: int, first_beat: int) -> None:
            # The engine records what arrives `latency_frames` after a beat, as a player
            # hearing it through the card would play it; the tour's client has no latency
            # of its own, so it plays that late too, and the loop starts on its first note.
            lat = int(self._status()["latency_frames"])
            src.sections = (*src.sections, Section(frame(first_beat) + lat,
                                                   frame(first_beat + 4) + lat, phrase))

        play(0, start)
        self._send("record", 0, 0, why=f"record a first loop from beat {start}")
        self._show(lambda st: self._cell(st, 0, 0)["next_state"] == "recording")
        st = self._until(start + 3)
        self._expect(st, 0, 0, "recording")
        self._send("record", 0, 0, why="close it after 4 beats: column 0 gets 4 beats")
        self._show(lambda st: self._cell(st, 0, 0)["next_state"] == "playing")
        st = self._until(start + 7)
        self._expect(st, 0, 0, "playing", 4)
        play(1, start + 8)
        self._send("record", 0, 1, why="overdub row 1: one loop length, from column beat 0")
        self._show(lambda st: self._cell(st, 0, 1)["next_state"] == "recording")
        st = self._until(start + 12)
        self._expect(st, 0, 1, "playing", 4)
        self._send("volume", 0, 1, 0.7, why="row 1 a little quieter")
        self._show(lambda st: abs(self._cell(st, 0, 1)["volume"] - 0.7) < 1e-6)
        st = self._until(start + 13)
        for row in (0, 1):
            self._expect(st, 0, row, "playing", 4)
        self.out(beat_line(st))
        return st


# ---------------------------------------------------------------------------- the server

def open_server(name: str | None, *, out: Out, log_path: Path | None = None,
                cards: Path = Path("/proc/asound/cards")) -> tuple[str, JackServer | None]:
    """The JACK server to run on: its name, and the :class:`JackServer` if this started it.

    Uses the server answering as ``name`` (None: the default server). Otherwise starts one
    under that name (``default`` when none is given, so other JACK programs find it): with
    the ALSA driver on the first card (``hw:0``) when ALSA lists one (``cards``), falling
    back to the dummy driver if that fails; with the dummy driver when there is no card.
    Raises :class:`StartError` when no server can be started.
    """
    from rtcore.host import server_reachable

    label = name or os.environ.get("JACK_DEFAULT_SERVER") or "default"
    if server_reachable(name):
        out(f"ouro start: using the running JACK server {label!r}")
        return label, None
    try:
        if sound_card_present(cards):
            srv = JackServer(label, driver="alsa", device="hw:0",
                             period_frames=ALSA_PERIOD_FRAMES, log_path=log_path)
            try:
                srv.start()
            except JackServerError as exc:
                out(f"ouro start: the ALSA driver did not start on hw:0 ({exc}); falling "
                    f"back to the dummy driver (no sound)")
            else:
                out(f"ouro start: no JACK server answered as {label!r}; started one on the "
                    f"sound card (ALSA hw:0, {srv.sample_rate} Hz, {srv.period_frames} "
                    f"frames) (pid {srv.pid})")
                return label, srv
            why = "ALSA failed"
        else:
            why = "no sound card found"
        srv = JackServer(label, driver="dummy", period_frames=DUMMY_PERIOD_FRAMES,
                         log_path=log_path).start()
    except JackServerError as exc:
        raise StartError(str(exc)) from None
    out(f"ouro start: no JACK server answered as {label!r}; started one with the dummy "
        f"driver ({why}: nothing is audible) (pid {srv.pid})")
    return label, srv


# ---------------------------------------------------------------------------- the main job

def _install_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, handler)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}


def run_start(server: str | None = None, *, tour: bool = True, seconds: float | None = None,
              data_dir: Path | None = None, osc_port: int | None = None,
              out: Out | None = None, err: Out | None = None,
              stop: threading.Event | None = None, pedal: bool = True) -> int:
    """``ouro start``; returns the exit code: 0 after a clean run (also when stopped by
    Ctrl-C or SIGTERM), 1 when the tour or the engine failed on the way, 2 when something
    could not start.

    ``seconds`` counts from when the engine is up; the tour always plays to its end first.
    ``osc_port`` defaults to the engine's usual port (9951); 0 picks a free one.
    ``pedal``: run the emulated pedal (``ouro pedal --emulate``) as a process of its own:
    drawn in this terminal when there is one, after the tour (keys drive the footswitches,
    ``q`` ends everything), else headless from the start.
    """
    say = out or (lambda line: print(line, flush=True))
    warn = err or (lambda line: print(line, file=sys.stderr, flush=True))
    stop = stop or threading.Event()
    data = data_dir if data_dir is not None else default_data_dir()
    previous = _install_signals(stop)
    name = ""
    jackd: JackServer | None = None
    engine: EngineProcess | None = None
    client: EngineClient | None = None
    pedal_proc: subprocess.Popen[bytes] | None = None
    code = 0
    try:
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartError(f"data directory {data} is not usable: "
                             f"{exc.strerror or exc}") from None
        try:
            import rtcore.host  # noqa: F401  (libjack is loaded here)
        except (ImportError, OSError) as exc:
            raise StartError(f"the JACK library is missing ({exc}): install the jackd2 "
                             f"package (apt-get install jackd2)") from None
        name, jackd = open_server(server, out=say, log_path=data / "jackd.log")
        port = DEFAULT_OSC_PORT if osc_port is None else osc_port
        # EngineProcess passes --osc-port 0 first; a later one on the command line wins
        starting = EngineProcess(name, data, name=ENGINE_CLIENT, connect=True,
                                 extra=["--osc-port", str(port)])
        try:
            starting.start()
        except OuroError as exc:
            starting.stop()
            raise StartError(f"{exc}\n(the engine's log: {starting.log_path})") from None
        engine = starting
        ready = time.monotonic()
        client = engine.client()
        say(f"ouro start: engine running as JACK client {ENGINE_CLIENT!r} on {name!r} "
            f"(pid {engine.pid}); OSC on udp://127.0.0.1:{engine.osc_port}; data in {data}")
        # in a terminal the pedal takes the screen after the tour's lines; headless, it
        # follows the tour from the start
        terminal = sys.stdin.isatty() and sys.stdout.isatty()
        if pedal and not terminal:
            pedal_proc = _start_pedal(False, engine, data, say, stop)
        if tour and not stop.is_set():
            code = _tour(name, client, jackd, say, warn, stop)
        if code == 0 and not stop.is_set() and pedal and terminal:
            pedal_proc = _start_pedal(True, engine, data, say, stop)
        if code == 0 and not stop.is_set():
            say(f"ouro start: drive it over OSC at udp://127.0.0.1:{engine.osc_port}, e.g. "
                f"/ouro/record 1 0 (a loop in column 1), /ouro/stop 0 1, /ouro/click 0; "
                f"every address is in docs/osc.md. "
                + ("Ctrl-C stops it" if seconds is None
                   else f"Stopping {seconds:g} s after the start (Ctrl-C stops it sooner)")
                + f"; the session is saved to {data / 'session'}.")
            code = _keep_running(engine, jackd, stop, None if seconds is None
                                 else ready + seconds, warn)
    except StartError as exc:
        warn(f"ouro start: error: {exc}")
        code = 2
    except OuroError as exc:  # e.g. the engine stopped answering
        warn(f"ouro start: error: {exc}")
        code = 1
    finally:
        if client is not None:
            client.close()
        if pedal_proc is not None:
            code = _stop_pedal(pedal_proc, say, warn, code)
        code = _shut_down(engine, name, jackd, say, warn, code)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _playback_ports(client: EngineClient) -> dict[str, list[str]]:
    """Where the engine's outputs go. It connects them on start-up, but its status lists
    connections only after its first look at them (0.1 s later): wait for that a little."""
    deadline = time.monotonic() + 1.0
    while True:
        conns: dict[str, list[str]] = client.status()["jack"]["connections"]
        if any(k.startswith("out_") for k in conns) or time.monotonic() > deadline:
            return conns
        time.sleep(0.05)


def _tour(server: str, client: EngineClient, jackd: JackServer | None, say: Out, warn: Out,
          stop: threading.Event) -> int:
    """Play the tour with a JACK client of its own as the musician; the exit code so far."""
    from rtcore.host import SignalClient

    source = TourSource()
    try:
        player = SignalClient(server, TOUR_CLIENT, outputs=2, source=source)
    except OuroError as exc:
        raise StartError(f"the tour's JACK client could not start: {exc}") from None
    try:
        conns = _playback_ports(client)
        for i in (1, 2):
            port = player.port_name(f"out_{i}")
            # also straight to the card, as an instrument is heard in the room
            for dest in (f"{ENGINE_CLIENT}:in_{i}", *conns.get(f"out_{i}", [])):
                try:
                    player.connect(port, dest)
                except Exception as exc:  # SignalClient passes JACK-Client's errors on
                    raise StartError(f"the tour could not connect {port} to {dest}: "
                                     f"{exc}") from None
        say(f"ouro start: the tour: {TOUR_CLIENT!r} plays into the engine; a loop is built "
            f"in about 8 seconds at {TOUR_TEMPO_BPM:g} BPM (--no-tour skips it)")
        t0 = time.monotonic()
        try:
            Tour(client, source, out=say, stop=stop).run()
        except _Stopped:
            say("ouro start: tour interrupted")
            return 0
        except OuroError as exc:
            warn(f"ouro start: the tour failed: {exc}")
            return 1
        silent = jackd is not None and jackd.driver == "dummy"
        say(f"ouro start: tour done in {time.monotonic() - t0:.1f} s. You hear (0,0) looping "
            f"4 beats of {PHRASES[0].name} and (0,1) {PHRASES[1].name} at volume 0.7, with "
            f"the click (on the engine's click port: a third output if the card has one)"
            + ("; with the dummy driver nothing is audible, the lines above show it"
               if silent else ""))
        return 0
    finally:
        player.close()


PEDAL_LOG = "pedal.log"


def _start_pedal(terminal: bool, engine: EngineProcess, data: Path, say: Out,
                 stop: threading.Event) -> subprocess.Popen[bytes]:
    """``ouro pedal --emulate`` on the engine, in this terminal or headless; when it ends
    (``q`` in the terminal), ``stop`` is set, which ends everything."""
    mode = "terminal" if terminal else "headless"
    cmd = [sys.executable, "-m", "rtcore.cli", "pedal", "--emulate", mode,
           "--engine", f"127.0.0.1:{engine.osc_port}", "--data-dir", str(data)]
    if terminal:
        say("ouro start: the pedal, emulated in this terminal: the OLED above, the keys "
            "below it (q quits)")
        time.sleep(1.0)  # the lines above stay readable for a moment
        proc = subprocess.Popen(cmd)
    else:
        with open(data / PEDAL_LOG, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        say(f"ouro start: the pedal runs emulated, headless (no terminal here) (pid "
            f"{proc.pid}); its log: {data / PEDAL_LOG}")

    def watch() -> None:
        proc.wait()
        stop.set()

    threading.Thread(target=watch, name="ouro-start-pedal", daemon=True).start()
    return proc


def _stop_pedal(proc: subprocess.Popen[bytes], say: Out, warn: Out, code: int) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.returncode not in (0, -signal.SIGTERM):
        warn(f"ouro start: the pedal exited with code {proc.returncode}")
        return code or 1
    say(f"ouro start: pedal stopped (pid {proc.pid})")
    return code


def _keep_running(engine: EngineProcess, jackd: JackServer | None, stop: threading.Event,
                  deadline: float | None, warn: Out) -> int:
    """Wait for the end; 1 if the engine or our server died meanwhile."""
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            return 0
        proc = engine.proc
        if proc is not None and proc.poll() is not None:
            warn(f"ouro start: the engine exited with code {proc.returncode}:\n"
                 f"{engine.log_tail()}")
            return 1
        if jackd is not None and not jackd.running:
            warn(f"ouro start: the JACK server {jackd.name!r} exited; see {jackd.log_path}")
            return 1
    return 0


def _shut_down(engine: EngineProcess | None, server: str, jackd: JackServer | None,
               say: Out, warn: Out, code: int) -> int:
    if engine is not None and engine.proc is not None:
        pid = engine.pid
        manifest = engine.data_dir / "session" / "session.json"
        before = manifest.stat().st_mtime_ns if manifest.exists() else None
        rc = engine.stop()
        after = manifest.stat().st_mtime_ns if manifest.exists() else None
        if rc == 0 and after is not None and after != before:
            say(f"ouro start: engine stopped (pid {pid}); session saved to {manifest}")
        else:
            warn(f"ouro start: the engine (pid {pid}) stopped with code {rc} and "
                 f"{'saved no session' if after == before else 'a session'}:\n"
                 f"{engine.log_tail()}")
            code = code or 1
    if jackd is not None:
        pid = jackd.pid
        jackd.stop()
        say(f"ouro start: stopped the JACK server {jackd.name!r} it started (pid {pid})")
    elif server:
        say(f"ouro start: left the JACK server {server!r} running (it was there before)")
    return code


def check_seconds(seconds: float | None) -> str | None:
    """What is wrong with a ``--seconds`` value, or None.

    >>> check_seconds(-1.0)
    '--seconds must be a number of seconds >= 0, got -1'
    """
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        return f"--seconds must be a number of seconds >= 0, got {seconds:g}"
    return None
