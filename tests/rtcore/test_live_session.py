"""Loops that survive: ``ouro engine`` on a real ``jackd -d dummy`` is killed with SIGKILL
mid-recording, with the session recorder running; a new engine on the same data directory
brings every finished loop back bit-exact (same CRC-32 of its samples as before the kill),
and the recorder's file opens with soundfile holding all but at most the last second.
Named sessions are driven over OSC. A data directory on a small tmpfs fills up under a
running engine: the recorder stops cleanly with every rotated file valid and gapless, a
loop finished on the full disk is kept and saved once there is room, and nothing else
stops.
"""

from __future__ import annotations

import json
import signal
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from rtcore.host import SignalClient
from rtcore.jackd import JackServer, unique_server_name
from rtcore.osc import STATUS_CACHE_S
from tests.rtcore.conftest import small_tmpfs
from tests.rtcore.test_live import EngineRig, wait_until

pytestmark = pytest.mark.jack

SR = 48000
CONFIG = """
[engine]
declick_ms = 0
smoothing_ms = 0
[process]
gc_interval_s = 0.5
[recorder]
bits = 24
flush_seconds = 1.0
"""


@pytest.fixture(scope="module")
def server() -> Iterator[JackServer]:
    with JackServer(unique_server_name("test-live-session"), period_frames=256) as srv:
        yield srv


class SessionRig(EngineRig):
    """An engine with a player on its inputs (every sample names its frame time)."""

    def __init__(self, server_name: str, tmp_path: Path, config: str = CONFIG):
        super().__init__(server_name, tmp_path, config)
        self.player = SignalClient(server_name, "player", outputs=2)
        for i in (1, 2):
            self.player.connect(f"player:out_{i}", f"ouroboros:in_{i}")
        # an engine frame at or after the one where the player's signal began to come in
        # (a status built after the connections: past the status cache)
        time.sleep(2 * STATUS_CACHE_S)
        self.connected_frame: int = self.status()["frame"]

    def request(self, name: str, *args: Any, reply: str = "/ouro/session",
                timeout_s: float = 5.0) -> dict[str, Any]:
        msg = self.osc.request(name, *args, reply=reply, timeout_s=timeout_s)
        doc = json.loads(msg.params[0])
        assert isinstance(doc, dict)
        return doc

    def record_loop(self, column: int, beats: float = 2.0) -> dict[str, Any]:
        """A first recording in ``column`` of about ``beats`` beats; returns the cell's
        status once its loop is consolidated and saved."""
        self.command("record", column, 0)
        wait_until(lambda: self.status()["cells"][column][0]["state"] == "recording")
        time.sleep(beats * 0.5)
        self.command("record", column, 0)
        return wait_until(lambda: (c := self.status()["cells"][column][0])["crc32"] is not None
                          and c, 10)

    def close(self) -> None:
        self.player.close()
        self.osc.close()
        self.engine.stop()


def test_a_killed_engine_comes_back_with_every_finished_loop_bit_exact(
        server: JackServer, tmp_path: Path) -> None:
    rig = SessionRig(server.name, tmp_path)
    data = tmp_path / "data"
    try:
        rec = rig.request("recorder/start", reply="/ouro/recorder")
        assert rec["running"] is True, rec
        loops = {c: rig.record_loop(c) for c in (0, 1)}
        rig.command("volume", 1, 0, 0.5)
        # both loops are on disk before the crash: the manifest names them
        wait_until(lambda: len(json.loads((data / "session" / "session.json").read_text())
                               ["takes"]) == 2)
        wait_until(lambda: rig.status()["cells"][1][0]["volume"] == 0.5)
        # ... and so does the volume, once the manifest follows
        wait_until(lambda: [c["volume"] for c in json.loads(
            (data / "session" / "session.json").read_text())["cells"]
            if (c["column"], c["row"]) == (1, 0)] == [0.5])
        rig.command("record", 2, 0)  # and a recording in progress when the power goes
        wait_until(lambda: rig.status()["cells"][2][0]["state"] == "recording")
        time.sleep(2.5)
        before = rig.status()
        assert before["callback"]["errors"] == 0, before["callback"]
        written = before["recorder"]["frames_written"]
        t_status = time.monotonic()
        rig.engine.signal(signal.SIGKILL)
        t_kill = time.monotonic()
        assert rig.engine.proc is not None
        rig.engine.proc.wait(10)
    finally:
        rig.close()

    # the recorder's file is a valid WAV with all but the last second of what it had: by
    # the kill it had written what the status said, and a little more since
    files = sorted((data / "recordings").glob("*.wav"))
    assert len(files) == 1, files
    info = sf.info(str(files[0]))
    assert (info.channels, info.samplerate, info.subtype) == (4, SR, "PCM_24")
    recorded = sf.read(str(files[0]), dtype="float32")[0]
    assert recorded.shape[0] == info.frames
    at_kill = written + (t_kill - t_status) * SR
    assert info.frames >= at_kill - 1.25 * SR, (written, info.frames, at_kill)
    assert np.abs(recorded[:, :2]).max() > 0  # the inputs are in it

    # a new engine on the same data: the two finished loops, bit-exact, and the volume
    again = SessionRig(server.name, tmp_path)
    try:
        st = again.status()
        assert st["session"]["restored"]["problems"] == []
        for c, cell in loops.items():
            now = st["cells"][c][0]
            assert now["crc32"] == cell["crc32"], (c, now, cell)
            assert (now["state"], now["beats"], now["length_frames"]) == (
                "idle", cell["beats"], cell["length_frames"])
        assert st["cells"][1][0]["volume"] == 0.5
        assert st["cells"][2][0]["state"] == "empty"  # the unfinished recording is gone
        # named sessions over OSC
        assert again.request("session/save_as", "after the crash")["queued"] is True
        wait_until(lambda: [s["name"] for s in again.request("session/list")["sessions"]]
                   == ["after the crash"])
        again.request("session/new")
        wait_until(lambda: again.status()["cells"][0][0]["state"] == "empty")
        again.request("session/load", "after the crash")
        wait_until(lambda: again.status()["cells"][0][0]["crc32"] == loops[0]["crc32"])
        err = again.osc.command("session/load", "no such session")
        assert err is not None and "no session named 'no such session'" in err
    finally:
        again.close()


FULL_DISK_CONFIG = CONFIG.split("[recorder]")[0] + """[recorder]
autostart = true
bits = 32
rotation_seconds = 1.5
flush_seconds = 0.5
min_free_mb = 0
"""
PROBE_INVERSE = pow(2654435761, -1, 1 << 24)  # undoes probe_signal's hash on channel 0


def frame_times(pcm32: np.ndarray) -> np.ndarray:
    """The JACK frame times (mod 2**24) that the player's channel 0 samples name: 32-bit
    PCM holds its hash exactly (sample = (hash - 2**23) * 2**7)."""
    h = (pcm32.astype(np.int64) >> 7) + (1 << 23)
    return (h * PROBE_INVERSE) & 0xFFFFFF


def test_a_full_disk_stops_the_recorder_cleanly_and_the_session_catches_up(
        server: JackServer, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "data", "6m") as data:
        rig = SessionRig(server.name, tmp_path, FULL_DISK_CONFIG)
        try:
            # 4 channels of 32-bit audio at 48 kHz fill 6 MB in about 8 s
            st = wait_until(lambda: (s := rig.status())["recorder"]["reason"] is not None
                            and s, 30)
            rec = st["recorder"]
            assert rec["running"] is False
            assert "ENOSPC" in rec["reason"], rec
            # a full disk is none of the audio thread's business
            assert st["callback"]["errors"] == 0, st["callback"]
            assert rec["file_count"] >= 3, rec  # it rotated on the way
            # the engine goes on: audio runs, commands work, the status answers
            frame = st["frame"]
            wait_until(lambda: rig.status()["frame"] > frame + SR // 2)

            # every file is a valid WAV, whole frames, and together they are one recording
            files = sorted((data / "recordings").glob("*.wav"))
            assert len(files) == rec["file_count"], (files, rec)
            parts = [sf.read(str(p), dtype="int32")[0] for p in files]
            for p, part in zip(files[:-1], parts[:-1], strict=True):
                assert part.shape == (round(1.5 * SR), 4), p
            assert sum(p.shape[0] for p in parts) == rec["frames_written"]
            pcm = np.concatenate(parts)
            # the player is connected after the start: its signal comes in at the latest
            # from the engine frame the rig saw after connecting it (the recorder started
            # at an engine frame >= 0)
            first = int(np.flatnonzero(pcm[:, 0])[0])
            assert first <= rig.connected_frame, (first, rig.connected_frame)
            # an xrun records silence (on both inputs at once: the probe's two channels are
            # never both zero otherwise), as many frames as the recorder counted (some may
            # come before the player was connected)
            live = np.flatnonzero(pcm[first:, :2].any(axis=1)) + first
            silent = pcm.shape[0] - first - live.size
            assert 0 <= rec["silence_frames"] - silent <= first, (silent, rec)
            # across the silence the frame times go on; a late test player (Python, in
            # this busy process) may repeat or skip a cycle: a break or two per xrun or
            # frame-time anomaly (the engine's or the player's: all of them came before
            # the recorder stopped, and are counted after), never at a file boundary
            ft = frame_times(pcm[live, 0])
            broken = (np.diff(ft) & 0xFFFFFF) != np.diff(live)
            faults = max(st["xruns"], st["jack"]["xruns_reported"]) \
                + st["jack"]["frame_time_anomalies"] + rig.player.clock.anomalies
            assert np.count_nonzero(broken) <= 2 * faults, \
                (np.flatnonzero(broken), live[np.flatnonzero(broken)], faults, st["jack"],
                 list(rig.player.clock.events))
            edges = np.cumsum([p.shape[0] for p in parts[:-1]])
            at_edge = np.searchsorted(live, edges) - 1  # the live pair spanning each edge
            assert not broken[at_edge].any(), (edges, live[at_edge])

            # a loop finished on the full disk plays; its save waits, named, for room
            cell = rig.record_loop(0)
            assert cell["state"] == "playing"
            problem = wait_until(lambda: rig.status()["session"]["problem"], 10)
            assert "ENOSPC" in problem or "No space" in problem, problem
            assert rig.status()["cells"][0][0]["state"] == "playing"
            for p in files[:2]:  # room again: the next retry saves it
                p.unlink()
            wait_until(lambda: rig.status()["session"]["problem"] is None, 10,
                       describe=lambda: rig.status()["session"])
            manifest = json.loads((data / "session" / "session.json").read_text())
            assert len(manifest["takes"]) == 1, manifest
            (take,) = manifest["takes"].values()
            saved = sf.read(str(data / "session" / take["file"]), dtype="float32")[0]
            assert zlib.crc32(np.ascontiguousarray(saved).tobytes()) == cell["crc32"]
            # and the recorder starts a new session on request
            again = rig.request("recorder/start", reply="/ouro/recorder")
            assert again["running"] is True, again
            rig.request("recorder/stop", reply="/ouro/recorder")
        finally:
            rig.close()
