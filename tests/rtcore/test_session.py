"""``rtcore.session``: one consolidated WAV per loop and a ``session.json`` manifest, written
crash-safely (temporary name, fsync, rename; the manifest last)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtcore import session
from rtcore.commands import parse_args
from rtcore.config import EngineConfig
from rtcore.engine import Engine
from rtcore.ioside import IOSide
from rtcore.session import write_json_atomic
from rtcore.store import save_session

SR = 8000
SPB = 4000  # 120 BPM at 8 kHz
BS = 64
L = 5 * SPB  # five beats: an offset of two beats is not half the loop


class Rig:
    """An engine fed a ramp (input frame i is i + 1, and -(i + 1) on channel 1)."""

    def __init__(self, service: bool = True, **cfg: object):
        conf = {"sample_rate": SR, "block_size": BS, "tempo_bpm": 120.0, "declick_ms": 0.0,
                "smoothing_ms": 0.0, **cfg}
        self.engine = Engine(EngineConfig(**conf))  # type: ignore[arg-type]
        self.io = IOSide(self.engine)
        self.service = service
        ch = self.engine.channels
        self.out = np.zeros((BS, ch), np.float32)
        self.click = np.zeros(BS, np.float32)
        self.sign = np.where(np.arange(ch) % 2 == 0, 1.0, -1.0).astype(np.float32)

    def cmd(self, name: str, *args: object) -> None:
        eng = self.engine
        eng.submit(parse_args(name, list(args), columns=eng.ncols, rows=eng.nrows))

    def run_to(self, frame: int) -> None:
        eng = self.engine
        while eng.frame < frame:
            n = min(BS, frame - eng.frame)
            x = np.arange(eng.frame + 1, eng.frame + n + 1, dtype=np.float32)
            eng.process(np.ascontiguousarray(x[:, None] * self.sign), self.out[:n],
                        self.click[:n])
            if self.service:
                self.io.service()

    def ramp(self, start: int, stop: int) -> np.ndarray:
        x = np.arange(start + 1, stop + 1, dtype=np.float32)
        return x[:, None] * self.sign


def two_loops(service: bool = True, rig: Rig | None = None, until: int = 13 * SPB,
              **cfg: object) -> Rig:
    """Column 0: row 0 records beats 0-4; row 1 records from beat 7 (column beat 3) to 12.
    The rig (a new one by default) runs on to frame ``until``."""
    rig = rig or Rig(service, **cfg)
    rig.cmd("record", 0, 0)
    rig.run_to(5 * SPB - BS)
    rig.cmd("record", 0, 0)
    rig.run_to(7 * SPB - BS)
    rig.cmd("record", 0, 1)
    rig.run_to(7 * SPB + 1)
    rig.cmd("volume", 0, 1, 0.25)
    rig.run_to(until)
    return rig


def row1_file() -> np.ndarray:
    """Row 1 recorded frames 7 * SPB .. 12 * SPB from column position 2 * SPB, saved so that
    index 0 is column beat 1 (recorded at 10 * SPB)."""
    x = np.arange(7 * SPB + 1, 12 * SPB + 1, dtype=np.float32)
    recorded = np.stack([x, -x], axis=1)
    expected = np.roll(recorded, 2 * SPB, axis=0)
    assert expected[0, 0] == 10 * SPB + 1
    return expected


def entry(manifest: dict, column: int, row: int) -> dict:
    found = [c for c in manifest["cells"] if c["column"] == column and c["row"] == row]
    assert len(found) == 1
    return found[0]


def load(directory: Path, rel: str) -> np.ndarray:
    data, rate = sf.read(directory / rel, dtype="float32", always_2d=True)
    assert rate == SR
    return data


def test_manifest_fields(tmp_path):
    rig = two_loops()
    path = save_session(rig.engine, tmp_path / "sess")
    assert path == tmp_path / "sess" / "session.json"
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 2
    assert doc["tempo"] == 120.0
    assert doc["sample_rate"] == SR
    assert doc["beats_per_bar"] == 4
    assert isinstance(doc["cells"], list) and len(doc["cells"]) == 2
    for cell in doc["cells"]:
        for key in ("file", "beats", "volume", "state"):
            assert key in cell, key
    c0, c1 = entry(doc, 0, 0), entry(doc, 0, 1)
    assert (c0["beats"], c0["volume"], c0["state"]) == (5, 1.0, "playing")
    assert (c1["beats"], c1["volume"], c1["state"]) == (5, 0.25, "playing")


def test_loop_files_are_relative_complete_and_consolidated(tmp_path):
    rig = two_loops()
    directory = tmp_path / "sess"
    doc = json.loads(save_session(rig.engine, directory).read_text())
    for cell in doc["cells"]:
        rel = cell["file"]
        assert not Path(rel).is_absolute() and ".." not in Path(rel).parts, rel
        info = sf.info(str(directory / rel))
        assert info.subtype == "FLOAT"
        assert (info.frames, info.channels, info.samplerate) == (L, 2, SR)
    np.testing.assert_array_equal(load(directory, entry(doc, 0, 0)["file"]), rig.ramp(0, L))
    np.testing.assert_array_equal(load(directory, entry(doc, 0, 1)["file"]), row1_file())


def test_a_take_not_yet_consolidated_is_saved_consolidated(tmp_path):
    """The I/O side never ran: the engine still plays row 1 from its chunks."""
    rig = two_loops(service=False)
    assert rig.engine.cells[0][1].take.data is None, "precondition: unconsolidated"
    directory = tmp_path / "sess"
    doc = json.loads(save_session(rig.engine, directory).read_text())
    np.testing.assert_array_equal(load(directory, entry(doc, 0, 1)["file"]), row1_file())


def test_no_temporary_files_are_left_behind(tmp_path):
    rig = two_loops()
    directory = tmp_path / "sess"
    save_session(rig.engine, directory)
    save_session(rig.engine, directory)  # again, over the first save
    left = [p for p in directory.rglob("*") if p.name.endswith(".tmp")]
    assert not left, left
    json.loads((directory / "session.json").read_text())


def test_an_empty_engine_saves_an_empty_manifest(tmp_path):
    rig = Rig()
    rig.run_to(1000)
    doc = json.loads(save_session(rig.engine, tmp_path / "sess").read_text())
    assert doc["cells"] == []
    assert doc["schema_version"] == 2


def test_a_first_recording_in_progress_is_not_saved(tmp_path):
    rig = Rig()
    rig.cmd("record", 0, 0)
    rig.run_to(2 * SPB)
    doc = json.loads(save_session(rig.engine, tmp_path / "sess").read_text())
    assert doc["cells"] == []


def test_the_manifest_is_written_last(tmp_path, monkeypatch):
    """If writing fails part way, there is no manifest naming files that are incomplete."""
    rig = two_loops()
    real_replace = os.replace
    calls: list[str] = []

    def failing_replace(src, dst):
        calls.append(os.fspath(dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(session.os, "replace", failing_replace)
    directory = tmp_path / "sess"
    with pytest.raises(OSError):
        save_session(rig.engine, directory)
    assert not (directory / "session.json").exists()
    assert all(not c.endswith("session.json") for c in calls[:2])


def test_every_file_is_renamed_into_place_and_the_manifest_comes_last(tmp_path, monkeypatch):
    rig = two_loops()
    real_replace = os.replace
    finals: list[str] = []

    def spy_replace(src, dst):
        assert os.fspath(src).endswith(".tmp"), src
        assert Path(src).is_file()
        finals.append(Path(dst).name)
        return real_replace(src, dst)

    monkeypatch.setattr(session.os, "replace", spy_replace)
    save_session(rig.engine, tmp_path / "sess")
    assert finals[-1] == "session.json"
    assert len(finals) == 3  # two loops, then the manifest


def test_write_json_atomic_round_trips(tmp_path):
    doc = {"a": [1, 2.5, "x"], "b": {"c": None}}
    target = tmp_path / "doc.json"
    write_json_atomic(target, doc)
    assert json.loads(target.read_text()) == doc
    write_json_atomic(target, {"replaced": True})
    assert json.loads(target.read_text()) == {"replaced": True}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]
