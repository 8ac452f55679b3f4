"""``ouro play`` on a real ``jackd -d dummy``: what it plays is what ``ouro render`` writes,
sample for sample; the transport and the API over its Unix socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from companion.engine.pool import Pool
from companion.engine.render import render_range
from rtcore.host import SignalClient
from rtcore.jackd import JackServer, unique_server_name

pytestmark = [pytest.mark.jack]

RATE = 48000
PERIOD = 256
OURO = str(Path(sys.executable).parent / "ouro")


@pytest.fixture(scope="module")
def server() -> Iterator[JackServer]:
    with JackServer(unique_server_name("test-player"), period_frames=PERIOD) as srv:
        yield srv


def source_audio(seconds: float, seed: int) -> np.ndarray:
    """Noise, so that any shift or repeat shows: (2, frames)."""
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal((2, int(seconds * RATE)))).astype(np.float32)


def make_project(where: Path) -> Path:
    """Two tracks (one in a metatrack with an offset, one with a gain effect) at 120 bpm."""
    where.mkdir(parents=True, exist_ok=True)
    with Pool(where, RATE) as pool:
        a = pool.add_array(source_audio(3.0, 1), RATE)
        b = pool.add_array(source_audio(1.0, 2)[:1], RATE)  # mono
    doc = {
        "format": "ouroboros-project", "version": 1, "sample_rate": RATE,
        "tempo": [{"at": 0.0, "bpm": 120.0}], "meter": [{"at": 0.0, "num": 4, "den": 4}],
        "tracks": [
            {"id": "t1", "kind": "audio", "name": "Noise", "volume": 0.7, "pan": -0.3,
             "clips": [{"id": "c1", "source": a, "start": 0.0, "length": 1.5,
                        "fade_in": 0.01}]},
            {"id": "m1", "kind": "meta", "name": "Group", "offset": 0.1234,
             "children": [{"id": "t2", "kind": "audio", "name": "Mono",
                           "effects": [{"id": "g", "kind": "gain", "params": {"db": -3.0}}],
                           "clips": [{"id": "c2", "source": b, "start": 0.0, "length": 0.37,
                                      "loop": True}]}]},
        ],
        "master": {"volume": 1.0, "effects": []},
    }
    path = where / "project.json"
    path.write_text(json.dumps(doc))
    return path


class PlayerProcess:
    """``ouro play`` as a child process, and a connection to its socket."""

    def __init__(self, server: JackServer, project: Path, sock: Path):
        self.sock_path = sock
        env = {**os.environ, "JACK_NO_START_SERVER": "1"}
        self.proc = subprocess.Popen([OURO, "play", str(project), "--server", server.name,
                                      "--socket", str(sock), "--no-connect"],
                                     stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"ouro play did not start: {self.proc.stderr.read()}")
            time.sleep(0.05)
        self.conn = socket.socket(socket.AF_UNIX)
        self.conn.connect(str(sock))
        self.reader = self.conn.makefile("rb")

    def ask(self, **request: Any) -> dict[str, Any]:
        self.conn.sendall(json.dumps(request).encode() + b"\n")
        return self.read()

    def send_raw(self, data: bytes) -> dict[str, Any]:
        self.conn.sendall(data)
        return self.read()

    def read(self) -> dict[str, Any]:
        line = self.reader.readline()
        assert line, "the player closed the connection"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> int:
        self.conn.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def rig(server: JackServer, tmp_path: Path) -> Iterator[tuple[PlayerProcess, SignalClient, Path]]:
    project = make_project(tmp_path / "song")
    player = PlayerProcess(server, project, tmp_path / "player.sock")
    recorder = SignalClient(server.name, "rec", inputs=2, record_seconds=30)
    try:
        for i in (1, 2):
            recorder.connect(f"ouro-player:out_{i}", f"rec:in_{i}")
        yield player, recorder, project
    finally:
        recorder.close()
        rc = player.close()
        assert rc == 0, player.proc.stderr.read() if player.proc.stderr else rc


def recording(recorder: SignalClient) -> np.ndarray:
    """Everything recorded so far, in order: (2, frames)."""
    n = min(recorder.write, recorder.recorded.shape[0])
    order = np.argsort(recorder.recorded_ft[:n])
    return recorder.recorded[order][:, :2].T.copy()


def wait_playhead(player: PlayerProcess, frame: int, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        st = player.ask(cmd="status")["state"]
        if st["playhead_frame"] >= frame or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def test_what_it_plays_is_what_ouro_render_writes(rig) -> None:
    player, recorder, project = rig
    with Pool(project.parent, RATE) as pool:
        expected = render_range(json.loads(project.read_text()), pool, 0, None, 509)
    lead = int(np.flatnonzero(np.any(expected != 0, axis=0))[0])
    evidence = []
    for _attempt in range(3):
        xruns = player.ask(cmd="status")["state"]["xruns"]
        server_xruns = recorder.xruns
        mark = recorder.write
        assert player.ask(cmd="play", id=7) == {"id": 7, "ok": True}
        st = wait_playhead(player, expected.shape[1] + RATE // 2)
        gc_status = player.ask(cmd="status")["gc"]
        assert not gc_status["automatic"] and gc_status["in_audio_thread"] == 0, gc_status
        player.ask(cmd="stop")
        player.ask(cmd="locate", frame=0)
        if st["xruns"] != xruns or recorder.xruns != server_xruns:
            # the machine missed deadlines (a late client's cycle is not what it rendered):
            # no judgement of the output, try again
            evidence.append(f"player missed {st['xruns'] - xruns} cycle(s), server xruns "
                            f"{recorder.xruns - server_xruns}")
            time.sleep(0.5)
            continue
        got = recording(recorder)[:, mark:]
        first = int(np.flatnonzero(np.any(got != 0, axis=0))[0])
        start = first - lead
        assert start >= 0
        played = got[:, start:start + expected.shape[1]]
        mismatch = np.flatnonzero(np.any(played != expected, axis=0))
        assert mismatch.size == 0, (
            f"{mismatch.size} frames differ, first at {mismatch[:5]}: "
            f"{played[:, mismatch[:3]]} vs {expected[:, mismatch[:3]]}")
        return
    pytest.skip(f"machine too busy to judge: {', '.join(evidence)}")


def test_locate_and_loop_range(rig) -> None:
    player, recorder, project = rig
    with Pool(project.parent, RATE) as pool:
        full = render_range(json.loads(project.read_text()), pool, 0, None, 4096)
    beat = full[:, 24000:48000]  # 0.25 wn, a beat at 120 bpm, is 24000 frames
    evidence = []
    for _attempt in range(3):
        xruns, server_xruns = player.ask(cmd="status")["state"]["xruns"], recorder.xruns
        mark = recorder.write
        assert player.ask(cmd="loop", start=0.25, end=0.5)["ok"]
        assert player.ask(cmd="locate", at=0.25)["ok"]
        assert player.ask(cmd="play")["ok"]
        time.sleep(1.6)  # three passes of the half-second loop
        st = player.ask(cmd="status")["state"]
        player.ask(cmd="stop")
        assert st["loop"] == [24000, 48000] and 24000 <= st["playhead_frame"] < 48000, st
        if st["xruns"] != xruns or recorder.xruns != server_xruns:
            evidence.append(f"player missed {st['xruns'] - xruns} cycle(s), server xruns "
                            f"{recorder.xruns - server_xruns}")
            continue
        got = recording(recorder)[:, mark:]
        # the loop's start in the recording, then the beat again and again, exactly
        first = int(np.flatnonzero(np.any(got != 0, axis=0))[0])
        assert np.array_equal(got[:, first:first + 24000], beat)
        assert np.array_equal(got[:, first + 24000:first + 48000], beat)
        return
    pytest.skip(f"machine too busy to judge: {', '.join(evidence)}")


def test_bad_requests_are_answered_and_change_nothing(rig) -> None:
    player, _recorder, _project = rig
    before = player.ask(cmd="status")["state"]
    cases = [
        (b"{not json\n", "Expecting property name"),
        (b'["play"]\n', "a request is a JSON object"),
        (b'{"cmd": "fly"}\n', "unknown command 'fly'"),
        (b'{"cmd": "locate", "at": -1}\n', "'at' must be a position"),
        (b'{"cmd": "locate", "frame": 1.5}\n', "'frame' must be an integer"),
        (b'{"cmd": "loop", "start": 2, "end": 1}\n', "end must be after start"),
        (b'{"cmd": "metronome", "on": "yes"}\n', "'on' must be true or false"),
        (b'{"cmd": "update", "update": "***"}\n', "not base64"),
        (b'{"cmd": "subscribe", "rate_hz": 1000}\n', "rate_hz must be 1 to 60"),
    ]
    for raw, words in cases:
        reply = player.send_raw(raw)
        assert reply["ok"] is False and words in reply["error"], (raw, reply)
    after = player.ask(cmd="status")["state"]
    assert (after["playing"], after["playhead_frame"], after["loop"]) == (
        before["playing"], before["playhead_frame"], before["loop"])


def test_a_subscriber_gets_the_state_as_a_stream(rig) -> None:
    player, _recorder, _project = rig
    assert player.ask(cmd="subscribe", rate_hz=20)["ok"]
    player.conn.sendall(b'{"cmd": "play"}\n')
    events = []
    heads = []
    deadline = time.monotonic() + 10
    while len(heads) < 10 and time.monotonic() < deadline:
        msg = player.read()
        if msg.get("event") == "state":
            events.append(msg)
            if msg["playing"]:
                heads.append(msg["playhead_frame"])
    assert len(heads) == 10 and heads == sorted(heads) and heads[-1] > heads[0], heads
    assert all(0.0 <= p <= 1.0 for e in events for p in e["peaks"])
    assert any(max(e["peaks"]) > 0 for e in events)
    assert any(max(e["tracks"]["t1"]) > 0 for e in events)
    assert all(set(e["tracks"]) == {"t1", "m1"} for e in events)


def test_edits_sent_as_updates_are_heard_while_playing(server: JackServer,
                                                       tmp_path: Path) -> None:
    """The app holds the project directory open and edits it; the player, started on the
    same directory, gets each edit's Y update over the socket and plays the new state."""
    import base64

    from companion.model.persist import ProjectDir

    path = tmp_path / "song.ouro"
    with ProjectDir.create(path, "app", sample_rate=RATE, bpm=120.0) as pd:
        with pd.pool() as pool:
            ref = pool.add_array(np.full((2, RATE), 0.25, np.float32), RATE)
        track = pd.project.add_track("audio", "Drone")
        track.add_clip(ref, start=0.0, length=64.0, loop=True)
    app = ProjectDir.open(path, "app")
    sent: list[bytes] = []
    stop = app.project.observe_updates(sent.append)
    player = PlayerProcess(server, path, tmp_path / "player.sock")
    recorder = SignalClient(server.name, "rec-updates", inputs=2, record_seconds=30)
    try:
        for i in (1, 2):
            recorder.connect(f"ouro-player:out_{i}", f"rec-updates:in_{i}")
        assert player.ask(cmd="play")["ok"]
        wait_playhead(player, RATE // 2)
        level = np.abs(recording(recorder)[:, -PERIOD:]).max()
        assert level == pytest.approx(0.25)
        track = app.project.tracks()[0]
        for volume in (0.5, 0.0):
            compiles = player.ask(cmd="status")["state"]["compiles"]
            sent.clear()
            track.volume = volume
            for update in sent:
                reply = player.ask(cmd="update", update=base64.b64encode(update).decode())
                assert reply["ok"], reply
            deadline = time.monotonic() + 10
            while player.ask(cmd="status")["state"]["compiles"] == compiles:
                assert time.monotonic() < deadline, "the update was never compiled"
                time.sleep(0.02)
            time.sleep(0.3)  # the glide (10 ms) and a few periods
            level = np.abs(recording(recorder)[:, -PERIOD:]).max()
            assert level == pytest.approx(0.25 * volume), volume
        st = player.ask(cmd="status")["state"]
        assert st["compile_error"] == "" and st["compile_ms"] > 0, st
        # an update that is not one: answered, and the player plays on
        bad = player.ask(cmd="update", update=base64.b64encode(b"\x00garbage").decode())
        assert bad["ok"] is False and "update" in bad["error"], bad
        assert player.ask(cmd="status")["state"]["playing"]
    finally:
        stop()
        app.close()
        recorder.close()
        assert player.close() == 0


def test_without_jack_it_plays_through_portaudio(tmp_path: Path) -> None:
    """No JACK server: ``ouro play`` falls back to PortAudio, here ALSA's null device (the
    machine has no sound card). The null device has no clock of its own (it takes blocks
    as fast as they come), so this shows the stream running the player, not its pace."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text('pcm.ouronull {\n type null\n hint { show on '
                                    'description "silent output" }\n}\n')
    project = make_project(tmp_path / "song")
    sock = tmp_path / "pa.sock"
    env = {**os.environ, "HOME": str(home), "JACK_NO_START_SERVER": "1",
           "JACK_DEFAULT_SERVER": unique_server_name("nobody-here")}
    proc = subprocess.Popen([OURO, "play", str(project), "--socket", str(sock), "--device",
                             "ouronull", "--block-size", "512", "--play"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(str(sock))
        reader = conn.makefile("rb")

        def ask(**req: Any) -> dict[str, Any]:
            conn.sendall(json.dumps(req).encode() + b"\n")
            reply: dict[str, Any] = json.loads(reader.readline())
            return reply

        # the null device takes blocks as fast as they come: loop over the sounding part
        assert ask(cmd="loop", start=0.0, end=0.5)["ok"] and ask(cmd="locate", frame=0)["ok"]
        first = ask(cmd="status")
        t0 = time.monotonic()
        time.sleep(1.0)
        second = ask(cmd="status")
        took = time.monotonic() - t0
        host = second["host"]
        assert host["backend"] == "portaudio" and host["device"] == "ouronull", host
        assert host["sample_rate"] == RATE and host["blocksize"] == 512
        assert second["state"]["playing"] and second["state"]["loop"] == [0, RATE]
        assert host["callbacks"] - first["host"]["callbacks"] > 0.5 * took * RATE / 512
        assert host["callbacks"] > 0 and host["state"] == "running", host
        assert max(second["state"]["peaks"]) > 0  # the plan was rendered
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
    assert rc == 0
    assert "no JACK server" in (proc.stderr.read() if proc.stderr else "")
