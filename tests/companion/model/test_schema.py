"""The interchange form: normalization with defaults, and every kind of bad input refused
with a message naming the track, clip and field."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from companion.engine.pool import Pool
from companion.errors import ProjectError
from companion.model.schema import (
    MAX_JSON_BYTES,
    normalize_project,
    parse_project_text,
    read_project_file,
)

REF = "sha256:" + "ab" * 32


def base(**top: Any) -> dict[str, Any]:
    return {"format": "ouroboros-project", "version": 1, **top}


def three_tracks() -> dict[str, Any]:
    return base(tracks=[
        {"kind": "audio", "id": "t0", "name": "Drums"},
        {"kind": "bus", "id": "fx", "name": "Reverb"},
        {"kind": "audio", "id": "t2", "name": "Bass", "clips": [
            {"id": "c3", "source": REF, "start": 0.0, "length": 1.0}]},
    ])


def refused(project: Any, **kw: Any) -> ProjectError:
    with pytest.raises(ProjectError) as e:
        normalize_project(project, **kw)
    return e.value


def test_defaults_are_filled_in() -> None:
    p = normalize_project(base(tracks=[
        {"kind": "meta", "id": "m", "children": [
            {"kind": "midi", "id": "k", "clips": [
                {"id": "mc", "start": 0, "length": 1, "notes": [
                    {"at": 0, "length": 0.25, "pitch": 60}]}]}]},
        {"kind": "audio", "id": "a", "clips": [{"id": "c", "source": REF, "start": 1,
                                                "length": 2}]},
        {"kind": "bus", "id": "b"}]))
    assert p["sample_rate"] == 48000
    assert p["tempo"] == [{"at": 0.0, "bpm": 120.0, "ramp": False}]
    assert p["meter"] == [{"at": 0.0, "num": 4, "den": 4}]
    assert p["master"] == {"volume": 1.0, "effects": []}
    meta = p["tracks"][0]
    assert (meta["offset"], meta["speed"], meta["name"]) == (0.0, 1.0, "m")
    for t in (meta, p["tracks"][1], p["tracks"][2]):
        assert {k: t[k] for k in ("volume", "pan", "mute", "solo", "effects", "sends",
                                  "automation")} == {
            "volume": 1.0, "pan": 0.0, "mute": False, "solo": False, "effects": [],
            "sends": [], "automation": []}
    midi = meta["children"][0]
    assert midi["instrument"]["kind"] == "synth"
    assert midi["clips"][0]["notes"][0]["velocity"] == 100
    assert midi["clips"][0]["cc"] == []
    c = p["tracks"][1]["clips"][0]
    assert c == {"id": "c", "source": REF, "start": 1.0, "length": 2.0, "offset": 0.0,
                 "gain": 1.0, "fade_in": 0.0, "fade_out": 0.0, "reversed": False,
                 "loop": False, "source_bpm": None}
    assert normalize_project(p) == p  # idempotent


def test_effects_are_normalized_by_the_catalog() -> None:
    p = three_tracks()
    p["tracks"][0]["effects"] = [{"id": "g", "kind": "gain"}]
    t = normalize_project(p)["tracks"][0]
    assert t["effects"] == [{"id": "g", "kind": "gain", "params": {"db": 0.0},
                             "bypass": False}]


def _edit(path: str, value: Any) -> dict[str, Any]:
    """three_tracks() with one field set: ``path`` like ``tracks.2.clips.0.length``."""
    p = three_tracks()
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    obj: Any = p
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = value
    return p


@pytest.mark.parametrize(("path", "value", "where", "problem"), [
    ("tracks.2.clips.0.length", -1.0, 'tracks[2] "Bass" > clips[0] "c3" > length',
     "negative"),
    ("tracks.2.clips.0.start", "soon", 'tracks[2] "Bass" > clips[0] "c3" > start',
     "must be a number"),
    ("tracks.2.clips.0.start", 1e12, 'tracks[2] "Bass" > clips[0] "c3" > start', "between"),
    ("tracks.2.clips.0.gain", float("nan"), 'tracks[2] "Bass" > clips[0] "c3" > gain',
     "finite"),
    ("tracks.2.clips.0.offset", float("inf"), 'tracks[2] "Bass" > clips[0] "c3" > offset',
     "finite"),
    ("tracks.2.clips.0.loop", 1, 'tracks[2] "Bass" > clips[0] "c3" > loop', "true or false"),
    ("tracks.2.clips.0.source", "md5:00", 'tracks[2] "Bass" > clips[0] "c3" > source',
     "sha256"),
    ("tracks.2.clips.0.colour", "red", 'tracks[2] "Bass" > clips[0] "c3" > colour',
     "not a field"),
    ("tracks.0.volume", True, 'tracks[0] "Drums" > volume', "must be a number"),
    ("tracks.0.pan", 1.5, 'tracks[0] "Drums" > pan', "between -1 and 1"),
    ("tracks.0.kind", "video", 'tracks[0] "Drums" > kind', "must be one of"),
    ("tracks.0.clips", {}, 'tracks[0] "Drums" > clips', "must be a list"),
    ("tracks.0.children", [], 'tracks[0] "Drums" > children', "not a field"),
    ("tracks.1.clips", [], 'tracks[1] "Reverb" > clips', "not a field"),
    ("tracks.0.id", "t2", 'tracks[2] "Bass" > id', 'already the id of tracks[0] "Drums"'),
    ("tracks.0.sends", [{"bus": "nope"}], 'tracks[0] "Drums" > sends[0] > bus',
     "not the id of any track"),
    ("tracks.0.sends", [{"bus": "t2"}], 'tracks[0] "Drums" > sends[0] > bus',
     "sends go to buses"),
    ("tracks.1.sends", [{"bus": "fx"}], 'tracks[1] "Reverb" > sends[0] > bus',
     "cycle"),
    ("tracks.0.sends", [{"bus": "fx", "level": -1}], 'tracks[0] "Drums" > sends[0] > level',
     "between"),
    ("tracks.0.effects", [{"id": "e", "kind": "flanger9000"}],
     'tracks[0] "Drums" > effects[0] "e" > kind', "unknown effect kind"),
    ("tracks.0.effects", [{"id": "e", "kind": "gain"}, {"id": "e", "kind": "gain"}],
     'tracks[0] "Drums" > effects[1] "e" > id', "already the id"),
    ("tracks.0.effects", [{"id": "e", "kind": "gain", "params": {"db": 99}}],
     'tracks[0] "Drums" > effects[0] "e" > params > db', "out of range"),
    ("tracks.0.automation", [{"param": "loudness", "points": []}],
     'tracks[0] "Drums" > automation[0] > param', "names nothing"),
    ("tracks.0.automation", [{"param": "fx1.db", "points": []}],
     'tracks[0] "Drums" > automation[0] > param', "names nothing"),
    ("tracks.0.automation", [{"param": "pan", "points": [{"at": 0, "value": 3}]}],
     'tracks[0] "Drums" > automation[0] > points[0] > value', "between"),
    ("tracks.0.automation", [{"param": "pan", "points": [
        {"at": 1, "value": 0}, {"at": 0.5, "value": 0}]}],
     'tracks[0] "Drums" > automation[0] > points[1] > at', "in order"),
    ("tracks.0.automation", [{"param": "volume", "points": [
        {"at": 0, "value": 1, "curve": "bezier"}]}],
     'tracks[0] "Drums" > automation[0] > points[0] > curve', "must be one of"),
    ("tempo", [{"at": 0, "bpm": 120}, {"at": 0, "bpm": 90}], "tempo[1].at", "in order"),
    ("tempo", [{"at": 0, "bpm": 0}], "tempo[0].bpm", "between"),
    ("tempo", [{"at": 0, "bpm": -5}], "tempo[0].bpm", "between"),
    ("tempo", [{"at": 1, "bpm": 120}], "tempo[0].at", "first tempo point"),
    ("tempo", [], "tempo", "at least one"),
    ("sample_rate", 12345, "sample_rate", "must be one of"),
    ("master", {"volume": 1, "fx": []}, "master > fx", "not a field"),
    ("version", 2, "version", "version 1"),
    ("format", "something-else", "format", "ouroboros-project"),
    ("extra", 1, "extra", "not a field"),
])
def test_bad_input_is_refused_naming_where(path: str, value: Any, where: str,
                                           problem: str) -> None:
    e = refused(_edit(path, value))
    assert e.where == where
    assert problem in e.problem
    assert str(e).startswith(where + ": ")


def test_effect_automation_checks_param_and_value() -> None:
    p = three_tracks()
    p["tracks"][0]["effects"] = [{"id": "g", "kind": "gain"}]
    p["tracks"][0]["automation"] = [{"param": "g.gain", "points": []}]
    assert "no parameter 'gain'" in refused(copy.deepcopy(p)).problem
    p["tracks"][0]["automation"] = [{"param": "g.db", "points": [{"at": 0, "value": 500}]}]
    e = refused(p)
    assert e.where == 'tracks[0] "Drums" > automation[0] > points[0] > value'
    p["tracks"][0]["automation"] = [{"param": "g.db", "points": [{"at": 0, "value": -6}]}]
    assert normalize_project(p)["tracks"][0]["automation"][0]["points"][0] == {
        "at": 0.0, "value": -6.0, "curve": "linear"}


def test_instruments() -> None:
    def midi(inst: Any) -> dict[str, Any]:
        return base(tracks=[{"kind": "midi", "id": "k", "name": "Keys", "instrument": inst}])

    assert refused(midi({"kind": "synth", "wave": "noise"})).where == \
        'tracks[0] "Keys" > instrument > wave'
    assert refused(midi({"kind": "synth", "attack": -0.1})).where == \
        'tracks[0] "Keys" > instrument > attack'
    assert refused(midi({"kind": "synth", "sustain": 1.5})).where == \
        'tracks[0] "Keys" > instrument > sustain'
    assert refused(midi({"kind": "organ"})).where == 'tracks[0] "Keys" > instrument > kind'
    sf2 = {"kind": "soundfont", "source": REF, "program": 128}
    assert refused(midi(sf2)).where == 'tracks[0] "Keys" > instrument > program'
    sf2 = {"kind": "soundfont", "source": REF, "bank": 16384}
    assert refused(midi(sf2)).where == 'tracks[0] "Keys" > instrument > bank'
    ok = normalize_project(midi({"kind": "soundfont", "source": REF}))
    assert ok["tracks"][0]["instrument"] == {"kind": "soundfont", "source": REF,
                                             "program": 0, "bank": 0}
    synth = normalize_project(midi({"kind": "synth", "wave": "square", "attack": 0}))
    assert synth["tracks"][0]["instrument"]["wave"] == "square"


def test_midi_clip_fields() -> None:
    def with_note(note: Any) -> dict[str, Any]:
        return base(tracks=[{"kind": "midi", "id": "k", "name": "Keys", "clips": [
            {"id": "m1", "start": 0, "length": 1, "notes": [note]}]}])

    assert refused(with_note({"at": 0, "length": 1, "pitch": 128})).where == \
        'tracks[0] "Keys" > clips[0] "m1" > notes[0] > pitch'
    assert refused(with_note({"at": 0, "length": 1, "pitch": 60, "velocity": 0})).where == \
        'tracks[0] "Keys" > clips[0] "m1" > notes[0] > velocity'
    assert refused(with_note({"at": 0, "length": -1, "pitch": 60})).problem == \
        "must not be negative, got -1"


def test_duplicate_clip_ids_across_tracks() -> None:
    p = three_tracks()
    p["tracks"][0]["clips"] = [{"id": "c3", "source": REF, "start": 0, "length": 1}]
    e = refused(p)
    assert e.where == 'tracks[2] "Bass" > clips[0] "c3" > id'


def _nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"kind": "audio", "id": "leaf"}
    for i in range(depth):
        inner = {"kind": "meta", "id": f"m{i}", "children": [inner]}
    return base(tracks=[inner])


def test_metatracks_nest_at_most_ten_deep() -> None:
    normalize_project(_nested(10))
    e = refused(_nested(11))
    assert "nest at most 10" in e.problem
    assert e.where.count("children[0]") == 10


def test_cycle_through_the_tree_and_a_send() -> None:
    p = base(tracks=[{"kind": "meta", "id": "m", "name": "Group",
                      "sends": [{"bus": "b"}],
                      "children": [{"kind": "bus", "id": "b", "name": "Inner"}]}])
    e = refused(p)
    assert e.where == 'tracks[0] "Group" > sends[0] > bus'
    assert e.problem == 'routing cycle: "m" -> "b" -> "m"'


def test_cycle_between_buses() -> None:
    p = base(tracks=[{"kind": "bus", "id": "a", "sends": [{"bus": "b"}]},
                     {"kind": "bus", "id": "b", "sends": [{"bus": "c"}]},
                     {"kind": "bus", "id": "c", "sends": [{"bus": "a"}]}])
    assert "routing cycle" in refused(p).problem
    p["tracks"][2]["sends"] = []
    normalize_project(p)


def test_missing_source_with_a_pool(tmp_path: Path) -> None:
    with Pool(tmp_path, 48000) as pool:
        e = refused(three_tracks(), pool=pool)
        assert e.where == 'tracks[2] "Bass" > clips[0] "c3" > source'
        assert "not in the pool" in e.problem


def test_file_sources_are_imported(tmp_path: Path) -> None:
    sf.write(tmp_path / "loop.wav", np.zeros((100, 1), np.float32), 48000, subtype="FLOAT")
    p = three_tracks()
    p["tracks"][2]["clips"][0]["source"] = {"file": "loop.wav"}
    assert normalize_project(p)["tracks"][2]["clips"][0]["source"] == {"file": "loop.wav"}
    with Pool(tmp_path / "proj", 48000) as pool:
        got = normalize_project(p, pool, base_dir=tmp_path)
        ref = got["tracks"][2]["clips"][0]["source"]
        assert ref.startswith("sha256:") and pool.source(ref).frames == 100
        p["tracks"][2]["clips"][0]["source"] = {"file": "missing.wav"}
        e = refused(p, pool=pool, base_dir=tmp_path)
        assert e.where == 'tracks[2] "Bass" > clips[0] "c3" > source > file'


# --------------------------------------------------------------------------- the text

def test_nan_and_infinity_literals_are_refused() -> None:
    for lit in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ProjectError, match="not a number a project may hold"):
            parse_project_text(f'{{"a": {lit}}}')


def test_overflowing_number_is_refused_as_not_finite() -> None:
    text = json.dumps(three_tracks()).replace('"length": 1.0', '"length": 1e400')
    e = refused(parse_project_text(text))
    assert e.where == 'tracks[2] "Bass" > clips[0] "c3" > length'


def test_not_json_or_not_an_object() -> None:
    with pytest.raises(ProjectError, match=r"not valid JSON: .* line 1"):
        parse_project_text("{tracks: []}")
    with pytest.raises(ProjectError, match="must hold a JSON object"):
        parse_project_text("[1, 2]")
    with pytest.raises(ProjectError, match=r"not valid JSON|cannot be read"):
        parse_project_text(b"\xff\xfe{}\x00\x81")


def test_oversized_text_is_refused_before_parsing() -> None:
    text = b"[" + b"1," * (MAX_JSON_BYTES // 2) + b"1]"
    t0 = time.perf_counter()
    with pytest.raises(ProjectError, match="a project file may be at most 20 MB"):
        parse_project_text(text)
    assert time.perf_counter() - t0 < 0.1


def test_100_mb_file_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "project.json"
    with open(path, "wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: nothing to write or read
    t0 = time.perf_counter()
    with pytest.raises(ProjectError) as e:
        read_project_file(path)
    assert time.perf_counter() - t0 < 0.1
    assert "104.9 MB" in e.value.problem and e.value.where == str(path)


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_nesting_is_refused(depth: int) -> None:
    with pytest.raises(ProjectError, match="nested deeper than 64"):
        parse_project_text("[" * depth + "]" * depth)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="cannot be read"):
        read_project_file(tmp_path / "nope.json")
