"""Freeze, flatten and unfreeze in the document: one undoable edit each, the original kept
(with its IDs) in the interchange form, frozen tracks refusing content edits, and merges
with a peer who edited the original concurrently converging on every peer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from companion.errors import ProjectError
from companion.model.document import Project
from companion.model.peers import merged_three_ways
from companion.model.repair import plan_repair

SRC = "sha256:" + "ab" * 32
BOUNCED = "sha256:" + "ef" * 32


@dataclass(frozen=True)
class FakeBounce:
    track_id: str
    ref: str = BOUNCED
    start_wn: float = 0.5
    length_wn: float = 2.0


def band(p: Project) -> dict[str, str]:
    """A metatrack with an audio track (effect, automation, send) and a MIDI track."""
    verb = p.add_track("bus", "Verb", track_id="bus")
    g = p.add_track("meta", "Band", track_id="g")
    g.offset = 1.0
    g.add_effect("gain", {"db": -3.0}, effect_id="gfx")
    g.add_automation_point("gfx.db", 0.0, -6.0)
    g.set_send(verb.id, 0.3)
    gt = p.add_track("audio", "Gtr", parent=g.id, track_id="gtr")
    gt.add_clip(SRC, 0.0, 2.0, clip_id="c1", gain=0.5)
    gt.add_effect("delay", effect_id="dly")
    gt.add_automation_point("dly.mix", 1.0, 0.2)
    gt.add_automation_point("volume", 0.0, 0.8)
    gt.set_send(verb.id, 0.5, pre_fader=True)
    keys = p.add_track("midi", "Keys", parent=g.id, track_id="keys")
    keys.add_clip(None, 1.0, 1.0, clip_id="m1",
                  notes=[{"at": 0.0, "length": 0.5, "pitch": 64}])
    g.add_automation_point("volume", 0.0, 0.9)
    g.volume, g.pan = 0.8, -0.2
    return {"meta": g.id, "audio": gt.id, "midi": keys.id, "bus": verb.id}


def find(data: dict[str, Any], tid: str) -> dict[str, Any]:
    stack = list(data["tracks"])
    while stack:
        t = stack.pop()
        if t["id"] == tid:
            return t
        stack.extend(t.get("children", []))
    raise KeyError(tid)


@pytest.mark.parametrize("which", ["meta", "audio", "midi"])
def test_freeze_is_one_undoable_edit_keeping_the_mix_settings_and_the_original(which):
    p = Project.create("alice")
    ids = band(p)
    tid = ids[which]
    before = p.to_interchange()
    plain = p.plain()
    original = find(before, tid)
    p.freeze(tid, FakeBounce(tid))
    assert p.undo_labels[-1] == "freeze track"
    after = p.to_interchange()
    t = find(after, tid)
    assert t["kind"] == "audio" and t["frozen"] == {"track": original}
    for k in ("name", "volume", "pan", "mute", "solo", "sends"):
        assert t[k] == original[k], k
    assert t["effects"] == []
    assert t["automation"] == [ln for ln in original["automation"]
                               if ln["param"] in ("volume", "pan")]
    [clip] = t["clips"]
    assert (clip["source"], clip["start"], clip["length"], clip["gain"]) == \
        (BOUNCED, 0.5, 2.0, 1.0)
    assert p.track(tid).is_frozen and p.track(tid).frozen == original
    assert plan_repair(p.plain()) == []
    # the same place in the arrangement
    assert [x.id for x in p.all_tracks()][:2] == [x["id"] for x in before["tracks"]][:2]
    assert p.undo() == "freeze track"
    assert p.to_interchange() == before and p.plain() == plain
    assert p.redo() == "freeze track"
    assert p.to_interchange() == after


def test_unfreeze_brings_back_the_original_with_its_ids_and_keeps_live_mix_edits():
    p = Project.create("alice")
    ids = band(p)
    before = p.to_interchange()
    p.freeze("g", FakeBounce("g"))
    g = p.track("g")
    g.volume = 0.25  # mix settings stay live while frozen, and after
    g.add_automation_point("pan", 0.0, 0.5)
    p.unfreeze("g")
    assert p.undo_labels[-1] == "unfreeze track"
    now = p.to_interchange()
    assert not p.track("g").is_frozen
    want = find(before, "g")
    got = find(now, "g")
    assert got["volume"] == 0.25
    assert [ln["param"] for ln in got["automation"]] == ["gfx.db", "pan", "volume"]
    want_rest = {k: v for k, v in want.items() if k not in ("volume", "automation")}
    got_rest = {k: v for k, v in got.items() if k not in ("volume", "automation")}
    assert got_rest == want_rest
    assert plan_repair(p.plain()) == []
    p.undo()  # the unfreeze
    assert p.track("g").is_frozen
    p.undo()
    p.undo()
    p.undo()  # the freeze
    assert p.to_interchange() == before
    assert ids["audio"] in [t.id for t in p.all_tracks()]


def test_flatten_drops_the_original_and_leaves_an_ordinary_track():
    p = Project.create("alice")
    band(p)
    before = p.to_interchange()
    p.flatten("g", FakeBounce("g"))
    t = find(p.to_interchange(), "g")
    assert "frozen" not in t and t["kind"] == "audio" and len(t["clips"]) == 1
    assert {x.id for x in p.all_tracks()} == {"bus", "g"}
    assert not p.track("g").is_frozen
    p.track("g").add_clip(SRC, 4.0, 1.0)  # editable
    with pytest.raises(ProjectError, match="is not frozen"):
        p.unfreeze("g")
    p.undo()
    p.undo()
    assert p.to_interchange() == before


def test_a_frozen_track_refuses_content_edits_and_takes_mix_edits():
    p = Project.create("alice")
    band(p)
    other = p.add_track("audio", "Other")
    oc = other.add_clip(SRC, 0, 1)
    p.freeze("gtr", FakeBounce("gtr"))
    t = p.track("gtr")
    [clip] = t.clips()
    before = p.to_interchange()
    refused: list[Callable[[], Any]] = [
        lambda: t.add_clip(SRC, 3.0, 1.0),
        lambda: clip.set(gain=0.5),
        lambda: setattr(clip, "start", 1.0),
        lambda: clip.move(track=other.id),
        lambda: clip.delete(),
        lambda: oc.move(track="gtr"),
        lambda: t.add_effect("gain"),
        lambda: p.freeze("gtr", FakeBounce("gtr")),
    ]
    for edit in refused:
        with pytest.raises(ProjectError, match=r"track gtr.*(unfreeze it first)"):
            edit()
    assert p.to_interchange() == before
    t.volume, t.pan, t.mute, t.solo, t.name = 0.5, 0.5, True, True, "Guitar (frozen)"
    t.add_automation_point("pan", 1.0, -1.0)
    t.set_send("bus", 1.0)
    p.move_track("gtr", None, 0)
    assert t.is_frozen and p.tracks()[0].id == "gtr"


def test_what_cannot_be_frozen_is_refused_before_anything_is_written():
    p = Project.create("alice")
    band(p)
    inner = p.add_track("bus", "Inner", parent="g", track_id="ib")
    p.add_track("audio", "Src", track_id="src").set_send(inner.id)
    before = p.to_interchange()
    with pytest.raises(ProjectError, match="track bus: is a bus"):
        p.freeze("bus", FakeBounce("bus"))
    with pytest.raises(ProjectError, match="track g: holds bus ib, which track src outside"):
        p.freeze("g", FakeBounce("g"))
    with pytest.raises(ProjectError, match="is a bounce of track keys"):
        p.freeze("gtr", FakeBounce("keys"))
    with pytest.raises(ProjectError, match="ref"):
        p.freeze("gtr", FakeBounce("gtr", ref="nope"))
    with pytest.raises(ProjectError, match="track nope: does not exist"):
        p.flatten("nope", FakeBounce("nope"))
    assert p.to_interchange() == before and p.undo_labels[-1] != "freeze track"


def test_the_interchange_round_trip_keeps_a_frozen_track_unfreezable():
    p = Project.create("alice")
    band(p)
    before = p.to_interchange()
    p.freeze("g", FakeBounce("g"))
    data = p.to_interchange()
    q = Project.from_interchange(data, "bob")
    assert q.to_interchange() == data
    assert q.track("g").is_frozen
    q.unfreeze("g")
    assert q.to_interchange() == before


def test_unfreeze_drops_a_send_to_a_bus_deleted_meanwhile():
    p = Project.create("alice")
    band(p)
    p.freeze("g", FakeBounce("g"))
    p.delete_track("bus")
    p.unfreeze("g")
    assert p.track("gtr").sends() == [] and p.track("g").sends() == []
    assert plan_repair(p.plain()) == []


# --------------------------------------------------------------------------- merges

def concurrent(setup: Callable[[Project], Any], edit_a: Callable[[Project], None],
               edit_b: Callable[[Project], None]) -> Project:
    """Both edits on a shared base, merged three ways (A hears B first, B hears A first,
    both at once); every way, both peers end equal and sound. Returns one merged peer."""
    results = []
    ways = merged_three_ways(setup, lambda a, _ctx: edit_a(a), lambda b, _ctx: edit_b(b))
    for order, (ra, rb) in ways.items():
        assert ra.to_interchange() == rb.to_interchange(), order
        assert plan_repair(ra.plain()) == [] and ra.repair() == 0
        results.append(ra)
    assert results[0].to_interchange() == results[1].to_interchange() == \
        results[2].to_interchange()
    return results[0]


def test_peer_edits_a_clip_of_the_track_while_it_is_frozen():
    merged = concurrent(band, lambda a: a.freeze("gtr", FakeBounce("gtr")),
                        lambda b: b.clip("c1").set(gain=0.1, start=0.5))
    t = merged.track("gtr")
    assert t.is_frozen and [c.source for c in t.clips()] == [BOUNCED]
    # the edit landed on content the freeze replaced: the original is as A froze it
    assert t.frozen is not None and t.frozen["clips"][0]["gain"] == 0.5
    merged.unfreeze("gtr")
    assert [c.id for c in t.clips()] == ["c1"] and plan_repair(merged.plain()) == []


def test_peer_adds_a_clip_to_an_audio_track_being_frozen_it_survives_unfreeze():
    merged = concurrent(band, lambda a: a.freeze("gtr", FakeBounce("gtr")),
                        lambda b: b.track("gtr").add_clip(SRC, 6.0, 1.0, clip_id="take"))
    t = merged.track("gtr")
    assert sorted(c.id for c in t.clips())[-1] == "take"  # heard while frozen
    merged.unfreeze("gtr")
    assert sorted(c.id for c in t.clips()) == ["c1", "take"]


def test_peer_edits_inside_a_metatrack_being_frozen():
    def edit_b(b: Project) -> None:
        b.add_track("audio", "New", parent="g", track_id="new")
        b.clip("c1").move(start=3.0)
        b.track("keys").clips()[0].add_note(0.5, 0.25, 70)
        b.track("g").volume = 0.1

    merged = concurrent(band, lambda a: a.freeze("g", FakeBounce("g")), edit_b)
    g = merged.track("g")
    assert g.is_frozen and g.volume == 0.1  # the mix setting merged into the frozen track
    # a track added inside it meanwhile is kept, at the root (repair: unlisted tracks)
    assert [t.id for t in merged.tracks()] == ["bus", "g", "new"]
    assert {t.id for t in merged.all_tracks()} == {"bus", "g", "new"}


def test_peer_deletes_the_track_while_it_is_frozen():
    merged = concurrent(band, lambda a: a.freeze("gtr", FakeBounce("gtr")),
                        lambda b: b.delete_track("gtr"))
    assert "gtr" not in {t.id for t in merged.all_tracks()}
    assert all(c.source != BOUNCED for c in merged.clips())


def test_peer_unfreezes_while_the_other_changes_the_volume():
    def setup(p: Project) -> None:
        band(p)
        p.freeze("g", FakeBounce("g"))

    merged = concurrent(setup, lambda a: a.unfreeze("g"),
                        lambda b: setattr(b.track("g"), "volume", 0.3))
    g = merged.track("g")
    assert not g.is_frozen and g.volume == 0.3 and g.kind == "meta"
    assert [t.id for t in g.children()] == ["gtr", "keys"]


@pytest.mark.parametrize("how_a,how_b", [("freeze", "freeze"), ("freeze", "flatten"),
                                         ("flatten", "freeze"), ("flatten", "flatten")])
def test_two_peers_bouncing_the_same_track_at_once_end_with_one_bounce(how_a, how_b):
    merged = concurrent(
        band,
        lambda a: getattr(a, how_a)("g", FakeBounce("g", ref="sha256:" + "1" * 64)),
        lambda b: getattr(b, how_b)("g", FakeBounce("g", ref="sha256:" + "2" * 64)))
    g = merged.track("g")
    [clip] = g.clips()  # not both: the track would play twice as loud
    assert g.is_frozen == ("freeze" in (how_a, how_b))
    if g.is_frozen:
        # the bounce kept is the frozen one's, and unfreezing gives the original back
        assert clip.id in merged.plain()["tracks"]["g"]["frozen_clips"]
        merged.unfreeze("g")
        assert [t.id for t in g.children()] == ["gtr", "keys"]
        assert plan_repair(merged.plain()) == [] and merged.repair() == 0


def test_a_bounce_clip_moved_to_another_track_is_an_ordinary_clip():
    p = Project.create("alice")
    band(p)
    p.flatten("gtr", FakeBounce("gtr"))
    [c] = p.track("gtr").clips()
    assert c.get()["bounce"] == "gtr"
    other = p.add_track("audio", "Other")
    c.move(track=other.id)
    assert "bounce" not in c.get()


def test_a_metatrack_holding_a_frozen_track_freezes_and_unfreezes_in_layers():
    p = Project.create("alice")
    band(p)
    before = p.to_interchange()
    p.freeze("gtr", FakeBounce("gtr"))
    inner = p.to_interchange()
    p.freeze("g", FakeBounce("g"))
    assert p.track("g").frozen == find(inner, "g")
    q = Project.from_interchange(p.to_interchange(), "bob")  # nested frozen in the file
    for proj in (p, q):
        proj.unfreeze("g")
        assert proj.to_interchange() == inner and proj.track("gtr").is_frozen
        proj.unfreeze("gtr")
        assert proj.to_interchange() == before


def test_two_peers_unfreezing_at_once_end_with_one_copy_of_the_original():
    def setup(p: Project) -> None:
        band(p)
        p.freeze("g", FakeBounce("g"))

    want = Project.create("x")
    band(want)
    merged = concurrent(setup, lambda a: a.unfreeze("g"), lambda b: b.unfreeze("g"))
    got = merged.to_interchange()
    assert not merged.track("g").is_frozen
    assert [t["id"] for t in got["tracks"]] == ["bus", "g"]
    ref = want.to_interchange()
    assert find(got, "g")["children"] == find(ref, "g")["children"]
    assert find(got, "g")["effects"] == find(ref, "g")["effects"]
    assert find(got, "g")["automation"] == find(ref, "g")["automation"]
