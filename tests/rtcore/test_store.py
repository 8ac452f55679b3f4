"""``rtcore.store``: the working session saved as the engine goes, reloaded with its undo
history, named sessions, partial loads of damaged sessions, and the recording budget.

The engine runs offline here (``Rig`` from test_session: the input is a ramp, so a loop's
samples name the frames they were recorded at); the I/O side runs between blocks with a
real :class:`SessionKeeper` writing real files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from rtcore.engine import CLEARED, REJECT_NAMES, Engine
from rtcore.ioside import IOSide
from rtcore.loops import Take
from rtcore.store import (
    SCHEMA_VERSION,
    SessionKeeper,
    check_name,
    load_session,
)
from tests.rtcore.test_session import BS, SPB, SR, L, Rig, row1_file, two_loops


class KeptRig(Rig):
    """A rig whose I/O side keeps the session in ``data_dir``."""

    def __init__(self, data_dir: Path, restore: bool = False, **cfg: object):
        super().__init__(**cfg)
        self.keeper = SessionKeeper(self.engine, data_dir)
        self.keeper.MANIFEST_INTERVAL_S = 0.0
        if restore:
            self.loaded = self.keeper.restore()
        self.io = IOSide(self.engine, self.keeper)
        self.replies: list[dict[str, Any]] = []

    def request(self, op: str, *args: Any) -> dict[str, Any]:
        return self.keeper.request(op, list(args), self.replies.append)

    def settle(self) -> None:
        """Blocks until the I/O side has nothing left to do."""
        self.run_to(self.engine.frame + 8 * BS)
        for _ in range(100):
            if not self.io.service():
                return
            self.run_to(self.engine.frame + BS)
        raise AssertionError("the I/O side keeps finding work")


def manifest(data_dir: Path) -> dict[str, Any]:
    doc = json.loads((data_dir / "session" / "session.json").read_text())
    assert isinstance(doc, dict)
    return doc


def cell_doc(doc: dict[str, Any], column: int, row: int) -> dict[str, Any]:
    found = [c for c in doc["cells"] if (c["column"], c["row"]) == (column, row)]
    assert len(found) == 1, doc["cells"]
    return found[0]


def take_data(engine: Engine, column: int, row: int) -> np.ndarray:
    take = engine.cells[column][row].take
    assert take is not None and take.data is not None
    return take.data


def built(data_dir: Path) -> KeptRig:
    """Column 0: row 0 recorded twice (beats 0-5, then 13-18 over it), row 1 recorded once
    (beats 7-12, as in test_session) at volume 0.25 and then cleared."""
    rig = KeptRig(data_dir)
    two_loops(rig=rig, until=13 * SPB - BS)
    rig.cmd("record", 0, 0)  # a second take over row 0: one fixed length, from beat 13
    rig.run_to(19 * SPB)
    rig.cmd("clear", 0, 1)
    rig.settle()
    return rig


# ---------------------------------------------------------------------------- saving


def test_a_finished_loop_is_on_disk_before_anything_else_happens(tmp_path: Path) -> None:
    rig = KeptRig(tmp_path)
    rig.cmd("record", 0, 0)
    rig.run_to(5 * SPB - BS)
    rig.cmd("record", 0, 0)
    rig.run_to(5 * SPB + 8 * BS)  # the I/O side has run a few times since the loop closed
    doc = manifest(tmp_path)
    c = cell_doc(doc, 0, 0)
    assert (c["beats"], c["length_frames"], c["state"]) == (5, L, "playing")
    data, rate = sf.read(tmp_path / "session" / c["file"], dtype="float32", always_2d=True)
    assert rate == SR
    np.testing.assert_array_equal(data, rig.ramp(0, L))  # bit-exact
    assert rig.keeper.loops_saved == 1 and rig.keeper.problem == ""


def test_the_manifest_follows_the_matrix(tmp_path: Path) -> None:
    rig = built(tmp_path)
    doc = manifest(tmp_path)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert (doc["tempo"], doc["sample_rate"], doc["beats_per_bar"]) == (120.0, SR, 4)
    row0, row1 = cell_doc(doc, 0, 0), cell_doc(doc, 0, 1)
    assert len(row0["history"]) == 2 and row0["history_pos"] == 1
    assert row0["file"] == doc["takes"][row0["history"][1]]["file"]
    # row 1 was cleared: no current loop, but its history keeps the loop and the clear
    assert row1["file"] is None and row1["history"][1] == "cleared"
    assert row1["history_pos"] == 1 and row1["volume"] == 0.25
    # three takes, three files: nothing else in loops/
    files = sorted(p.name for p in (tmp_path / "session" / "loops").iterdir())
    assert sorted(Path(t["file"]).name for t in doc["takes"].values()) == files
    assert len(files) == 3
    rig.cmd("volume", 0, 0, 0.5)
    rig.settle()
    assert cell_doc(manifest(tmp_path), 0, 0)["volume"] == 0.5


def test_a_restart_brings_back_every_loop_bit_exact_and_the_undo_history(
        tmp_path: Path) -> None:
    before = built(tmp_path)
    row0_now = take_data(before.engine, 0, 0).copy()
    row0_first = before.engine.cells[0][0].hist[0]
    assert isinstance(row0_first, Take) and row0_first.data is not None
    row0_old = row0_first.data.copy()

    after = KeptRig(tmp_path, restore=True)
    assert after.loaded.problems == []
    eng = after.engine
    np.testing.assert_array_equal(take_data(eng, 0, 0), row0_now)
    st, was = eng.status(), before.engine.status()
    c0, c1 = st["cells"][0][0], st["cells"][0][1]
    for row in (0, 1):  # the same steps back and forward as before the restart
        for key in ("undo", "redo", "beats", "volume"):
            assert st["cells"][0][row][key] == was["cells"][0][row][key], (row, key)
    assert (c0["state"], c0["beats"], c0["undo"]) == ("idle", 5, 2)  # was playing
    assert (c1["state"], c1["volume"]) == ("empty", 0.25)
    assert st["columns"][0]["beats"] == 5
    # undo goes back to the first take of row 0, and brings row 1's loop back
    after.cmd("undo", 0, 0)
    after.cmd("undo", 0, 1)
    after.run_to(eng.frame + SPB + BS)
    np.testing.assert_array_equal(take_data(eng, 0, 0), row0_old)
    np.testing.assert_array_equal(take_data(eng, 0, 1), row1_file())
    # new takes do not reuse the restored ones' file names
    after.cmd("record", 0, 2)
    after.run_to(eng.frame + 7 * SPB)
    after.settle()
    doc = manifest(tmp_path)
    assert len(doc["takes"]) == 4
    assert len({t["file"] for t in doc["takes"].values()}) == 4


def test_the_undo_history_on_disk_is_bounded(tmp_path: Path) -> None:
    rig = KeptRig(tmp_path, undo_depth=2)
    rig.cmd("record", 0, 0)
    rig.run_to(2 * SPB - BS)
    rig.cmd("record", 0, 0)
    for k in range(4):  # four more takes over it: only the last two are kept
        rig.run_to((4 + 3 * k) * SPB - BS)
        rig.cmd("record", 0, 0)
        rig.run_to((4 + 3 * k) * SPB + 2 * SPB + BS)
    rig.settle()
    doc = manifest(tmp_path)
    assert len(cell_doc(doc, 0, 0)["history"]) == 2
    assert len(list((tmp_path / "session" / "loops").iterdir())) == 2


# ---------------------------------------------------------------------------- damage


def _damage_missing(d: Path, doc: dict[str, Any]) -> str:
    (d / cell_doc(doc, 0, 0)["file"]).unlink()
    return "missing; skipped"


def _damage_truncated(d: Path, doc: dict[str, Any]) -> str:
    path = d / cell_doc(doc, 0, 0)["file"]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return "cut short?"


def _damage_garbage(d: Path, doc: dict[str, Any]) -> str:
    (d / cell_doc(doc, 0, 0)["file"]).write_bytes(b"not audio at all" * 100)
    return "not a readable audio file"


def _damage_outside(d: Path, doc: dict[str, Any]) -> str:
    key = cell_doc(doc, 0, 0)["history"][1]
    doc["takes"][key]["file"] = "../../etc/passwd"
    (d / "session.json").write_text(json.dumps(doc))
    return "names no file inside the session"


def _damage_cells(d: Path, doc: dict[str, Any]) -> str:
    doc["cells"].append({"column": 9, "row": 0, "history": []})
    doc["cells"].append("a string")
    (d / "session.json").write_text(json.dumps(doc))
    return "no cell (9, 0) in a 5x5 matrix"


def _damage_newer(d: Path, doc: dict[str, Any]) -> str:
    doc["schema_version"] = SCHEMA_VERSION + 7
    doc["a_future_field"] = {"x": 1}
    (d / "session.json").write_text(json.dumps(doc))
    return "is newer than this engine's"


@pytest.mark.parametrize("damage", [_damage_missing, _damage_truncated, _damage_garbage,
                                    _damage_outside, _damage_cells, _damage_newer])
def test_a_damaged_session_loads_what_it_can_and_names_the_rest(
        tmp_path: Path, damage: Callable[[Path, dict[str, Any]], str]) -> None:
    built(tmp_path)
    directory = tmp_path / "session"
    doc = manifest(tmp_path)
    said = damage(directory, doc)
    fresh = KeptRig(tmp_path / "other")
    loaded = load_session(directory, fresh.engine)
    assert any(said in p for p in loaded.problems), loaded.problems
    fresh.engine.install_session(loaded.cells, loaded.tempo or 120.0, 4)
    eng = fresh.engine
    # the older take of row 0 and the history of row 1 survive every damage done to the
    # current take of row 0
    hist0 = [h for h in eng.cells[0][0].hist if isinstance(h, Take)]
    assert hist0, loaded.problems
    assert isinstance(eng.cells[0][1].hist[0], Take)
    assert eng.cells[0][1].hist[1] is CLEARED
    np.testing.assert_array_equal(eng.cells[0][1].hist[0].data, row1_file())


@pytest.mark.parametrize(("text", "said"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"schema_version": 2, "sample_rate": 44100, "cells": []}', "recorded at 44100 Hz"),
    ('{"schema_version": 2, "sample_rate": 8000, "tempo": "fast", "cells": 3}',
     "'cells' is not a list"),
])
def test_a_broken_manifest_loads_nothing_and_says_why(tmp_path: Path, text: str,
                                                      said: str) -> None:
    directory = tmp_path / "session"
    directory.mkdir()
    (directory / "session.json").write_text(text)
    rig = KeptRig(tmp_path, restore=True)
    assert any(said in p for p in rig.loaded.problems), rig.loaded.problems
    assert rig.loaded.cells == []
    assert rig.keeper.status()["restored"]["problems"] == rig.loaded.problems
    rig.run_to(4 * BS)  # and the engine runs on, empty


def test_a_session_of_schema_1_still_loads(tmp_path: Path) -> None:
    directory = tmp_path / "session"
    (directory / "loops").mkdir(parents=True)
    data = np.linspace(-1, 1, 2 * SPB * 2, dtype=np.float32).reshape(-1, 2)
    sf.write(directory / "loops" / "c0_r0_t1.wav", data, SR, subtype="FLOAT")
    (directory / "session.json").write_text(json.dumps({
        "schema_version": 1, "tempo": 120.0, "sample_rate": SR, "beats_per_bar": 4,
        "cells": [{"column": 0, "row": 0, "file": "loops/c0_r0_t1.wav", "beats": 2,
                   "length_frames": 2 * SPB, "volume": 0.5, "state": "playing"}]}))
    rig = KeptRig(tmp_path, restore=True)
    assert rig.loaded.problems == []
    np.testing.assert_array_equal(take_data(rig.engine, 0, 0), data)
    assert rig.engine.cells[0][0].volume == 0.5


# ---------------------------------------------------------------------------- named


def test_named_sessions_save_as_list_new_load_and_delete(tmp_path: Path) -> None:
    rig = built(tmp_path)
    now = take_data(rig.engine, 0, 0).copy()
    assert rig.request("save_as", "gig 1")["queued"] is True
    rig.settle()
    assert rig.replies[-1] == {"op": "save_as", "name": "gig 1", "ok": True}
    listing = rig.request("list")["sessions"]
    assert [s["name"] for s in listing] == ["gig 1"] and listing[0]["loops"] == 3

    rig.request("new")
    rig.settle()
    assert rig.engine.cells[0][0].take is None and rig.engine.columns[0].beats == 0
    assert manifest(tmp_path)["cells"] == []
    assert list((tmp_path / "session" / "loops").iterdir()) == []

    rig.request("load", "gig 1")
    rig.settle()
    assert rig.replies[-1]["ok"] is True and rig.replies[-1]["loops"] == 3
    np.testing.assert_array_equal(take_data(rig.engine, 0, 0), now)
    assert len(manifest(tmp_path)["takes"]) == 3  # it is the working session now

    rig.request("delete", "gig 1")
    rig.settle()
    assert rig.request("list")["sessions"] == []
    assert take_data(rig.engine, 0, 0) is not None  # deleting a copy keeps what plays


@pytest.mark.parametrize(("op", "args", "said"), [
    ("save_as", ["../escape"], "session name '../escape'"),
    ("save_as", [".hidden"], "session name '.hidden'"),
    ("save_as", [], "takes one name"),
    ("load", ["nothing here"], "no session named 'nothing here'"),
    ("delete", ["nope"], "no session named 'nope'"),
    ("list", ["x"], "takes no arguments"),
    ("explode", [], "unknown"),
])
def test_bad_session_requests_are_refused_by_name(tmp_path: Path, op: str, args: list[Any],
                                                 said: str) -> None:
    rig = KeptRig(tmp_path)
    with pytest.raises(ValueError, match=said.replace(".", r"\.")):
        rig.request(op, *args)
    assert not (tmp_path / "escape").exists()


def test_session_names() -> None:
    assert check_name("Gig 2026-11-21_a") == "Gig 2026-11-21_a"
    for bad in ["", " x", "x ", "a/b", "..", "x" * 65, 7]:
        with pytest.raises(ValueError):
            check_name(bad)


def test_a_failed_save_is_reported_and_retried(tmp_path: Path) -> None:
    (tmp_path / "session").mkdir()
    (tmp_path / "session" / "loops").write_text("a file where the folder should be")
    rig = KeptRig(tmp_path)
    rig.cmd("record", 0, 0)
    rig.run_to(2 * SPB - BS)
    rig.cmd("record", 0, 0)
    rig.settle()
    assert "not saved" in rig.keeper.status()["problem"]
    (tmp_path / "session" / "loops").unlink()
    rig.keeper.write()
    assert rig.keeper.problem == ""
    assert cell_doc(manifest(tmp_path), 0, 0)["beats"] == 2


# ---------------------------------------------------------------------------- budget


def test_a_first_recording_ends_on_a_beat_when_the_budget_runs_out(tmp_path: Path) -> None:
    # 0.1 minute at 8 kHz is 48000 frames: 46 chunks of 1024; the loop never gets its
    # second press, yet stops cleanly on a beat with what the budget could hold
    rig = KeptRig(tmp_path, record_budget_minutes=0.1, chunk_frames=1024,
                  pool_reserve_chunks=8)
    rig.cmd("record", 0, 0)
    rig.run_to(20 * SPB)
    st = rig.engine.status()
    cell = st["cells"][0][0]
    assert cell["state"] == "playing"
    assert st["last_rejected"] == REJECT_NAMES[10]
    assert 0 < cell["beats"] * SPB <= 48000
    assert st["pool"]["exhausted"] is True and st["pool"]["budget_minutes"] == 0.1
    # a second layer of the same length does not fit: refused, and the first one plays on
    rig.cmd("record", 0, 1)
    rig.run_to(rig.engine.frame + 2 * SPB)
    st = rig.engine.status()
    assert st["last_rejected"] == REJECT_NAMES[11]
    assert st["cells"][0][1]["state"] == "empty"
    # the loop itself is complete and saved
    rig.settle()
    c = cell_doc(manifest(tmp_path), 0, 0)
    data, _ = sf.read(tmp_path / "session" / c["file"], dtype="float32", always_2d=True)
    np.testing.assert_array_equal(data, rig.ramp(0, c["length_frames"]))


def test_consolidated_loops_give_their_chunks_back(tmp_path: Path) -> None:
    rig = KeptRig(tmp_path, chunk_frames=1024, pool_reserve_chunks=64)
    pool = rig.engine.pool
    rig.cmd("record", 0, 0)
    rig.run_to(5 * SPB - BS)
    rig.cmd("record", 0, 0)
    rig.settle()
    # every chunk the recording used is free again; the loop counts as held audio
    assert len(pool.chunks) == pool.reserve_chunks
    assert pool.held_frames == L
    assert pool.used_frames() == pool.allocated * 1024 + L
