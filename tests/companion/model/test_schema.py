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
    NormalizeCache,
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


# --------------------------------------------------------------------------- the cache

def _rich() -> dict[str, Any]:
    """Every kind of track, nested, with effects, lanes, sends, MIDI and a frozen track."""
    clip = {"id": "c1", "source": REF, "start": 0.5, "length": 1.0, "fade_in": 0.01}
    frozen = {"track": {"kind": "audio", "id": "orig", "clips": [
        {"id": "oc", "source": REF, "start": 0, "length": 1}]}}
    return base(tempo=[{"at": 0, "bpm": 100}, {"at": 4, "bpm": 140, "ramp": True}], tracks=[
        {"kind": "audio", "id": "a", "name": "A", "clips": [clip], "volume": 0.5,
         "effects": [{"id": "g", "kind": "gain", "params": {"db": -3}}],
         "automation": [{"param": "g.db", "points": [{"at": 0, "value": -6}]}],
         "sends": [{"bus": "bus", "level": 0.2}]},
        {"kind": "meta", "id": "grp", "speed": 2, "children": [
            {"kind": "midi", "id": "k", "clips": [{"id": "mc", "start": 0, "length": 1,
                                                   "notes": [{"at": 0, "length": 0.5,
                                                              "pitch": 60}]}]},
            {"kind": "meta", "id": "inner", "children": [
                {"kind": "audio", "id": "f", "frozen": frozen, "clips": [
                    {"id": "fc", "source": REF, "start": 2, "length": 1}]}]}]},
        {"kind": "bus", "id": "bus", "pan": 0.5},
    ])


def _cached(raw: Any, cache: NormalizeCache) -> tuple[dict[str, Any], NormalizeCache]:
    """As compile_plan does it: a new cache seeded with the last one, kept if it worked."""
    mine = NormalizeCache(cache)
    return normalize_project(raw, cache=mine), mine


def test_a_cache_gives_exactly_what_a_full_check_gives() -> None:
    p = _rich()
    first, cache = _cached(p, NormalizeCache())
    assert first == normalize_project(p)
    edits = [
        lambda q: q["tracks"][0]["clips"][0].update(start=0.75),
        lambda q: q["tracks"][2].update(volume=0.25),
        lambda q: q["tracks"][1]["children"][0]["clips"][0]["notes"][0].update(pitch=61),
        lambda q: q["tracks"].insert(0, {"kind": "audio", "id": "new"}),
        lambda q: q["tracks"].pop(1),
        lambda q: q.update(tempo=[{"at": 0, "bpm": 90}]),
        lambda q: q["tracks"].reverse(),
        lambda q: next(t for t in q["tracks"] if t["id"] == "grp")["children"].reverse(),
    ]
    for edit in edits:
        q = copy.deepcopy(p)
        edit(q)
        again, cache = _cached(q, cache)
        assert again == normalize_project(q)
        assert json.dumps(again) == json.dumps(normalize_project(q))  # key order too
        p = q
    # unchanged tracks are the very objects the last check made, changed ones are new
    q = copy.deepcopy(p)
    q["tracks"][0]["volume"] = 0.125
    before = normalize_project(p, cache=cache)
    after = normalize_project(q, cache=cache)
    assert after["tracks"][1] is before["tracks"][1]
    assert after["tracks"][0] is not before["tracks"][0]
    assert len(cache.entries) == len([*iter_all(after["tracks"])])


def iter_all(tracks: list[dict[str, Any]]) -> Any:
    for t in tracks:
        yield t
        yield from iter_all(t.get("children", []))


@pytest.mark.parametrize("edit", [
    "mute as 1", "volume as true", "duplicate clip id", "duplicate track id",
    "nested too deep", "cycle", "unknown bus", "bad source",
])
def test_a_cache_keeps_every_error_as_it_was(edit: str) -> None:
    """Whatever an edit breaks, a cached check refuses it with the very error a full check
    gives: a type that only ``==`` would take for the old value, ids that clash with a
    cached track's, a cached metatrack moved deeper, routing through cached tracks."""
    p = _rich()
    p["tracks"].append(_nested(10)["tracks"][0])  # as deep as may be
    _, cache = _cached(p, NormalizeCache())
    q = copy.deepcopy(p)
    if edit == "mute as 1":
        q["tracks"][0]["mute"] = False
        _, cache = _cached(q, cache)  # cached with False ...
        q = copy.deepcopy(q)
        q["tracks"][0]["mute"] = 0  # ... equal to 0 for ==, but not a boolean
    elif edit == "volume as true":
        q["tracks"][0]["volume"] = 1
        _, cache = _cached(q, cache)
        q = copy.deepcopy(q)
        q["tracks"][0]["volume"] = True
    elif edit == "duplicate clip id":  # a new track before a cached one, with its clip id
        q["tracks"].insert(0, {"kind": "audio", "id": "z", "clips": [
            {"id": "fc", "source": REF, "start": 0, "length": 1}]})
    elif edit == "duplicate track id":
        q["tracks"].insert(0, {"kind": "bus", "id": "inner"})
    elif edit == "nested too deep":  # the cached chain moved one level down
        q["tracks"].append({"kind": "meta", "id": "outer", "children": [q["tracks"].pop()]})
    elif edit == "cycle":
        q["tracks"].append({"kind": "bus", "id": "b2", "sends": [{"bus": "bus"}]})
        q["tracks"][2]["sends"] = [{"bus": "b2"}]
    elif edit == "unknown bus":
        q["tracks"][2]["kind"] = "audio"  # a's send now names an audio track
    elif edit == "bad source":
        q["tracks"][0]["clips"][0]["source"] = "sha256:" + "AB" * 32
    full = refused(q)
    before = dict(cache.entries)
    with pytest.raises(ProjectError) as e:
        normalize_project(q, cache=cache)
    assert (e.value.where, e.value.problem) == (full.where, full.problem)
    assert cache.entries == before  # a refused project leaves the cache as it was


def test_a_cache_follows_the_pool(tmp_path: Path) -> None:
    """Entries are checked against one pool: another pool checks every source again."""
    with Pool(tmp_path / "p1", 48000) as p1, Pool(tmp_path / "p2", 48000) as p2:
        ref = p1.add_array(np.zeros((1, 100), np.float32), 48000)
        p = base(tracks=[{"kind": "audio", "id": "a", "clips": [
            {"id": "c", "source": ref, "start": 0, "length": 1}]}])
        cache = NormalizeCache()
        normalize_project(p, p1, cache=cache)
        with pytest.raises(ProjectError, match="not in the pool"):
            normalize_project(p, p2, cache=cache)

