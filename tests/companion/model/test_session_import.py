"""``companion.model.session_import``: a real pedal session (recorded by rtcore's offline
engine, saved by rtcore.store) becomes a project: a metatrack per column, a track per loop,
the loops in the pool bit for bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from companion.engine.pool import Pool
from companion.errors import ProjectError
from companion.model.session_import import clip_bars, import_session
from rtcore.store import save_session
from tests.rtcore.test_session import SPB, SR, two_loops


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Column 0: two five-beat loops (row 1 at volume 0.25); column 2: a nine-beat loop."""
    rig = two_loops()
    rig.cmd("record", 2, 0)
    rig.run_to(rig.engine.frame + 9 * SPB)
    rig.cmd("record", 2, 0)
    rig.run_to(rig.engine.frame + 4 * SPB)
    directory = tmp_path_factory.mktemp("pedal") / "session"
    save_session(rig.engine, directory)
    return directory


def test_session_becomes_columns_of_looping_tracks(session, tmp_path):
    manifest = json.loads((session / "session.json").read_text())
    with import_session(session, tmp_path / "song.ouro", "alice") as pd:
        data = pd.project.to_interchange()
        p = pd.project
        assert p.sample_rate == SR == manifest["sample_rate"]
        assert p.tempo == [{"at": 0.0, "bpm": 120.0, "ramp": False}]
        assert p.meter == [{"at": 0.0, "num": 4, "den": 4}]
        assert [(g["kind"], g["name"]) for g in data["tracks"]] == [
            ("meta", "Column 1"), ("meta", "Column 3")]
        col1, col3 = data["tracks"]
        assert [(t["name"], t["volume"]) for t in col1["children"]] == [
            ("Column 1 Row 1", 1.0), ("Column 1 Row 2", 0.25)]
        assert [t["name"] for t in col3["children"]] == ["Column 3 Row 1"]
        for t in (*col1["children"], *col3["children"]):
            (clip,) = t["clips"]
            assert clip["loop"] is True and clip["start"] == 0.0
            assert clip["length"] == 4 * 4 * 0.25  # 5 and 9 beats: 2 and 3 bars, so 4
        # each loop is in the pool, sample for sample
        with Pool(pd.path, SR) as pool:
            for cell, t in zip(manifest["cells"], (*col1["children"], *col3["children"]),
                               strict=True):
                want, _ = sf.read(session / cell["file"], dtype="float32", always_2d=True)
                src = pool.source(t["clips"][0]["source"])
                got = np.zeros((src.channels, src.frames), np.float32)
                src.read(0, got)
                np.testing.assert_array_equal(got.T, want)
    assert (tmp_path / "song.ouro" / "project.json").is_file()


def test_clip_length_is_whole_bars_at_least_four():
    assert [clip_bars(b, 4) for b in (1, 4, 16, 17, 20)] == [4, 4, 4, 5, 5]
    assert clip_bars(13, 3) == 5


@pytest.mark.parametrize("mutate,where", [
    (lambda m: m.update(tempo=-3), "tempo"),
    (lambda m: m.update(schema_version=9), "schema_version"),
    (lambda m: m["cells"][0].update(file="../../etc/passwd"), "cells[0].file"),
    (lambda m: m["cells"][1].update(file="loops/gone.wav"), "cells[1].file"),
    (lambda m: m["cells"][0].update(volume="loud"), "cells[0].volume"),
    (lambda m: m.update(sample_rate=12345), "sample_rate"),
])
def test_bad_sessions_are_refused_and_nothing_is_made(session, tmp_path, mutate, where):
    bad = tmp_path / "bad"
    shutil.copytree(session, bad)
    manifest = json.loads((session / "session.json").read_text())
    mutate(manifest)
    (bad / "session.json").write_text(json.dumps(manifest))
    with pytest.raises(ProjectError) as e:
        import_session(bad, tmp_path / "song.ouro", "alice")
    assert where in str(e.value)
    assert not (tmp_path / "song.ouro").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]


def test_not_a_session(tmp_path):
    with pytest.raises(ProjectError, match=r"session\.json"):
        import_session(tmp_path, tmp_path / "x.ouro", "alice")
