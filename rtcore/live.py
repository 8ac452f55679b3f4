"""``ouro engine``: the looper live on JACK, driven over OSC.

One process: JACK's process thread runs the engine, the I/O thread does the slow work, the
OSC thread takes commands, and the main thread supervises (JACK latency and connections,
losing and finding the server, garbage collection at its own times). The garbage collector
is frozen and disabled once everything is built, so it can never start inside the audio
callback; the main thread collects the young generations every few seconds and times it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import math
import os
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rtcore.commands import Command, parse_args
from rtcore.config import EngineConfig
from rtcore.engine import Engine
from rtcore.errors import CommandError, ConfigError, OuroError
from rtcore.ioside import IOSide, IOThread
from rtcore.midimap import MidiMap, binding_from_message, configured_map, load_map
from rtcore.recorder import Recorder, RecorderConfig
from rtcore.session import write_json_atomic, write_text_atomic
from rtcore.store import LOOP_FORMATS, SessionKeeper, save_session

DEFAULT_OSC_PORT = 9951
PEDAL_DATA_DIR = Path("/var/lib/ouroboros")


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/ouroboros``, else ``~/.local/share/ouroboros``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ouroboros"


@dataclass(frozen=True)
class LiveSettings:
    """Everything ``ouro engine`` is told: engine settings plus JACK, OSC and process ones."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    server: str | None = None
    client_name: str = "ouroboros"
    connect: bool = True
    connections: dict[str, list[str]] = field(default_factory=dict)
    osc_host: str = "127.0.0.1"
    osc_port: int = DEFAULT_OSC_PORT
    osc_max_rate: float = 2000.0
    data_dir: Path = field(default_factory=default_data_dir)
    switch_interval_ms: float = 0.1
    gc_interval_s: float = 5.0
    cpu_wakeup_latency_us: int = 0  # -1 leaves the CPUs' idle states alone
    lock_memory: bool = True
    session_format: str = "wav"  # loop files: "wav" (float, bit-exact) or "flac" (24-bit)
    recorder: RecorderConfig = field(default_factory=RecorderConfig)


_TABLES: dict[str, dict[str, tuple[str, type | tuple[type, ...]]]] = {
    # table -> key -> (LiveSettings field, accepted types)
    "jack": {"server": ("server", str), "client_name": ("client_name", str),
             "connect": ("connect", bool), "connections": ("connections", dict)},
    "osc": {"host": ("osc_host", str), "port": ("osc_port", int),
            "max_rate": ("osc_max_rate", (int, float))},
    "process": {"data_dir": ("data_dir", str), "switch_interval_ms": ("switch_interval_ms",
                (int, float)), "gc_interval_s": ("gc_interval_s", (int, float)),
                "cpu_wakeup_latency_us": ("cpu_wakeup_latency_us", int),
                "lock_memory": ("lock_memory", bool)},
    "session": {"format": ("session_format", str)},
}
_FROM_SERVER = ("sample_rate", "block_size")


def load_settings(path: Path | None, **overrides: Any) -> LiveSettings:
    """Read a TOML config file (or none) and apply command-line overrides (None = unset).

    Every problem names the file, the table and the key.
    """
    values: dict[str, Any] = {}
    engine_table: dict[str, Any] = {}
    if path is not None:
        where = str(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such config file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
        unknown = sorted(set(doc) - {"engine", "recorder", *_TABLES})
        if unknown:
            raise ConfigError(f"{where}: unknown table(s) {', '.join(map(repr, unknown))} "
                              f"(known: engine, recorder, {', '.join(_TABLES)})")
        for name, table in doc.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: [{name}] must be a table")
        engine_table = dict(doc.get("engine", {}))
        for key in _FROM_SERVER:
            if key in engine_table:
                raise ConfigError(f"{where}: [engine] {key} comes from the JACK server; "
                                  f"set it on jackd instead")
        for name, spec in _TABLES.items():
            table = doc.get(name, {})
            extra = sorted(set(table) - set(spec))
            if extra:
                raise ConfigError(f"{where}: [{name}] unknown key(s) "
                                  f"{', '.join(map(repr, extra))} (known: {', '.join(spec)})")
            for key, value in table.items():
                attr, types = spec[key]
                if isinstance(value, bool) and bool not in (
                        types if isinstance(types, tuple) else (types,)):
                    raise ConfigError(f"{where}: [{name}] {key} must be "
                                      f"{_type_words(types)}, got {value!r}")
                if not isinstance(value, types):
                    raise ConfigError(f"{where}: [{name}] {key} must be "
                                      f"{_type_words(types)}, got {value!r}")
                values[attr] = value
        values["engine"] = EngineConfig.from_mapping(engine_table, f"{where}: [engine]")
        values["recorder"] = RecorderConfig.from_mapping(doc.get("recorder", {}),
                                                         f"{where}: [recorder]")
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    where = str(path) if path is not None else "settings"
    conns = values.get("connections", {})
    for port, others in conns.items():
        if not (isinstance(others, list) and all(isinstance(o, str) for o in others)):
            raise ConfigError(f"{where}: [jack.connections] {port} must be a list of port "
                              f"names, got {others!r}")
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"]).expanduser()
    settings = LiveSettings(**values)
    _check_settings(settings, where)
    return settings


def _type_words(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", float: "a number",
             dict: "a table"}
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in ts)


def _check_settings(s: LiveSettings, where: str) -> None:
    if not 0 <= s.osc_port <= 65535:
        raise ConfigError(f"{where}: OSC port must be 0..65535, got {s.osc_port}")
    if not (math.isfinite(s.osc_max_rate) and 10 <= s.osc_max_rate <= 100000):
        raise ConfigError(f"{where}: [osc] max_rate must be 10..100000 messages/s, "
                          f"got {s.osc_max_rate}")
    if not (math.isfinite(s.switch_interval_ms) and 0.05 <= s.switch_interval_ms <= 10):
        raise ConfigError(f"{where}: [process] switch_interval_ms must be 0.05..10, "
                          f"got {s.switch_interval_ms}")
    if not (math.isfinite(s.gc_interval_s) and 0.1 <= s.gc_interval_s <= 3600):
        raise ConfigError(f"{where}: [process] gc_interval_s must be 0.1..3600, "
                          f"got {s.gc_interval_s}")
    if not -1 <= s.cpu_wakeup_latency_us <= 1_000_000:
        raise ConfigError(f"{where}: [process] cpu_wakeup_latency_us must be -1 (off) or "
                          f"0..1000000, got {s.cpu_wakeup_latency_us}")
    if not s.client_name or len(s.client_name) > 60:
        raise ConfigError(f"{where}: client name must be 1..60 characters")
    if s.session_format not in LOOP_FORMATS:
        raise ConfigError(f"{where}: [session] format must be one of "
                          f"{', '.join(LOOP_FORMATS)}, got {s.session_format!r}")


def prepare_data_dir(path: Path) -> Path:
    """Create the data directory and prove it is writable, or say why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".ouro-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"data directory {path} is not usable: {exc.strerror or exc}") from None
    return path


class CpuWakeupGuard:
    """Asks the kernel to keep every CPU able to wake within ``limit_us`` while it is held.

    A CPU that sleeps in a deep idle state takes long to wake, and after the sleep its
    caches and branch predictors are cold: JACK's next cycle starts late and runs slow. On a
    virtual machine an idle vCPU is halted by the hypervisor, which costs far more. Linux's
    PM QoS interface (``/dev/cpu_dma_latency``) holds the request for as long as the file
    stays open, so it ends with the process however the process ends. ``limit_us`` -1 asks
    for nothing. Without the right to open the file (it is root's unless the image grants
    it to the audio group) the engine runs on and the status says why.
    """

    DEVICE = Path("/dev/cpu_dma_latency")

    def __init__(self, limit_us: int, device: Path | None = None) -> None:
        self.limit_us = limit_us
        self.device = device or self.DEVICE
        self._fd: int | None = None
        self.error: str | None = None

    def __enter__(self) -> CpuWakeupGuard:
        if self.limit_us < 0:
            return self
        try:
            fd = os.open(self.device, os.O_WRONLY)
        except OSError as exc:
            self.error = f"cannot open {self.device}: {exc.strerror or exc}"
            return self
        try:
            os.write(fd, self.limit_us.to_bytes(4, sys.byteorder, signed=True))
        except OSError as exc:
            os.close(fd)
            self.error = f"cannot write {self.device}: {exc.strerror or exc}"
            return self
        self._fd = fd
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def status(self) -> dict[str, Any]:
        return {"requested_us": self.limit_us, "held": self.held, "error": self.error}


class MemoryLock:
    """Locks the memory the process has mapped once it is built (``mlockall(MCL_CURRENT)``):
    code, libraries, the engine's buffers and JACK's, so nothing the audio thread touches is
    paged out under memory pressure.

    Later mappings are deliberately not locked (no ``MCL_FUTURE``): a locked mapping is
    faulted in whole when it is made, and numpy allocates while holding the GIL, so a new
    15 MB column stack would keep the audio thread waiting for milliseconds. The I/O side
    writes every new buffer (chunks when it stocks them, stacks when it fills them) before
    the audio thread gets it, so those pages are in place by then.
    """

    MCL_CURRENT = 1

    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted
        self.held = False
        self.error: str | None = None

    def __enter__(self) -> MemoryLock:
        if not self.wanted:
            return self
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(self.MCL_CURRENT) != 0:
            self.error = (f"mlockall failed: {os.strerror(ctypes.get_errno())} (the engine's "
                          f"user needs an unlimited memlock limit)")
            return self
        self.held = True
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.held:
            ctypes.CDLL(None).munlockall()
            self.held = False

    def status(self) -> dict[str, Any]:
        return {"wanted": self.wanted, "held": self.held, "error": self.error}


class GcGuard:
    """Keeps the garbage collector out of the audio callback, and proves it.

    Everything built before the performance is frozen (never scanned again); automatic
    collection is off; :meth:`collect` runs the young generations from the main thread and
    times each pause. A gc callback counts any collection that would start in the audio
    thread: the status shows it, the tests require zero.
    """

    def __init__(self, audio_thread: Any) -> None:
        self._audio_thread = audio_thread  # callable -> ident of the audio thread
        self.collections = 0
        self.collected = 0
        self.in_audio_thread = 0
        self.max_pause_us = 0
        self.last_pause_us = 0
        self.frozen = 0

    def __enter__(self) -> GcGuard:
        gc.collect()
        gc.freeze()
        gc.disable()
        # counted once: gc.get_freeze_count() walks every frozen object (milliseconds of GIL)
        self.frozen = gc.get_freeze_count()
        gc.callbacks.append(self._watch)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._watch)
        gc.unfreeze()
        gc.enable()

    def _watch(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start" and threading.get_ident() == self._audio_thread():
            self.in_audio_thread += 1

    def collect(self) -> None:
        t0 = time.perf_counter_ns()
        self.collected += gc.collect(1)
        us = (time.perf_counter_ns() - t0) // 1000
        self.collections += 1
        self.last_pause_us = us
        self.max_pause_us = max(self.max_pause_us, us)

    def status(self) -> dict[str, Any]:
        return {"automatic": gc.isenabled(), "frozen_objects": self.frozen,
                "collections": self.collections, "collected": self.collected,
                "max_pause_us": self.max_pause_us, "last_pause_us": self.last_pause_us,
                "in_audio_thread": self.in_audio_thread}


LEARNED_MAP = "midi_map.toml"  # in the data directory: the map with learned bindings


class MidiMapKeeper:
    """The MIDI map in use: the configured one, or the learned one kept in the data
    directory, which supersedes it until ``/ouro/midi/reset``. Learning arms the engine to
    catch the next note, controller or program change; :meth:`poll` (main thread) turns what
    it caught into a binding, saves the map and answers the one who asked."""

    def __init__(self, engine: Engine, configured: str, data_dir: Path):
        self.engine = engine
        self.configured = configured
        self.path = data_dir / LEARNED_MAP
        self.problem = ""
        self.map = self._configured()
        if self.path.exists():
            try:
                self.map = load_map(self.path, columns=engine.ncols, rows=engine.nrows)
            except ConfigError as exc:
                self.problem = f"{exc}; using the configured map instead"
        engine.midi_map = self.map.table
        self._pending: tuple[Command, Any, int] | None = None

    def _configured(self) -> MidiMap:
        eng = self.engine
        return configured_map(self.configured, columns=eng.ncols, rows=eng.nrows)

    def request(self, name: str, args: list[Any], reply: Any) -> bytes:
        from rtcore.osc import osc_text

        eng = self.engine
        if name == "learn":
            if not args or not isinstance(args[0], str):
                raise CommandError("midi/learn: takes a command and its arguments, "
                                   "e.g. /ouro/midi/learn record 0 0")
            cmd = parse_args(args[0], args[1:], columns=eng.ncols, rows=eng.nrows)
            self._pending = (cmd, reply, eng.learn_seq)
            eng.learn_armed = True
            return osc_text("/ouro/midi/learning", f"send the note, controller or program "
                            f"change to bind to {cmd.name}")
        if args:
            raise CommandError(f"midi/{name}: takes no arguments, got {len(args)}")
        if name == "unlearn":
            eng.learn_armed = False
            self._pending = None
            return osc_text("/ouro/midi/learning", "off")
        if name == "reset":
            self.path.unlink(missing_ok=True)
            self.map = self._configured()
            eng.midi_map = self.map.table
            self.problem = ""
        return osc_text("/ouro/midi/map", self.map.to_toml())

    def poll(self) -> None:
        from rtcore.osc import osc_text

        pending = self._pending
        eng = self.engine
        if pending is None or eng.learn_seq == pending[2]:
            return
        self._pending = None
        cmd, reply, _ = pending
        size, status, number, value = eng.learned
        message = bytes((status, number, value)[:size])
        try:
            binding = binding_from_message(message, cmd)
        except OuroError as exc:
            reply(osc_text("/ouro/error", f"midi/learn: {exc}"))
            return
        self.map = self.map.with_binding(binding)
        eng.midi_map = self.map.table  # one reference: the audio thread sees old or new
        try:
            write_text_atomic(self.path, self.map.to_toml())
            saved = ""
        except OSError as exc:
            saved = f" (not saved: {exc})"
        reply(osc_text("/ouro/midi/learned", binding.describe() + saved))

    def status(self) -> dict[str, Any]:
        return {"source": str(self.path) if self.path.exists() else self.configured,
                "bindings": len(self.map.bindings), "problem": self.problem}


class LiveEngine:
    """The running engine as the OSC server sees it (the ``Controller`` protocol)."""

    def __init__(self, engine: Engine, host: Any, settings: LiveSettings):
        self.engine = engine
        self.host = host
        self.settings = settings
        self.columns = engine.ncols
        self.rows = engine.nrows
        self.osc: Any = None
        self.gc: GcGuard | None = None
        self.wakeup: CpuWakeupGuard | None = None
        self.memory: MemoryLock | None = None
        self.started = time.time()
        self.midi_map = MidiMapKeeper(engine, settings.engine.midi_map, settings.data_dir)
        self.keeper: SessionKeeper | None = None
        self.io: IOSide | None = None
        self.recorder: Recorder | None = None

    def submit(self, cmd: Command) -> None:
        self.engine.submit(cmd)

    def command_marks(self) -> tuple[int, int]:
        return self.engine.commands_submitted, self.engine.commands_taken

    def midi_request(self, name: str, args: list[Any], reply: Any) -> bytes:
        return self.midi_map.request(name, args, reply)

    def session_request(self, name: str, args: list[Any], reply: Any) -> bytes:
        """``/ouro/session/<name>``: answered now with ``/ouro/session`` (JSON), and, for
        the queued ones, with ``/ouro/session/done`` when the I/O thread has done it."""
        from rtcore.osc import osc_text

        if self.keeper is None:
            raise CommandError(f"session/{name}: sessions are not kept")
        try:
            now = self.keeper.request(name, args, lambda result: reply(
                osc_text("/ouro/session/done", json.dumps(result))))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return osc_text("/ouro/session", json.dumps(now))

    def recorder_request(self, name: str, args: list[Any], reply: Any) -> bytes:
        """``/ouro/recorder/start`` and ``/ouro/recorder/stop``: answered with the
        recorder's status (JSON) once done (stopping finishes the files)."""
        from rtcore.osc import osc_text

        if args:
            raise CommandError(f"recorder/{name}: takes no arguments, got {len(args)}")
        if self.recorder is None:
            raise CommandError(f"recorder/{name}: there is no session recorder")
        if name == "start":
            self.recorder.start()
        else:
            self.recorder.stop()
        return osc_text("/ouro/recorder", json.dumps(self.recorder.status()))

    def status(self) -> dict[str, Any]:
        doc = self.engine.status()
        host = self.host.status()
        doc["block_size"] = host["blocksize"]
        doc["callback"] = host.pop("callback")
        doc["jack"] = host
        doc["latency_frames"] = self.engine.latency_frames
        doc["midi"]["map"] = self.midi_map.status()
        doc["midi"]["in"]["dropped"] = self.host.midi_in.dropped
        if self.keeper is not None:
            doc["session"] = self.keeper.status()
        if self.io is not None:
            doc["pool"]["consolidate_ms"] = round(self.io.consolidate_ms, 2)
        if self.recorder is not None:
            doc["recorder"] = self.recorder.status()
        doc["osc"] = self.osc.stats() if self.osc is not None else {}
        doc["gc"] = self.gc.status() if self.gc is not None else {}
        doc["process"] = {"pid": os.getpid(), "uptime_s": round(time.time() - self.started, 1),
                          "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
                          "data_dir": str(self.settings.data_dir),
                          "cpu_wakeup": self.wakeup.status() if self.wakeup else {},
                          "memory_lock": self.memory.status() if self.memory else {}}
        return doc

    def status_json(self) -> str:
        return json.dumps(self.status())


def run_engine(settings: LiveSettings, *, ready: Any = None,
               stop: threading.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or ``stop``); returns the exit code."""
    from rtcore.host import HostError, JackHost
    from rtcore.jitcache import prune_engine_cache
    from rtcore.osc import OscServer

    out = ready or (lambda line: print(line, flush=True))
    data_dir = prepare_data_dir(settings.data_dir)
    host = JackHost(settings.server, settings.client_name, channels=settings.engine.channels,
                    connect=settings.connect, connections=settings.connections)
    try:
        cfg = dataclasses.replace(settings.engine, sample_rate=host.sample_rate,
                                  block_size=host.blocksize)
    except ConfigError as exc:
        host.close()
        raise HostError(f"the JACK server's settings don't suit the engine: {exc}") from None
    # a power cut can leave numba's cache of our kernels damaged: the first call would fail
    for problem in prune_engine_cache():
        out(f"ouro engine: {problem}")
    engine = Engine(cfg)
    keeper = SessionKeeper(engine, data_dir, settings.session_format)
    restored = keeper.restore()  # before the audio starts: installed directly
    for problem in restored.problems:
        out(f"ouro engine: session: {problem}")
    io = IOSide(engine, keeper)
    io.service()  # the pool stocked, the restored columns stacked
    io_thread = IOThread(io)
    live = LiveEngine(engine, host, settings)
    live.keeper = keeper
    live.io = io
    channels = settings.engine.channels
    recorder = Recorder(settings.recorder, data_dir / "recordings",
                        sample_rate=host.sample_rate, in_channels=channels,
                        out_channels=channels)
    engine.attach_recorder(recorder.ring_array, recorder.cursors)
    live.recorder = recorder
    try:
        osc = OscServer(live, settings.osc_host, settings.osc_port,
                        max_rate=settings.osc_max_rate)
    except OuroError:
        host.close()
        raise
    live.osc = osc
    stop = stop or threading.Event()
    previous = _install_signals(stop)
    guard = GcGuard(lambda: host.audio_thread)
    live.gc = guard
    wakeup = CpuWakeupGuard(settings.cpu_wakeup_latency_us)
    live.wakeup = wakeup
    memory = MemoryLock(settings.lock_memory)
    live.memory = memory
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    io_thread.start()
    with memory, guard, wakeup:
        host.attach(engine)
        if settings.recorder.autostart:
            recorder.start()
        osc.start()
        info = {"pid": os.getpid(), "osc_host": settings.osc_host, "osc_port": osc.port,
                "server": settings.server or "default", "client": settings.client_name}
        write_json_atomic(data_dir / "engine.json", info)
        out(f"ouro engine: running as JACK client {settings.client_name!r} on server "
            f"{settings.server or 'default'!r} ({host.sample_rate} Hz, {host.blocksize} "
            f"frames); OSC on udp://{settings.osc_host}:{osc.port}; data in {data_dir}")
        next_gc = time.monotonic() + settings.gc_interval_s
        try:
            while not stop.wait(0.1):
                state = host.state
                host.poll()
                if host.state != state:
                    out(f"ouro engine: JACK {host.state}"
                        + (f" ({host.lost_reason})" if host.state == "lost" else ""))
                live.midi_map.poll()
                if time.monotonic() >= next_gc:
                    guard.collect()
                    next_gc = time.monotonic() + settings.gc_interval_s
        finally:
            osc.stop()
            host.close()
            io_thread.stop()
            recorder.stop()  # the ring drained, the files' headers final
    try:
        # signals stay caught until the loops are on disk: a second Ctrl-C must not lose them
        io.service()
        manifest = save_session(engine, data_dir / "session", keeper.files,
                                settings.session_format)
        (data_dir / "engine.json").unlink(missing_ok=True)
    finally:
        _restore_signals(previous)
    out(f"ouro engine: stopped; session saved to {manifest}")
    return 0


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: Mapping[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
