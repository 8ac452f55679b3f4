"""``ouro play PROJECT``: the player process. It holds no UI: it plays a project through JACK
and answers a small local API on a Unix socket (``docs/player.md``).

Three kinds of work, each on its own thread so that none waits for another:

- the audio thread (JACK's), running :class:`companion.engine.player.Player`;
- the compiler: a replica of the project (fed with the document's updates) snapshotted and
  compiled into a render plan, handed to the player by reference;
- the API: asyncio on the main thread, one JSON object per line in each direction; a
  subscriber gets the transport's state and meters as a stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from companion.engine.player import Player, meters_for
from companion.errors import CompanionError

MAX_LINE = 32 * 1024 * 1024  # one request; document updates are the big ones
MAX_CLIENTS = 16
STATE_RATE_HZ = (1.0, 60.0)
BEAT_HORIZON_S = 4 * 3600  # the metronome's beats are laid out this far ahead
GC_INTERVAL_S = 2.0
SWITCH_INTERVAL_S = 0.0001


class PlayerError(CompanionError, RuntimeError):
    """The player cannot start (no JACK, a project at another rate than the server's)."""


def default_socket() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and Path(runtime).is_dir() else Path("/tmp")
    return base / f"ouro-player-{os.getuid()}.sock"


class Compiler:
    """Keeps the replica and the plan: every change of the document (local file, or updates
    from the app) leads to one compile on this thread, the newest state winning; the result
    goes to the player as a command. ``make_plan(snapshot)`` returns ``(plan, beats)``."""

    def __init__(self, player: Player, replica: Any,
                 make_plan: Callable[[Any], tuple[Any, list[tuple[int, bool]]]]):
        self.player = player
        self.replica = replica
        self.make_plan = make_plan
        self.compiles = 0
        self.last_compile_ms = 0.0
        self.last_error = ""
        self._wanted = threading.Event()
        self._stop = False
        self._lock = threading.Lock()  # the replica: updates and snapshots (never audio)
        self.thread = threading.Thread(target=self._run, name="ouro-player-compile",
                                       daemon=True)
        self.thread.start()

    def apply_update(self, update: bytes) -> None:
        with self._lock:
            self.replica.apply_update(update)
        self._wanted.set()

    def recompile(self) -> None:
        self._wanted.set()

    def _run(self) -> None:
        while not self._stop:
            self._wanted.wait()
            self._wanted.clear()
            if self._stop:
                return
            t0 = time.perf_counter()
            try:
                with self._lock:
                    snapshot = self.replica.snapshot()
                plan, beats = self.make_plan(snapshot)
            except CompanionError as exc:
                self.last_error = str(exc)  # the old plan keeps playing
                continue
            self.player.submit("plan", plan, meters_for(plan, _root_ids(snapshot)))
            self.player.set_beats(beats)
            del plan
            self.player.collect_retired()
            self.compiles += 1
            self.last_error = ""
            self.last_compile_ms = (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        self._stop = True
        self._wanted.set()
        self.thread.join(timeout=5)


class Api:
    """The socket API (see ``docs/player.md``)."""

    def __init__(self, player: Player, compiler: Compiler, sample_rate: int,
                 to_frame: Callable[[float], int], to_wn: Callable[[int], float],
                 host_status: Callable[[], dict[str, Any]]):
        self.player = player
        self.compiler = compiler
        self.sample_rate = sample_rate
        self.to_frame = to_frame
        self.to_wn = to_wn
        self.host_status = host_status
        self.clients = 0
        self.stopping = asyncio.Event()
        self.gc_status: Callable[[], dict[str, Any]] = dict

    def state(self) -> dict[str, Any]:
        snap = self.player.snapshot()
        snap["playhead_wn"] = self.to_wn(snap["playhead_frame"])
        snap["compiles"] = self.compiler.compiles
        snap["compile_ms"] = round(self.compiler.last_compile_ms, 2)
        snap["compile_error"] = self.compiler.last_error
        return snap

    def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        cmd = request.get("cmd")
        p = self.player
        if cmd == "status":
            return {"state": self.state(), "host": self.host_status(), "gc": self.gc_status()}
        if cmd == "play":
            p.submit("play")
        elif cmd == "stop":
            p.submit("stop")
        elif cmd == "locate":
            if "frame" in request:
                p.submit("locate", _int(request, "frame", 0, 1 << 40))
            else:
                p.submit("locate", self.to_frame(_wn(request, "at")))
        elif cmd == "loop":
            if request.get("clear"):
                p.submit("loop", -1, -1)
            else:
                start, end = self.to_frame(_wn(request, "start")), self.to_frame(
                    _wn(request, "end"))
                if end <= start:
                    raise ValueError(f"loop: end must be after start ({end} <= {start} frames)")
                p.submit("loop", start, end)
        elif cmd == "metronome":
            on = request.get("on")
            if not isinstance(on, bool):
                raise ValueError("metronome: 'on' must be true or false")
            p.submit("metronome", on)
        elif cmd == "update":
            data = request.get("update")
            if not isinstance(data, str):
                raise ValueError("update: 'update' must be a base64 string")
            try:
                raw = base64.b64decode(data, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"update: not base64 ({exc})") from None
            self.compiler.apply_update(raw)
        elif cmd == "reload":
            self.compiler.recompile()
        elif cmd == "quit":
            self.stopping.set()
        else:
            raise ValueError(f"unknown command {cmd!r} (status, play, stop, locate, loop, "
                             "metronome, update, reload, subscribe, quit)")
        return {}

    async def serve_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:
            writer.write(b'{"ok": false, "error": "too many clients"}\n')
            writer.close()
            return
        self.clients += 1
        streamer: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_line({"ok": False, "error": f"request longer than "
                                                              f"{MAX_LINE} bytes"}))
                    return
                reply: dict[str, Any]
                rid = None
                try:
                    request = json.loads(line)
                    rid = request.get("id") if isinstance(request, dict) else None
                    if isinstance(request, dict) and request.get("cmd") == "subscribe":
                        rate = request.get("rate_hz", 30)
                        if not (isinstance(rate, int | float)
                                and STATE_RATE_HZ[0] <= rate <= STATE_RATE_HZ[1]):
                            raise ValueError(f"subscribe: rate_hz must be {STATE_RATE_HZ[0]:g} "
                                             f"to {STATE_RATE_HZ[1]:g}")
                        if streamer is None:
                            streamer = asyncio.create_task(self._stream(writer, float(rate)))
                        reply = {}
                    else:
                        reply = self.handle(request)
                    reply = {"id": rid, "ok": True, **reply}
                except (ValueError, CompanionError) as exc:  # json errors are ValueErrors
                    reply = {"id": rid, "ok": False, "error": str(exc)}
                writer.write(_line(reply))
                await writer.drain()
        finally:
            self.clients -= 1
            if streamer is not None:
                streamer.cancel()
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, rate_hz: float) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(_line({"event": "state", **self.state()}))
                await writer.drain()
                await asyncio.sleep(1.0 / rate_hz)


def _root_ids(snapshot: dict[str, Any]) -> list[str]:
    return [str(t["id"]) for t in snapshot.get("tracks", []) if isinstance(t, dict)]


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _int(req: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = req.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{req.get('cmd')}: {key!r} must be an integer {lo} to {hi}, got {v!r}")
    return v


def _wn(req: dict[str, Any], key: str) -> float:
    v = req.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1e6:
        raise ValueError(f"{req.get('cmd')}: {key!r} must be a position in whole notes "
                         f"(0 to 1e6), got {v!r}")
    return float(v)


async def serve(api: Api, socket_path: Path, poll: Callable[[], None],
                ready: Callable[[], None] | None = None) -> None:
    """Serve the API until ``quit`` (or cancellation); ``poll`` runs ten times a second."""
    if socket_path.exists() or socket_path.is_symlink():
        mode = socket_path.lstat().st_mode
        if not stat.S_ISSOCK(mode):
            raise PlayerError(f"{socket_path} exists and is not a socket: not touching it")
        socket_path.unlink()
    old = os.umask(0o177)  # the socket is the user's alone
    try:
        server = await asyncio.start_unix_server(api.serve_client, path=str(socket_path),
                                                 limit=MAX_LINE)
    finally:
        os.umask(old)
    if ready is not None:
        ready()
    try:
        async with server:
            while not api.stopping.is_set():
                poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(api.stopping.wait(), 0.1)
    finally:
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def say(message: str) -> None:
    print(f"ouro play: {message}", file=sys.stderr, flush=True)


class Replica:
    """The player's copy of the project document: updates in, interchange snapshots out."""

    def __init__(self, project: Any):
        self.project = project

    def apply_update(self, update: bytes) -> None:
        self.project.apply_update(update)

    def snapshot(self) -> dict[str, Any]:
        return dict(self.project.to_interchange())


def open_replica(path: Path) -> tuple[Replica, Path]:
    """The project at ``path`` (a project directory or an interchange ``project.json``) as a
    replica, and the directory its pool is in."""
    from companion.model.document import Project
    from companion.model.schema import read_project_file

    if path.is_dir():
        from companion.model.persist import open_replica as open_dir

        return Replica(open_dir(path, user="player")), path
    return Replica(Project.from_interchange(read_project_file(path), user="player")), path.parent


class PlanMaker:
    """Snapshot -> (plan, metronome beats). The beats are laid out again only when the tempo
    map or the meter changed; the previous plan is handed on so unchanged tracks keep their
    effects' state and changed gains glide."""

    def __init__(self, pool: Any, sample_rate: int, block_size: int):
        self.pool = pool
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.plan: Any = None
        self._time_key: Any = None
        self._beats: list[tuple[int, bool]] = []
        self.tempo: Any = None

    def __call__(self, snapshot: dict[str, Any]) -> tuple[Any, list[tuple[int, bool]]]:
        from companion.engine.render import compile_plan
        from companion.errors import ProjectError
        from companion.model.timemap import Meter, TempoMap, meter_points, tempo_points

        rate = int(snapshot.get("sample_rate", 0))
        if rate != self.sample_rate:
            raise ProjectError("sample_rate", f"the project is at {rate} Hz and the JACK "
                               f"server at {self.sample_rate} Hz")
        plan = compile_plan(snapshot, self.pool, max_block=self.block_size,
                            previous=self.plan, realtime=True)
        key = json.dumps([snapshot.get("tempo"), snapshot.get("meter")], sort_keys=True)
        if key != self._time_key:
            tempo = TempoMap(tempo_points(snapshot["tempo"]), rate)
            meter = Meter(meter_points(snapshot["meter"]))
            horizon = tempo.position(BEAT_HORIZON_S)
            self._beats = [(tempo.frame(x), bar)
                           for x, bar in meter.beats_between(0.0, horizon)]
            self._time_key, self.tempo = key, tempo
        self.plan = plan
        return plan, self._beats


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="ouro play", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", type=Path, help="a project directory or a project.json")
    parser.add_argument("--server", help="JACK server name (default: the default server)")
    parser.add_argument("--name", default="ouro-player", help="JACK client name")
    parser.add_argument("--socket", type=Path, help=f"the API's Unix socket (default: "
                        f"{default_socket()})")
    parser.add_argument("--no-connect", action="store_true",
                        help="do not connect to the sound card's playback ports")
    parser.add_argument("--play", action="store_true", help="start playing at once")
    parser.add_argument("--backend", choices=("auto", "jack", "portaudio"), default="auto",
                        help="JACK, or PortAudio where there is no JACK server (auto: JACK "
                        "if a server answers)")
    parser.add_argument("--device", help="PortAudio: the output device (name or number)")
    parser.add_argument("--block-size", type=int, default=256,
                        help="PortAudio: frames per block (JACK's is the server's)")
    args = parser.parse_args(argv)
    if not 16 <= args.block_size <= 8192:
        parser.error(f"--block-size must be 16..8192, got {args.block_size}")
    from companion.engine.pool import Pool
    from companion.engine.portaudio_host import PortAudioError, PortAudioHost
    from companion.errors import CompanionError
    from rtcore.host import HostError, JackHost
    from rtcore.live import GcGuard

    try:
        replica, pool_dir = open_replica(args.project)
        rate = int(replica.snapshot()["sample_rate"])
    except (CompanionError, OSError) as exc:
        say(f"cannot open {args.project}: {exc}")
        return 2
    host: Any = None
    if args.backend in ("auto", "jack"):
        try:
            host = JackHost(args.server, args.name, connect=not args.no_connect)
        except HostError as exc:
            if args.backend == "jack":
                say(f"no JACK server: {exc}")
                return 1
            say(f"no JACK server ({exc}): PortAudio instead")
    if host is None:
        try:
            host = PortAudioHost(rate, args.block_size, args.device, args.name)
        except PortAudioError as exc:
            say(str(exc))
            return 1
    pool = Pool(pool_dir, host.sample_rate)
    player = Player(host.sample_rate, host.blocksize)
    maker = PlanMaker(pool, host.sample_rate, host.blocksize)
    try:
        plan, beats = maker(replica.snapshot())
    except CompanionError as exc:
        say(f"cannot play {args.project}: {exc}")
        host.close()
        pool.close()
        return 2
    player.submit("plan", plan, meters_for(plan, _root_ids(replica.snapshot())))
    player.set_beats(beats)
    if args.play:
        player.submit("play")
    compiler = Compiler(player, replica, maker)
    try:
        host.attach(player)
    except CompanionError as exc:
        say(str(exc))
        compiler.close()
        host.close()
        pool.close()
        return 1

    def to_frame(x: float) -> int:
        return int(maker.tempo.frame(x))

    def to_wn(frame: int) -> float:
        return float(maker.tempo.position_of_frame(frame))

    api = Api(player, compiler, host.sample_rate, to_frame, to_wn, host.status)
    path = args.socket or default_socket()

    # as in the engine: nothing built so far is scanned again, no automatic collection
    # (it would stop whichever thread allocates, the audio one too); a young-generation
    # collection from here every few seconds; other threads give up the GIL within 0.1 ms
    guard = GcGuard(lambda: host.audio_thread)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    next_gc = time.monotonic() + GC_INTERVAL_S

    def poll() -> None:
        nonlocal next_gc
        host.poll()
        player.collect_retired()
        if time.monotonic() >= next_gc:
            guard.collect()
            next_gc = time.monotonic() + GC_INTERVAL_S

    api.gc_status = guard.status
    try:
        with guard:
            asyncio.run(serve(api, path, poll,
                              ready=lambda: say(f"playing {args.project} through "
                                                f"{host.status().get('backend', 'JACK')} at "
                                                f"{host.sample_rate} Hz / {host.blocksize}; "
                                                f"API on {path}")))
    except KeyboardInterrupt:
        pass
    except PlayerError as exc:
        say(str(exc))
        return 1
    finally:
        compiler.close()
        host.close()
        pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
