"""``ouro render`` (companion.engine.cli.main): real project directories and interchange
files, real WAV output, and bad projects refused with exit 2 and nothing written."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from companion.engine.cli import main
from companion.engine.pool import Pool
from companion.engine.render import render_range

SR = 8000
ROOT = Path(__file__).resolve().parents[3]


def ramp(n: int) -> np.ndarray:
    return ((np.arange(n, dtype=np.float32) + 1) / np.float32(32768))[None]


def write_project(directory: Path, tracks: list[dict[str, Any]], **top: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "project.json"
    path.write_text(json.dumps({"format": "ouroboros-project", "version": 1,
                                "sample_rate": SR, "tempo": [{"at": 0, "bpm": 120}],
                                "tracks": tracks, **top}))
    return path


def two_tracks(ref_a: Any, ref_b: Any) -> list[dict[str, Any]]:
    return [{"kind": "audio", "id": "a", "name": "Drums", "clips": [
                {"id": "c1", "source": ref_a, "start": 0.0, "length": 0.25}]},
            {"kind": "audio", "id": "b", "name": "Bass / Synth", "pan": 0.5, "clips": [
                {"id": "c2", "source": ref_b, "start": 0.125, "length": 0.25,
                 "reversed": True}]}]


@pytest.fixture
def ouro_dir(tmp_path: Path) -> Path:
    d = tmp_path / "Song.ouro"
    with Pool(d, SR) as pool:
        ra = pool.add_array(ramp(5000), SR)
        rb = pool.add_array(-ramp(6000), SR)
    write_project(d, two_tracks(ra, rb))
    return d


def read(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    info = sf.info(str(path))
    assert rate == SR and info.subtype == "FLOAT" and info.channels == 2
    return np.asarray(data.T)


def test_renders_a_project_directory(ouro_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "song.wav"
    assert main([str(ouro_dir), "--out", str(out)]) == 0
    got = read(out)
    project = json.loads((ouro_dir / "project.json").read_text())
    with Pool(ouro_dir, SR) as pool:
        expect = render_range(project, pool)
    assert got.shape == (2, math.floor(0.375 * 2 * SR + 0.5))
    np.testing.assert_array_equal(got, expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Song.ouro", "song.wav"]


def test_range_and_block_size(ouro_dir: Path, tmp_path: Path) -> None:
    whole, part = tmp_path / "whole.wav", tmp_path / "part.wav"
    assert main([str(ouro_dir), "--out", str(whole)]) == 0
    assert main([str(ouro_dir / "project.json"), "--out", str(part), "--start", "0.0625",
                 "--end", "0.3", "--block-size", "37"]) == 0
    a, b = math.floor(0.0625 * 2 * SR + 0.5), math.floor(0.3 * 2 * SR + 0.5)
    np.testing.assert_array_equal(read(part), read(whole)[:, a:b])


def test_stems_are_each_root_track_alone(ouro_dir: Path, tmp_path: Path) -> None:
    out, stems = tmp_path / "mix.wav", tmp_path / "stems"
    assert main([str(ouro_dir), "--out", str(out), "--stems", str(stems),
                 "--block-size", "509"]) == 0
    names = sorted(p.name for p in stems.iterdir())
    assert names == ["01-Drums.wav", "02-Bass_Synth.wav"]
    drums, bass = (read(stems / n) for n in names)
    np.testing.assert_array_equal(drums[0, :4000], ramp(5000)[0, :4000])
    assert not drums[:, 4000:].any()
    np.testing.assert_allclose(drums + bass, read(out), atol=1e-7)


def test_interchange_file_imports_file_sources(tmp_path: Path) -> None:
    (tmp_path / "loops").mkdir()
    sf.write(tmp_path / "loops" / "a.wav", ramp(5000).T, SR, subtype="FLOAT")
    sf.write(tmp_path / "loops" / "b.wav", -ramp(6000).T, SR, subtype="FLOAT")
    path = write_project(tmp_path, two_tracks({"file": "loops/a.wav"},
                                              {"file": "loops/b.wav"}))
    out = tmp_path / "o.wav"
    assert main([str(path), "--out", str(out)]) == 0
    assert len(list((tmp_path / "audio").glob("*.json"))) == 2  # imported beside the file
    np.testing.assert_array_equal(read(out)[0, :1000], ramp(5000)[0, :1000])


def _bad(tmp_path: Path, tracks: Any, text: str | None = None) -> Path:
    d = tmp_path / "bad"
    path = write_project(d, tracks)
    if text is not None:
        path.write_text(text)
    return path


@pytest.mark.parametrize(("tracks", "text", "message"), [
    ([], "{\"format\": ", "not valid JSON"),
    ([{"kind": "audio", "id": "a", "name": "Bass", "clips": [
        {"id": "c3", "source": "sha256:" + "0" * 64, "start": 0, "length": -1}]}], None,
     'tracks[0] "Bass" > clips[0] "c3" > length: must not be negative'),
    ([{"kind": "audio", "id": "a", "name": "Bass", "clips": [
        {"id": "c3", "source": "sha256:" + "0" * 64, "start": 0, "length": 1}]}], None,
     'tracks[0] "Bass" > clips[0] "c3" > source: sha256:0000'),
    ([{"kind": "audio", "id": "a", "name": "Bass", "clips": [
        {"id": "c3", "source": {"file": "gone.wav"}, "start": 0, "length": 1}]}], None,
     'tracks[0] "Bass" > clips[0] "c3" > source > file'),
    ([{"kind": "bus", "id": "x", "sends": [{"bus": "x"}]}], None, "cycle"),
    ([{"kind": "synth", "id": "x"}], None, 'tracks[0] "x" > kind'),
])
def test_bad_projects_exit_2_and_write_nothing(tmp_path: Path, capsys: Any, tracks: Any,
                                               text: str | None, message: str) -> None:
    path = _bad(tmp_path, tracks, text)
    out = tmp_path / "out" / "o.wav"
    out.parent.mkdir()
    assert main([str(path), "--out", str(out), "--stems", str(tmp_path / "stems")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ouro render: ") and message in err
    assert list(out.parent.iterdir()) == []
    assert not (tmp_path / "stems").exists()


def test_existing_output_is_untouched_on_error(tmp_path: Path) -> None:
    path = _bad(tmp_path, [], "not json")
    out = tmp_path / "o.wav"
    out.write_bytes(b"old")
    assert main([str(path), "--out", str(out)]) == 2
    assert out.read_bytes() == b"old"


def test_usage_errors_exit_2(tmp_path: Path, capsys: Any) -> None:
    assert main([str(tmp_path)]) == 2  # --out missing
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o.wav")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_runs_as_a_module(ouro_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.wav"
    r = subprocess.run([sys.executable, "-m", "companion.engine.cli", str(ouro_dir), "--out",
                        str(out), "--block-size", "1000"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert read(out).shape[1] == 6000


def test_start_after_the_end_is_refused(ouro_dir: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "o.wav"
    assert main([str(ouro_dir), "--out", str(out), "--start", "5"]) == 2
    assert "--start: 5 wn is after the project's end" in capsys.readouterr().err
    assert main([str(ouro_dir), "--out", str(out), "--start", "0.2", "--end", "0.1"]) == 2
    assert main([str(ouro_dir), "--out", str(out), "--block-size", "0"]) == 2
    assert not out.exists()


def test_a_project_directory_renders_its_document_as_saved_even_while_open(tmp_path):
    """The app holds the project open and has edited it since project.json was last
    written: ``ouro render`` renders the edits (the document, not the export)."""
    from companion.model.persist import ProjectDir

    path = tmp_path / "song.ouro"
    pd = ProjectDir.create(path, "app")
    try:
        with pd.pool() as pool:
            ref = pool.add_array(np.full((1, 4800), 0.5, np.float32), 48000)
        track = pd.project.add_track("audio", "Tone")
        track.add_clip(ref, start=0.0, length=0.05)
        track.volume = 0.5  # edits after the directory's project.json was written
        out = tmp_path / "mix.wav"
        assert main([str(path), "--out", str(out)]) == 0
    finally:
        pd.close()
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 48000 and audio.shape[0] == 4800
    assert np.all(audio == np.float32(0.25))
