"""``ouro engine`` live on a real ``jackd -d dummy``, driven over real OSC on loopback.

Each test module run starts its own JACK server under a unique name and stops it; engines
run as child processes (as on the pedal). A :class:`SignalClient` plays a signal whose every
sample names its JACK frame time into the engine, another records the engine's outputs, so
a loop that comes back can be checked sample by sample at the right offset.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtcore.client import EngineClient, EngineProcess, EngineUnreachable
from rtcore.host import SignalClient, probe_signal
from rtcore.jackd import JackServer, unique_server_name
from rtcore.osc import STATUS_CACHE_S

pytestmark = pytest.mark.jack

SPB = 24000  # 120 BPM at 48 kHz
CAPTURE_LATENCY = 100
PLAYBACK_LATENCY = 28
EXACT_CONFIG = """
[engine]
declick_ms = 0
smoothing_ms = 0
[process]
gc_interval_s = 0.5
"""


def wait_until(check: Callable[[], Any], timeout_s: float = 10.0, step_s: float = 0.05,
               describe: Callable[[], Any] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; last seen: {describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {check}{seen}")
        time.sleep(step_s)


@pytest.fixture(scope="module")
def server() -> Iterator[JackServer]:
    with JackServer(unique_server_name("test-live"), period_frames=256) as srv:
        yield srv


def start_engine(server_name: str, tmp_path: Path, config: str = EXACT_CONFIG,
                 extra: list[str] | None = None) -> EngineProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "engine.toml"
    cfg.write_text(config)
    return EngineProcess(server_name, tmp_path / "data",
                         extra=["--config", str(cfg), *(extra or [])]).start()


class EngineRig:
    """An engine process and an OSC client for it."""

    def __init__(self, server_name: str, tmp_path: Path, config: str = EXACT_CONFIG):
        self.server_name = server_name
        self.engine = start_engine(server_name, tmp_path, config)
        self.osc = self.engine.client()

    def status(self) -> dict[str, Any]:
        return self.osc.status()

    def command(self, name: str, *args: Any) -> None:
        error = self.osc.command(name, *args)
        assert error is None, f"{name} {args}: {error}"


class Rig(EngineRig):
    """An engine with a player on its inputs and a recorder on its outputs and click."""

    def __init__(self, server_name: str, tmp_path: Path):
        super().__init__(server_name, tmp_path)
        self.player: SignalClient | None = None
        self.recorder: SignalClient | None = None
        self.last_mismatches: list[int] = []  # a sample of the frame times that differed
        self.last_positions: list[int] = []  # ... and their positions in the loop
        self.last_coverage = 0  # how many of the loop's positions the last check saw
        self.attach_clients()

    def attach_clients(self, connect: bool = True) -> None:
        self.player = SignalClient(self.server_name, "player", outputs=2,
                                   capture_latency=CAPTURE_LATENCY)
        self.recorder = SignalClient(self.server_name, "recorder", inputs=3,
                                     record_seconds=40, playback_latency=PLAYBACK_LATENCY)
        if not connect:
            return
        for i in (1, 2):
            self.player.connect(f"player:out_{i}", f"ouroboros:in_{i}")
            self.recorder.connect(f"ouroboros:out_{i}", f"recorder:in_{i}")
        self.recorder.connect("ouroboros:click", "recorder:in_3")
        # the engine reads JACK's latencies a few times a second
        wait_until(lambda: self.status()["latency_frames"]
                   == self.player.capture_latency + self.recorder.playback_latency)

    def close_clients(self) -> None:
        for c in (self.player, self.recorder):
            if c is not None:
                c.close()
        self.player = self.recorder = None

    def trouble(self) -> int:
        """Every cycle whose JACK frame time was not the expected one, in the engine, the
        player or the recorder, and every xrun the server reported: missed cycles on a busy
        machine spoil sample-exactness, as they would on stage, and a window with any of
        them is not judged. (A client that finishes too late shows only in the server's
        report: the engine may then read a half-written input block.) The engine's part is
        read fresh, past the status cache, so that no anomaly before this call is left out."""
        time.sleep(2 * STATUS_CACHE_S)
        st = self.status()
        assert self.player is not None and self.recorder is not None
        return (st["jack"]["frame_time_anomalies"] + self.player.clock.anomalies
                + self.recorder.clock.anomalies + self.recorder.xruns)

    def diagnosis(self) -> str:
        st = self.status()
        clocks = {c.client.name: list(c.clock.events) for c in (self.player, self.recorder)
                  if c is not None}
        jk = st["jack"]
        return (f"engine xruns {st['xruns']} ({st['missed_frames']} frames missed), server "
                f"xruns {jk['xruns_reported']}, callback errors {st['callback']['errors']} "
                f"{st['callback']['last_error']!r}, engine frame time anomalies "
                f"{jk['frame_time_anomalies']}, the last as (read, expected, gap) "
                f"{jk['frame_time_events']} (over {jk['reconnects'] + 1} JACK server(s)); "
                f"test clients {clocks}")

    def close(self) -> None:
        self.close_clients()
        self.osc.close()
        self.engine.stop()


@pytest.fixture
def rig(server: JackServer, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(server.name, tmp_path)
    try:
        yield r
    finally:
        r.close()


def start_recording(rig: Rig, column: int = 0, row: int = 0) -> None:
    rig.command("record", column, row)
    wait_until(lambda: rig.status()["cells"][column][row]["state"] == "recording")


def close_recording(rig: Rig, column: int = 0, row: int = 0) -> dict[str, Any]:
    """Close a first recording; returns the cell's status once it plays."""
    rig.command("record", column, row)
    return wait_until(lambda: (c := rig.status()["cells"][column][row])["state"] == "playing"
                      and c)


def record_first_loop(rig: Rig, column: int = 0, row: int = 0, beats: int = 4) -> dict[str, Any]:
    """Record a first loop of about ``beats`` beats; returns the cell's status."""
    start_recording(rig, column, row)
    time.sleep(beats * 0.5 - 0.25)
    return close_recording(rig, column, row)


def check_loop_output(rig: Rig, length: int, latency: int, origin_rec: int,
                      f0: int | None = None, since_ft: int = 0,
                      until_ft: int | None = None) -> tuple[int, int, int]:
    """Compare every recorded output frame from the loop's first play on (or from
    ``since_ft``), up to ``until_ft`` (inclusive) when given, with the input the loop was
    recorded from. Returns (frames checked, mismatches, the engine frame F0 where the
    recording began).

    ``origin_rec`` is the JACK frame time of engine frame 0 when the loop was recorded; the
    current origin maps the recorder's frame times to engine frames. Without ``f0``, the
    first frame that is not silent is where the loop started playing, ``length`` after F0.
    """
    st = rig.status()
    origin = st["jack"]["frame_time_origin"]
    assert rig.recorder is not None
    n = rig.recorder.write
    ft = rig.recorder.recorded_ft[: min(n, rig.recorder.recorded_ft.shape[0])]
    ys = rig.recorder.recorded[: ft.shape[0]]
    sel = ft >= since_ft
    if until_ft is not None:
        sel &= ft <= until_ft
    ft, ys = ft[sel], ys[sel]
    order = np.argsort(ft)
    ft, ys = ft[order], ys[order]
    if f0 is None:
        first = np.flatnonzero(ys[:, 0])
        assert first.size, "the loop never came out"
        g1 = int(ft[first[0]])  # the first frame the loop played ...
        f0 = ((g1 - origin) & 0xFFFFFFFF) - length  # ... one length after it began
    else:
        g1 = since_ft
    play = ft >= g1
    # JACK frame times are 32-bit and origins wrap (a new server starts from 0)
    engine_frames = (ft[play] - origin) & 0xFFFFFFFF
    pos = (engine_frames - f0) % length
    src = (origin_rec + f0 + latency + pos) & 0xFFFFFFFF
    mismatches = 0
    bad_ft: list[int] = []
    bad_pos: list[int] = []
    for ch in (0, 1):
        expected = probe_signal(src.astype(np.int64), ch)
        wrong = ys[play, ch] != expected
        mismatches += int(np.count_nonzero(wrong))
        bad_ft.extend(int(x) for x in ft[play][wrong][::64])
        bad_pos.extend(int(x) for x in pos[wrong][::64])
    rig.last_mismatches = sorted(set(bad_ft))[:40]
    rig.last_positions = sorted(set(bad_pos))[:40]
    rig.last_coverage = int(np.unique(pos).size)
    return int(play.sum()), mismatches, f0


def check_clean_window(rig: Rig, length: int, latency: int, origin: int, f0: int,
                       tries: int = 6) -> tuple[int, int]:
    """Check the loop's output one loop length at a time until a window is exact: on a
    busy machine a missed cycle spoils its window, as it would on stage. A wrong sample in
    a window without any missed cycle fails at once; when every one of ``tries`` windows
    had missed cycles, the machine was too busy to judge and the test is skipped, naming
    them.

    The count of missed cycles is read before the window's first frame and after its
    last one (:meth:`Rig.trouble` reads past the status cache), so a miss that touched
    the window is always counted in it. The loop itself must have been judged first
    (:func:`record_judged_loop`): a hole recorded in it would be in every window."""
    seen = []
    for _ in range(tries):
        assert rig.recorder is not None
        trouble0 = rig.trouble()
        since = rig.recorder.latest_frame_time() + 1
        time.sleep(length / 48000 + 0.3)
        until = rig.recorder.latest_frame_time()
        anomalies = rig.trouble() - trouble0
        checked, bad, _ = check_loop_output(rig, length, latency, origin, f0=f0,
                                            since_ft=since, until_ft=until)
        if bad == 0 and checked > length // 2:
            return checked, bad
        assert anomalies, (f"{bad} of {checked} samples differ in an undisturbed window "
                           f"(frame times {rig.last_mismatches} ..., loop positions "
                           f"{rig.last_positions[:8]} of {length}); {rig.diagnosis()}")
        seen.append(f"{bad} of {checked} differ, {anomalies} missed cycles")
    # every window was disturbed: the machine is too busy to judge, which is not a pass
    pytest.skip(f"every window had missed cycles ({'; '.join(seen)}); {rig.diagnosis()}")


class JudgedLoop:
    """A first loop whose whole first pass was compared with its input, sample by sample."""

    def __init__(self, rig: Rig, cell: dict[str, Any], origin: int, latency: int, f0: int):
        self.rig = rig
        self.cell = cell
        self.length: int = cell["length_frames"]
        self.origin = origin  # JACK frame time of engine frame 0 while it was recorded
        self.latency = latency
        self.f0 = f0  # the engine frame where the recording began


def record_judged_loop(make_rig: Callable[[int], Rig], tries: int = 4) -> JudgedLoop:
    """Record a first loop of 4 beats on a rig from ``make_rig(attempt)`` and judge its
    first pass: it must come back exactly as it came in, shifted by the announced round
    trip, starting on a beat. A recording during which a cycle was missed (by the engine,
    the player, the recorder, or the server) holds that gap's silence, as the spec says,
    and would spoil every later window: it is thrown away with its rig and recorded again.
    A wrong sample from an undisturbed recording fails; if every attempt was disturbed,
    the test is skipped with each attempt's evidence. The caller closes the rig."""
    reasons = []
    for attempt in range(tries):
        rig = make_rig(attempt)
        try:
            st = rig.status()
            latency = st["latency_frames"]
            assert latency == CAPTURE_LATENCY + PLAYBACK_LATENCY
            origin = st["jack"]["frame_time_origin"]
            trouble0 = rig.trouble()
            cell = record_first_loop(rig)
            length = cell["length_frames"]
            assert length % SPB == 0 and cell["beats"] == length // SPB
            time.sleep(length / 48000 + 0.3)  # one pass of the loop
            assert rig.recorder is not None
            until = rig.recorder.latest_frame_time()
            missed = rig.trouble() - trouble0
            checked, bad, f0 = check_loop_output(rig, length, latency, origin, until_ft=until)
            if missed and bad == 0 and rig.last_coverage < length:
                # the recorder missed a cycle of the first pass: see those positions again
                time.sleep(length / 48000 + 0.3)
                until = rig.recorder.latest_frame_time()
                missed = rig.trouble() - trouble0
                checked, bad, f0 = check_loop_output(rig, length, latency, origin,
                                                     until_ft=until)
        except BaseException:
            rig.close()
            raise
        # every position of the loop seen and exact: the recording has no hole, even if a
        # cycle was missed meanwhile (before it began, or only by the recorder)
        exact = bad == 0 and rig.last_coverage == length
        if missed and not exact:
            reasons.append(f"attempt {attempt}: {missed} missed cycles while recording or "
                           f"on the first pass ({bad} of {checked} samples differ, "
                           f"{rig.last_coverage} of {length} positions seen); "
                           f"{rig.diagnosis()}")
            rig.close()
            continue
        try:
            assert f0 % SPB == 0, f"the recording began at engine frame {f0}, not on a beat"
            assert rig.last_coverage == length, (rig.last_coverage, length)
            assert bad == 0, (f"{bad} of {checked} output samples differ from the input of an "
                              f"undisturbed recording, at frame times {rig.last_mismatches[:8]}, "
                              f"loop positions {rig.last_positions[:8]} of {length}; "
                              f"{rig.diagnosis()}")
        except BaseException:
            rig.close()
            raise
        return JudgedLoop(rig, cell, origin, latency, f0)
    pytest.skip("every recording had missed cycles (machine too busy to judge): "
                + "; ".join(reasons))


# ---------------------------------------------------------------------------- the tests


def test_ports_and_status_shape(rig: Rig) -> None:
    assert rig.player is not None
    ports = {p.name: p for p in rig.player.client.get_ports("ouroboros:")}
    audio_in = {"ouroboros:in_1", "ouroboros:in_2"}
    audio_out = {"ouroboros:out_1", "ouroboros:out_2", "ouroboros:click"}
    midi = {"ouroboros:midi_in", "ouroboros:midi_out"}
    assert set(ports) == audio_in | audio_out | midi
    for name in audio_in:
        assert ports[name].is_audio and ports[name].is_input
    for name in audio_out:
        assert ports[name].is_audio and ports[name].is_output
    assert ports["ouroboros:midi_in"].is_midi and ports["ouroboros:midi_in"].is_input
    assert ports["ouroboros:midi_out"].is_midi and ports["ouroboros:midi_out"].is_output

    st = rig.status()
    assert st["sample_rate"] == 48000 and st["block_size"] == 256
    assert st["tempo"] == 120.0 and st["sync"] == "internal"
    assert len(st["cells"]) == 5 and all(len(col) == 5 for col in st["cells"])
    assert {"state", "next_state", "volume", "beats", "length_frames", "sync_offset_frames",
            "consolidated"} <= set(st["cells"][0][0])
    assert {"beats", "position", "running"} <= set(st["columns"][0])
    assert st["click"] == {"on": False, "volume": 0.5}
    assert st["jack"]["state"] == "running" and st["jack"]["client"] == "ouroboros"
    cb = wait_until(lambda: (c := rig.status()["callback"])["count"] > 100 and c)
    assert 0 < cb["p50_us"] <= cb["p99_us"] <= cb["max_us"] + 1
    assert cb["errors"] == 0
    assert st["latency_frames"] == CAPTURE_LATENCY + PLAYBACK_LATENCY
    assert st["jack"]["connections"]["in_1"] == ["player:out_1"]


def test_refuses_to_start_without_a_server(tmp_path: Path) -> None:
    name = unique_server_name("nobody-home")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "rtcore.cli", "engine", "--server", name,
                          "--data-dir", str(tmp_path), "--osc-port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"cannot reach JACK server {name!r}" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - t0 < 30


def test_loop_comes_back_sample_exact_with_latency_compensation(server: JackServer,
                                                                 tmp_path: Path) -> None:
    """The first loop plays back exactly what came in, shifted by the announced round trip,
    starting and ending on beat boundaries, pass after pass. On a busy machine a missed
    cycle may spoil a recording or a window of output: then it is recorded again, or
    another window is judged, and the reason is kept."""
    loop = record_judged_loop(lambda attempt: Rig(server.name, tmp_path / f"try{attempt}"))
    try:
        checked, bad = check_clean_window(loop.rig, loop.length, loop.latency, loop.origin,
                                          loop.f0)
        assert checked >= 0.9 * loop.length
        assert bad == 0, f"{bad} of {checked} samples differ on a later pass"
    finally:
        loop.rig.close()


def test_latency_follows_jack(rig: Rig) -> None:
    assert rig.status()["latency_frames"] == 128
    assert rig.player is not None and rig.recorder is not None
    rig.player.set_latency(capture=300)
    wait_until(lambda: rig.status()["latency_frames"] == 300 + PLAYBACK_LATENCY, 5)
    rig.recorder.set_latency(playback=0)
    wait_until(lambda: rig.status()["latency_frames"] == 300, 5)
    assert rig.status()["jack"]["latency"]["updates"] >= 3


def test_osc_drives_a_full_cycle(rig: Rig) -> None:
    first = record_first_loop(rig, 1, 0)
    length = first["length_frames"]
    # layered rows: fixed-length recordings of the column's length
    rig.command("record", 1, 1)
    rig.command("record", 1, 2)
    st = wait_until(lambda: (s := rig.status())["cells"][1][1]["state"] == "recording" and s)
    assert st["cells"][1][2]["state"] == "recording"
    st = wait_until(lambda: (s := rig.status())["cells"][1][1]["state"] == "playing"
                    and s["cells"][1][2]["state"] == "playing" and s, timeout_s=length / 48000 + 5)
    assert st["cells"][1][1]["length_frames"] == length
    assert st["columns"][1]["running"] and st["columns"][1]["beats"] == first["beats"]
    rig.command("volume", 1, 1, 0.5)
    wait_until(lambda: rig.status()["cells"][1][1]["volume"] == 0.5)
    # stop one row at the next beat
    rig.command("stop", 1, 2)
    wait_until(lambda: rig.status()["cells"][1][2]["state"] == "idle")
    # clear it, then undo the clear
    rig.command("clear", 1, 2)
    wait_until(lambda: rig.status()["cells"][1][2]["state"] == "empty")
    rig.command("undo", 1, 2)
    st = wait_until(lambda: (s := rig.status())["cells"][1][2]["state"] == "idle" and s)
    assert st["cells"][1][2]["length_frames"] == length
    rig.command("play", 1, 2)
    wait_until(lambda: rig.status()["cells"][1][2]["state"] == "playing")
    # stop everything: the column stops running and rewinds
    for r in range(3):
        rig.command("stop", 1, r)
    st = wait_until(lambda: (s := rig.status())["columns"][1]["running"] is False and s)
    assert st["columns"][1]["position"] == 0
    assert [c["state"] for c in st["cells"][1][:3]] == ["idle"] * 3
    # the engine refuses what makes no sense, and says why
    assert "tempo cannot change while loops exist" in (rig.osc.command("tempo", 90.0) or "")
    assert "is empty" in (rig.osc.command("play", 4, 4) or "")


def test_malformed_osc_is_answered_and_audio_goes_on(rig: Rig) -> None:
    osc = rig.osc
    before = rig.status()["callback"]["count"]
    cases: list[tuple[Callable[[], None], str]] = [
        (lambda: osc.send_raw(b"\x00\x01garbage"), "malformed"),
        (lambda: osc.send_raw(b""), "empty packet"),
        (lambda: osc.send("record", 0.5, 1), "column must be an integer"),
        (lambda: osc.send("record", 0), "argument"),
        (lambda: osc.send("volume", 0, 0, "loud"), "value must be a number"),
        (lambda: osc.send("volume", 0, 9, 0.5), "row 9 out of range"),
        (lambda: osc.send("tempo", 1000.0), "out of range"),
        (lambda: osc.send("explode"), "unknown address '/ouro/explode'"),
    ]
    for send, words in cases:
        osc.errors.clear()
        send()
        msg = osc.request("ping", reply="/ouro/pong")
        assert msg.address == "/ouro/pong"
        assert any(words in e for e in osc.errors), f"{words!r} not in {osc.errors}"
    # the status is cached for 10 ms and these round trips can all fit in that
    wait_until(lambda: rig.status()["callback"]["count"] > before, 5)
    assert rig.status()["callback"]["errors"] == 0


def test_flood_does_not_stop_the_engine(rig: Rig) -> None:
    record_first_loop(rig)
    st0 = rig.status()
    junk = [b"\xff" * 40, b"/ouro/volume\x00\x00\x00\x00,iif\x00\x00\x00\x00"]
    with EngineClient("127.0.0.1", rig.engine.osc_port) as flood:
        t0 = time.monotonic()
        for i in range(20000):
            if i % 3 == 0:
                flood.send_raw(junk[i % 2])
            else:
                flood.send("volume", 0, 0, 1.0)
        sent_s = time.monotonic() - t0
    # what the kernel queued before the flood stopped is drained at the server's rate first
    st = wait_until(lambda: _status_or_none(rig), 20)
    assert st["callback"]["count"] > st0["callback"]["count"]
    assert st["callback"]["errors"] == 0
    assert st["cells"][0][0]["state"] == "playing"
    assert st["osc"]["received"] > st0["osc"]["received"]
    assert rig.engine.proc is not None and rig.engine.proc.poll() is None
    print(f"flood: 20000 packets in {sent_s:.2f} s; osc stats {st['osc']}; "
          f"xruns {st0['xruns']} -> {st['xruns']}")


def _status_or_none(rig: Rig) -> dict[str, Any] | None:
    try:
        return rig.osc.status(timeout_s=1.0)
    except EngineUnreachable:
        return None


def test_garbage_collector_stays_out_of_the_callback(rig: Rig) -> None:
    st = wait_until(lambda: (s := rig.status())["gc"]["collections"] >= 2 and s, 10)
    assert st["gc"]["automatic"] is False
    assert st["gc"]["in_audio_thread"] == 0
    assert st["gc"]["frozen_objects"] > 1000


def test_subscribe_pushes_status(rig: Rig) -> None:
    rig.osc.send("subscribe", 20)
    got = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        msg = rig.osc.receive(0.5)
        if msg is not None and msg.address == "/ouro/status":
            got.append(json.loads(msg.params[0]))
    assert len(got) >= 8
    assert got[-1]["frame"] > got[0]["frame"]
    rig.osc.send("unsubscribe")
    time.sleep(0.3)
    while rig.osc.receive(0.05) is not None:
        pass
    assert rig.osc.receive(0.4) is None


def test_xrun_is_caught_up(server: JackServer, tmp_path: Path) -> None:
    """The engine process is frozen for a moment: JACK goes on without it; when it comes
    back, it counts the missed frames and the loop is where it would have been."""
    # the loop itself must be right before the xrun: a cycle missed while it was recorded
    # spoils the same samples on every pass, which says nothing about the catch-up
    loop = record_judged_loop(lambda attempt: Rig(server.name, tmp_path / f"try{attempt}"))
    rig = loop.rig
    try:
        xruns0 = rig.status()["xruns"]
        rig.engine.signal(signal.SIGSTOP)
        time.sleep(0.15)
        rig.engine.signal(signal.SIGCONT)
        st = wait_until(lambda: (s := rig.status())["xruns"] > xruns0 and s, 5)
        assert st["missed_frames"] >= 256
        time.sleep(0.3)  # the recorder, downstream of the frozen engine, missed cycles too
        checked, bad = check_clean_window(rig, loop.length, loop.latency, loop.origin,
                                          loop.f0)
        assert checked > loop.length // 2
        assert bad == 0, rig.diagnosis()
    finally:
        rig.close()


@pytest.mark.slow
def test_server_killed_and_restarted(tmp_path: Path) -> None:
    """The JACK server dies under a playing loop and comes back: the engine keeps its loops,
    reconnects with the same ports and connections, and the loop plays on exactly."""
    srv = JackServer(unique_server_name("test-restart"), period_frames=256).start()
    rig = None
    try:
        # judged before the server dies: a hole recorded in the loop by a missed cycle
        # would show in every window after the restart, as if the restart had made it
        loop = record_judged_loop(lambda attempt: Rig(srv.name, tmp_path / f"try{attempt}"))
        rig = loop.rig
        # the server dies with everything connected (closing the test's clients first would
        # rightly make the engine forget their connections)
        srv.kill()
        rig.close_clients()
        st = wait_until(lambda: (s := rig.status())["jack"]["state"] == "lost" and s, 10)
        assert "lost_reason" in st["jack"]
        assert st["cells"][0][0]["state"] == "playing"  # loops kept while there is no JACK
        srv.start()
        rig.attach_clients(connect=False)
        # the engine reconnects itself, with the same ports and connections
        st = wait_until(lambda: (s := rig.status())["jack"]["state"] == "running"
                        and s["jack"]["reconnects"] == 1 and not s["jack"]["pending_connections"]
                        and len(s["jack"]["connections"]) == 5 and s, 30,
                        describe=lambda: rig.status()["jack"])
        assert st["jack"]["connections"]["out_1"] == ["recorder:in_1"]
        assert st["jack"]["connections"]["in_2"] == ["player:out_2"]
        assert st["cells"][0][0]["length_frames"] == loop.length
        checked, bad = check_clean_window(rig, loop.length, loop.latency, loop.origin,
                                          loop.f0)
        assert checked > loop.length // 2
        assert bad == 0, rig.diagnosis()
    finally:
        if rig is not None:
            rig.close()
        srv.stop()


def test_engine_exits_cleanly_and_saves(rig: Rig) -> None:
    record_first_loop(rig)
    data_dir = rig.engine.data_dir
    assert rig.engine.stop() == 0
    manifest = json.loads((data_dir / "session" / "session.json").read_text())
    assert [(c["column"], c["row"]) for c in manifest["cells"]] == [(0, 0)]
    assert not (data_dir / "engine.json").exists()
    assert "session saved" in rig.engine.log_tail()
    assert os.path.exists(data_dir / "session" / manifest["cells"][0]["file"])


def test_an_xrun_while_recording_leaves_its_gap_in_the_loop(server: JackServer,
                                                            tmp_path: Path) -> None:
    """The engine alone is frozen while it records: the loop keeps the timeline, with the
    missed frames as silence (the spec's Xruns), and every other sample exact. The frames
    that differ are exactly those the engine's own frame-time events name: the cycle that
    found the jump plays the block it expected (FrameClock cannot tell a late read from a
    miss until the next cycle), so the input of that one cycle lands where it was expected,
    and the confirmed gap that follows is silence. The cycle that confirms the jump is the
    JACK cycle it read, so the late one was the cycle before it: after a freeze JACK may
    run the overdue client twice in a row, both reading the newer cycle's time (events
    ``(t, e, g + block), (t, e + block, g)``), or once late and once on time (``(t, e, g),
    (t + block, e + block, g)``); either way ``g`` frames are silence. This is the pattern a
    test sees when a recording was disturbed, and why a loop is judged before anything else
    is (record_judged_loop)."""
    reasons = []
    for attempt in range(4):
        rig = Rig(server.name, tmp_path / f"try{attempt}")
        try:
            reason = _judge_a_gap(rig)
        finally:
            rig.close()
        if reason is None:
            return
        reasons.append(f"attempt {attempt}: {reason}")
    pytest.skip("every attempt had more than the one xrun made here (machine too busy to "
                "judge): " + "; ".join(reasons))


def _judge_a_gap(rig: Rig) -> str | None:
    """One attempt of the test above: None when judged, or why it could not be."""
    assert rig.player is not None and rig.recorder is not None
    st = rig.status()
    origin, latency = st["jack"]["frame_time_origin"], st["latency_frames"]
    # the counts before the recording begins: a miss anywhere in it leaves a hole too
    time.sleep(2 * STATUS_CACHE_S)
    before = rig.status()
    engine0, missed0 = before["jack"]["frame_time_anomalies"], before["missed_frames"]
    player0 = rig.player.clock.anomalies
    start_recording(rig)
    time.sleep(0.5)
    rig.engine.signal(signal.SIGSTOP)
    time.sleep(0.02)
    rig.engine.signal(signal.SIGCONT)
    time.sleep(0.5)
    cell = close_recording(rig)
    length = cell["length_frames"]
    time.sleep(2 * STATUS_CACHE_S)
    jk = rig.status()["jack"]
    new = jk["frame_time_anomalies"] - engine0
    events = jk["frame_time_events"][-new:] if new else []
    # the freeze makes the engine see one jump, then its confirmation; anything else while
    # it recorded, or a cycle the player missed (it is the source), is the machine's own
    if len(events) != 2 or rig.player.clock.anomalies != player0:
        return f"the recording saw other misses; {rig.diagnosis()}"
    block = rig.status()["block_size"]
    (read, expected, gap), (read2, expected2, confirmed) = events
    # the engine's own account must hold together: the confirming cycle came one block of
    # the engine's time later, read the time of the cycle after the late one, and the frames
    # it counted missed are the gap between them
    assert expected2 == expected + block, events
    assert (read2, gap) in ((read + block, confirmed), (read, confirmed + block)), events
    assert confirmed == rig.status()["missed_frames"] - missed0, events
    late_source = read2 - block  # the JACK cycle whose input the late callback recorded
    # judge one whole pass that no missed cycle touched
    for _ in range(4):
        trouble0 = rig.trouble()
        since = rig.recorder.latest_frame_time() + 1
        time.sleep(length / 48000 + 0.3)
        until = rig.recorder.latest_frame_time()
        if rig.trouble() != trouble0:
            continue
        _, _, f0 = check_loop_output(rig, length, latency, origin)  # where it began
        ft = rig.recorder.recorded_ft[: rig.recorder.write]
        ys = rig.recorder.recorded[: ft.shape[0]]
        keep = (ft >= since) & (ft <= until)
        engine_frames = (ft[keep] - rig.status()["jack"]["frame_time_origin"]) & 0xFFFFFFFF
        pos = (engine_frames - f0) % length
        assert np.unique(pos).size == length
        where = np.arange(length, dtype=np.int64)
        late = int(expected - origin - f0 - latency) % length  # the late cycle's position
        for ch in (0, 1):
            out = np.zeros(length, np.float32)
            out[pos] = ys[keep, ch]
            want = probe_signal(origin + f0 + latency + where, ch)
            want[(late + np.arange(block)) % length] = probe_signal(
                late_source + np.arange(block, dtype=np.int64), ch)
            want[(late + block + np.arange(confirmed)) % length] = 0.0
            wrong = np.flatnonzero(out != want)
            assert wrong.size == 0, (f"channel {ch}: {wrong.size} samples differ from the input "
                                     f"with the gap at loop position {late}, first at "
                                     f"{wrong[:8]}; {rig.diagnosis()}")
        return None
    return f"no pass of the loop without missed cycles; {rig.diagnosis()}"
