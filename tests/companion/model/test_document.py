"""``companion.model.document``: the typed API over the pycrdt document, its checks and
its undo (one user's edits only)."""

from __future__ import annotations

import math

import pytest

from companion.errors import ProjectError
from companion.model.document import Project

SRC = "sha256:" + "ab" * 32


def band() -> tuple[Project, dict[str, str]]:
    p = Project.create("alice", sample_rate=48000, bpm=120.0)
    drums = p.add_track("audio", "Drums")
    keys = p.add_track("midi", "Keys")
    verb = p.add_track("bus", "Verb")
    group = p.add_track("meta", "Band")
    gtr = p.add_track("audio", "Gtr", parent=group.id)
    return p, {"drums": drums.id, "keys": keys.id, "verb": verb.id, "group": group.id,
               "gtr": gtr.id}


def test_tracks_in_order_with_defaults():
    p, ids = band()
    assert [t.name for t in p.tracks()] == ["Drums", "Keys", "Verb", "Band"]
    assert [t.name for t in p.all_tracks()] == ["Drums", "Keys", "Verb", "Band", "Gtr"]
    g = p.track(ids["group"])
    assert [c.id for c in g.children()] == [ids["gtr"]]
    assert p.track(ids["gtr"]).parent == g
    d = p.track(ids["drums"])
    assert (d.kind, d.volume, d.pan, d.mute, d.solo) == ("audio", 1.0, 0.0, False, False)
    assert (g.offset, g.speed) == (0.0, 1.0)
    p.add_track("audio", "First", index=0)
    assert p.tracks()[0].name == "First"


def test_track_properties_are_checked_and_undoable():
    p, ids = band()
    d = p.track(ids["drums"])
    d.volume = 0.5
    d.pan = -0.25
    d.name = "Kit"
    d.mute = True
    assert (d.volume, d.pan, d.name, d.mute) == (0.5, -0.25, "Kit", True)
    for field, bad in (("volume", -1), ("volume", math.nan), ("pan", 2.0), ("mute", 1),
                       ("name", 3)):
        with pytest.raises(ProjectError, match=field):
            setattr(d, field, bad)
    with pytest.raises(ProjectError, match="only metatracks"):
        d.speed = 2.0
    assert p.undo_labels[-4:] == ["set track volume", "set track pan", "rename track",
                                  "mute track"]
    p.undo()
    assert d.mute is False
    p.undo()
    assert d.name == "Drums"
    p.redo()
    assert d.name == "Kit"
    assert p.redo_labels == ["mute track"]


def test_audio_clip_fields():
    p, ids = band()
    c = p.track(ids["drums"]).add_clip(SRC, start=1.0, length=2.0, gain=0.5, loop=True)
    assert c.get() | {} == {"track": ids["drums"], "kind": "audio", "start": 1.0,
                            "length": 2.0, "offset": 0.0, "gain": 0.5, "fade_in": 0.0,
                            "fade_out": 0.0, "reversed": False, "loop": True,
                            "source": SRC} | {}
    c.fade_in = 0.1
    c.reversed = True
    c.source_bpm = 100.0
    assert (c.fade_in, c.reversed, c.source_bpm) == (0.1, True, 100.0)
    c.source_bpm = None
    assert c.source_bpm is None
    c.set(start=4.0, length=1.0)
    assert (c.start, c.length) == (4.0, 1.0)
    assert p.undo_labels[-1] == "edit clip"
    p.undo()
    assert (c.start, c.length) == (1.0, 2.0)  # one step for both fields


@pytest.mark.parametrize("field,value,message", [
    ("length", -1.0, "at least 0"),
    ("start", math.inf, "finite"),
    ("gain", "loud", "number"),
    ("source", "sha256:xyz", "sha256"),
    ("source_bpm", 0.5, "at least 1"),
])
def test_bad_clip_values_are_refused_and_change_nothing(field, value, message):
    p, ids = band()
    c = p.track(ids["drums"]).add_clip(SRC, 0.0, 1.0)
    before = p.to_interchange()
    n = len(p.undo_labels)
    with pytest.raises(ProjectError, match=message) as e:
        c.set(**{field: value})
    assert field in str(e.value) and c.id in str(e.value)
    assert p.to_interchange() == before and len(p.undo_labels) == n


def test_midi_clip_notes_and_cc():
    p, ids = band()
    k = p.track(ids["keys"])
    c = k.add_midi_clip(0.0, 1.0, notes=[{"at": 0.25, "length": 0.25, "pitch": 64,
                                          "velocity": 90}])
    nid = c.add_note(0.0, 0.25, 60, 100)
    c.add_cc(0.0, 7, 100)
    assert [(n["at"], n["pitch"]) for n in c.notes()] == [(0.0, 60), (0.25, 64)]
    c.move_note(nid, pitch=62)
    assert c.notes()[0]["pitch"] == 62
    assert c.cc()[0]["controller"] == 7
    with pytest.raises(ProjectError, match="pitch"):
        c.add_note(0.0, 0.25, 128)
    with pytest.raises(ProjectError, match="audio clip"):
        p.track(ids["drums"]).add_clip(SRC, 0, 1).notes()
    with pytest.raises(ProjectError, match="MIDI clip takes only"):
        k.add_clip(SRC, 0, 1)
    with pytest.raises(ProjectError, match="holds no clips"):
        p.track(ids["group"]).add_clip(SRC, 0, 1)


def test_clip_move_between_tracks_of_its_kind():
    p, ids = band()
    c = p.track(ids["drums"]).add_clip(SRC, 0.0, 1.0)
    c.move(start=2.0, track=ids["gtr"])
    assert (c.track.id, c.start) == (ids["gtr"], 2.0)
    assert [x.id for x in p.track(ids["gtr"]).clips()] == [c.id]
    with pytest.raises(ProjectError, match="cannot go on a midi track"):
        c.move(track=ids["keys"])
    with pytest.raises(ProjectError, match="does not exist"):
        c.move(track="nope")


def test_effects_chain():
    p, ids = band()
    d = p.track(ids["drums"])
    a = d.add_effect("gain", {"db": -6.0})
    b = d.add_effect("lowpass", {"cutoff_hz": 1000.0}, index=0)
    assert [e["id"] for e in d.effects()] == [b, a]
    d.move_effect(a, 0)
    assert [e["id"] for e in d.effects()] == [a, b]
    d.set_effect_param(a, "db", -3.0)
    d.set_bypass(b, True)
    assert d.effects()[0]["params"] == {"db": -3.0} and d.effects()[1]["bypass"] is True
    assert d.effects()[1]["params"]["q"] > 0  # the catalog's defaults are filled in
    with pytest.raises(ProjectError, match="no parameter"):
        d.set_effect_param(a, "wet", 1.0)
    with pytest.raises(ProjectError, match="fuzzbox"):
        d.add_effect("fuzzbox")
    d.add_automation_point(f"{a}.db", 0.0, -6.0)
    d.remove_effect(a)
    assert [e["id"] for e in d.effects()] == [b]
    assert d.automation() == []  # its lanes went with it
    p.undo()
    assert [e["id"] for e in d.effects()] == [a, b] and len(d.automation()) == 1
    m = p.master
    m.add_effect("limiter", {"ceiling_db": -1.0})
    m.volume = 0.8
    assert p.to_interchange()["master"]["volume"] == 0.8
    assert p.to_interchange()["master"]["effects"][0]["kind"] == "limiter"


def test_automation_names_volume_pan_or_an_effect_param():
    p, ids = band()
    d = p.track(ids["drums"])
    pid = d.add_automation_point("volume", 1.0, 0.5, "scurve")
    d.add_automation_point("volume", 0.0, 1.0)
    assert [pt["at"] for pt in d.automation()[0]["points"]] == [0.0, 1.0]
    d.move_automation_point("volume", pid, 2.0, 0.25)
    assert d.automation()[0]["points"][1] == {"at": 2.0, "value": 0.25, "curve": "scurve"}
    with pytest.raises(ProjectError, match="does not have"):
        d.add_automation_point("fx1.db", 0, 1)
    with pytest.raises(ProjectError, match="must be"):
        d.add_automation_point("gain", 0, 1)
    e = d.add_effect("gain", {"db": 0.0})
    with pytest.raises(ProjectError, match="no parameter"):
        d.add_automation_point(f"{e}.q", 0, 1)
    with pytest.raises(ProjectError, match="db"):
        d.add_automation_point(f"{e}.db", 0, 1e6)  # out of the parameter's range
    with pytest.raises(ProjectError, match="curve"):
        d.add_automation_point("pan", 0, 0, "wobbly")


def test_sends_go_to_buses_without_loops():
    p, ids = band()
    d = p.track(ids["drums"])
    d.set_send(ids["verb"], 0.5)
    assert d.sends() == [{"bus": ids["verb"], "level": 0.5, "pre_fader": False}]
    with pytest.raises(ProjectError, match="not a bus"):
        d.set_send(ids["keys"])
    bus2 = p.add_track("bus", "Delay")
    p.track(ids["verb"]).set_send(bus2.id)
    with pytest.raises(ProjectError, match="loop"):
        bus2.set_send(ids["verb"])
    # a metatrack sending to a bus inside itself feeds itself
    inner = p.add_track("bus", "Inner", parent=ids["group"])
    with pytest.raises(ProjectError, match="loop"):
        p.track(ids["group"]).set_send(inner.id)
    # deleting a bus takes the sends to it
    p.delete_track(ids["verb"])
    assert d.sends() == []


def test_tree_moves_group_ungroup_and_their_limits():
    p, ids = band()
    with pytest.raises(ProjectError, match="cycle"):
        p.move_track(ids["group"], parent=ids["group"])
    inner = p.add_track("meta", "Inner", parent=ids["group"])
    with pytest.raises(ProjectError, match="cycle"):
        p.move_track(ids["group"], parent=inner.id)
    with pytest.raises(ProjectError, match="not a metatrack"):
        p.move_track(ids["drums"], parent=ids["keys"])
    p.move_track(ids["drums"], parent=inner.id)
    assert p.track(ids["drums"]).parent == inner
    g = p.group([ids["keys"], ids["verb"]], "KV")
    assert [t.id for t in p.tracks()] == [g.id, ids["group"]]
    assert [c.id for c in g.children()] == [ids["keys"], ids["verb"]]
    assert p.undo_labels[-1] == "group tracks"
    kids = p.ungroup(g.id)
    assert [t.id for t in kids] == [ids["keys"], ids["verb"]]
    assert [t.id for t in p.tracks()] == [ids["keys"], ids["verb"], ids["group"]]
    p.undo()
    assert [t.id for t in p.tracks()] == [g.id, ids["group"]]


def test_metatracks_nest_at_most_ten_deep():
    p = Project.create("alice")
    parent = None
    for i in range(10):
        parent = p.add_track("meta", f"m{i}", parent=parent).id
    p.add_track("audio", "deep", parent=parent)  # audio at the bottom is fine
    with pytest.raises(ProjectError, match="more than 10 deep"):
        p.add_track("meta", "too deep", parent=parent)
    outer = p.add_track("meta", "outer")
    with pytest.raises(ProjectError, match="more than 10 deep"):
        p.move_track(p.tracks()[0].id, parent=outer.id)


def test_delete_track_takes_its_children_and_clips():
    p, ids = band()
    c = p.track(ids["gtr"]).add_clip(SRC, 0, 1)
    p.delete_track(ids["group"])
    assert not c.exists and not p.track(ids["drums"]).clips()
    assert ids["gtr"] not in [t.id for t in p.all_tracks()]
    p.undo()
    assert c.exists and p.track(ids["gtr"]).parent == p.track(ids["group"])


def test_tempo_and_meter():
    p = Project.create("alice", bpm=100.0)
    p.set_bpm(140.0, at=4.0)
    assert p.tempo == [{"at": 0.0, "bpm": 100.0, "ramp": False},
                       {"at": 4.0, "bpm": 140.0, "ramp": False}]
    with pytest.raises(ProjectError, match="in order"):
        p.set_tempo([{"at": 0, "bpm": 120}, {"at": 2, "bpm": 90}, {"at": 1, "bpm": 100}])
    with pytest.raises(ProjectError, match="first tempo point"):
        p.set_tempo([{"at": 1, "bpm": 120}])
    with pytest.raises(ProjectError, match="bpm"):
        p.set_tempo([{"at": 0, "bpm": -5}])
    p.remove_tempo_point(4.0)
    assert len(p.tempo) == 1
    p.set_meter([{"at": 0, "num": 3, "den": 4}])
    assert p.meter == [{"at": 0.0, "num": 3, "den": 4}]
    with pytest.raises(ProjectError, match="den"):
        p.set_meter([{"at": 0, "num": 3, "den": 5}])


def test_edit_groups_steps_and_rolls_back_on_error():
    p, ids = band()
    d = p.track(ids["drums"])
    with p.edit("mix"):
        d.volume = 0.1
        d.pan = 0.5
    assert p.undo_labels[-1] == "mix"
    p.undo()
    assert (d.volume, d.pan) == (1.0, 0.0)
    before = p.to_interchange()
    labels = p.undo_labels
    with pytest.raises(ProjectError), p.edit("half"):
        d.volume = 0.3
        d.add_clip(SRC, 0, -1)
    assert p.to_interchange() == before
    assert p.undo_labels == labels and not p.can_redo


def test_end_position_follows_metatrack_offset_and_speed():
    p, ids = band()
    g = p.track(ids["group"])
    g.offset = 2.0
    g.speed = 2.0
    p.track(ids["gtr"]).add_clip(SRC, 1.0, 3.0)  # ends at 4 inside, 2 + 4 / 2 = 4 outside
    p.track(ids["drums"]).add_clip(SRC, 0.0, 3.5)
    assert p.end_position() == 4.0


def test_interchange_round_trip_through_a_new_document():
    p, ids = band()
    d = p.track(ids["drums"])
    d.add_clip(SRC, 0.0, 2.0, loop=True, source_bpm=120.0)
    e = d.add_effect("gain", {"db": -3.0})
    d.add_automation_point(f"{e}.db", 1.0, -6.0, "exp")
    d.set_send(ids["verb"], 0.3, pre_fader=True)
    p.track(ids["keys"]).add_midi_clip(1.0, 1.0, notes=[{"at": 0, "length": 0.5,
                                                         "pitch": 60, "velocity": 99}],
                                       cc=[{"at": 0, "controller": 1, "value": 5}])
    p.track(ids["group"]).speed = 0.5
    data = p.to_interchange()
    assert data["format"] == "ouroboros-project" and data["version"] == 1
    assert [t["name"] for t in data["tracks"]] == ["Drums", "Keys", "Verb", "Band"]
    assert data["tracks"][3]["children"][0]["name"] == "Gtr"
    q = Project.from_interchange(data, "bob")
    assert q.to_interchange() == data
    assert not q.can_undo  # an import is the starting point, not an edit


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["tracks"][0].__setitem__("kind", "video"), "kind"),
    (lambda d: d["tracks"][0]["clips"][0].__setitem__("length", -1.0), "length"),
    (lambda d: d["tracks"][0].__setitem__("colour", "red"), "colour"),
    (lambda d: d["tempo"].append({"at": -1.0, "bpm": 90.0, "ramp": False}), "tempo[1]"),
    (lambda d: d["tracks"][0]["sends"].append({"bus": "nope", "level": 1.0,
                                               "pre_fader": False}), "nope"),
    (lambda d: d["tracks"][1]["children"].append(dict(d["tracks"][0])), "already the id"),
])
def test_bad_imports_name_the_field(mutate, where):
    p = Project.create("alice")
    d = p.add_track("audio", "Drums")
    d.add_clip(SRC, 0, 1)
    p.add_track("meta", "G")
    data = p.to_interchange()
    mutate(data)
    with pytest.raises(ProjectError) as e:
        Project.from_interchange(data, "bob")
    assert where in str(e.value)


def test_file_sources_go_into_the_pool(tmp_path):
    import numpy as np
    import soundfile as sf

    from companion.engine.pool import Pool

    p = Project.create("alice")
    p.add_track("audio", "A").add_clip(SRC, 0, 1)
    data = p.to_interchange()
    data["tracks"][0]["clips"][0]["source"] = {"file": "loops/a.wav"}
    with pytest.raises(ProjectError, match="pool"):
        Project.from_interchange(data, "bob")
    (tmp_path / "loops").mkdir()
    sf.write(tmp_path / "loops" / "a.wav", np.zeros((480, 2), np.float32), 48000)
    with Pool(tmp_path / "proj", 48000) as pool:
        q = Project.from_interchange(data, "bob", pool=pool, base_dir=tmp_path)
        ref = q.to_interchange()["tracks"][0]["clips"][0]["source"]
        assert ref.startswith("sha256:") and ref in pool.refs()


@pytest.mark.parametrize("module", ["document", "persist", "session_import"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"companion.model.{module}")
    result = doctest.testmod(mod)
    assert result.failed == 0 and result.attempted > 0
