"""Two peers, two documents: concurrent edits merged in either order end in the same state,
invariants repaired the same way on every peer, and undo that only ever reverts its own
user's edits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from companion.model.document import REPAIR_ORIGIN, Project
from companion.model.peers import merged_three_ways, sync

SRC = "sha256:" + "cd" * 32


def concurrent(setup: Callable[[Project], Any], edit_a: Callable[[Project, Any], None],
               edit_b: Callable[[Project, Any], None]) -> dict[str, dict[str, Any]]:
    """Run ``edit_a`` and ``edit_b`` concurrently on a shared base made by ``setup``, then
    merge them three ways: A hears B first, B hears A first, both hear each other at once
    (so both repair before they hear the other's repair). Every way, both peers end equal;
    returns each way's final interchange form."""
    results = {}
    for order, (ra, rb) in merged_three_ways(setup, edit_a, edit_b).items():
        assert ra.to_interchange() == rb.to_interchange(), order
        assert ra.plain() == rb.plain(), order
        assert ra.repair() == 0 and rb.repair() == 0
        results[order] = ra.to_interchange()
    assert results["a_first"] == results["b_first"] == results["at_once"]
    return results


def names(data: dict[str, Any]) -> list[Any]:
    """The tree as nested names."""
    def walk(t: dict[str, Any]) -> Any:
        return (t["name"], [walk(c) for c in t["children"]]) if t["kind"] == "meta" \
            else t["name"]
    return [walk(t) for t in data["tracks"]]


def test_clip_moved_onto_a_track_the_other_peer_deleted_is_dropped():
    def setup(p: Project) -> dict[str, str]:
        t1 = p.add_track("audio", "One", track_id="t1")
        p.add_track("audio", "Two", track_id="t2")
        c = t1.add_clip(SRC, 0, 1, clip_id="c1")
        t1.add_clip(SRC, 2, 1, clip_id="c2")
        return {"clip": c.id}

    res = concurrent(setup, lambda a, ctx: a.clip("c1").move(start=4.0, track="t2"),
                     lambda b, ctx: b.delete_track("t2"))
    data = res["a_first"]
    assert names(data) == ["One"]
    assert [c["id"] for c in data["tracks"][0]["clips"]] == ["c2"]


def test_metatracks_grouped_into_each_other_keep_the_lowest_id_at_the_root():
    def setup(p: Project) -> None:
        p.add_track("meta", "M1", track_id="m1")
        p.add_track("meta", "M2", track_id="m2")
        p.add_track("audio", "A", parent="m2", track_id="a")

    res = concurrent(setup, lambda a, _: a.move_track("m2", parent="m1"),
                     lambda b, _: b.move_track("m1", parent="m2"))
    assert names(res["a_first"]) == [("M1", [("M2", ["A"])])]


def test_concurrent_group_of_the_same_tracks_lists_each_track_once():
    def setup(p: Project) -> None:
        for t in ("x", "y", "z"):
            p.add_track("audio", t.upper(), track_id=t)

    res = concurrent(setup, lambda a, _: a.group(["x", "y"], "GA"),
                     lambda b, _: b.group(["y", "z"], "GB"))
    flat = res["a_first"]["tracks"]
    listed = [c["id"] for t in flat if t["kind"] == "meta" for c in t["children"]] + \
        [t["id"] for t in flat if t["kind"] != "meta"]
    assert sorted(listed) == ["x", "y", "z"]


def test_track_moved_to_two_places_ends_in_one():
    def setup(p: Project) -> None:
        p.add_track("meta", "G1", track_id="g1")
        p.add_track("meta", "G2", track_id="g2")
        p.add_track("audio", "T", track_id="t")

    res = concurrent(setup, lambda a, _: a.move_track("t", parent="g2"),
                     lambda b, _: b.move_track("t", parent="g1"))
    assert names(res["a_first"]) == [("G1", ["T"]), ("G2", [])]


def test_concurrent_nesting_deeper_than_ten_is_cut_at_the_root():
    def setup(p: Project) -> None:
        for chain in ("a", "b"):
            parent = None
            for i in range(5):
                parent = p.add_track("meta", f"{chain}{i}", parent=parent,
                                     track_id=f"{chain}{i}").id
        p.add_track("meta", "c", track_id="c")

    # each edit makes ten levels; together they make eleven
    res = concurrent(setup, lambda a, _: a.move_track("b0", parent="a4"),
                     lambda b, _: b.move_track("a0", parent="c"))

    def depth(t: dict[str, Any]) -> int:
        return 1 + max((depth(c) for c in t.get("children", [])), default=0)
    data = res["a_first"]
    assert [depth(t) for t in data["tracks"]] == [10, 1]
    assert data["tracks"][1]["id"] == "b4"  # the one too deep left for the root


def test_sends_that_close_a_loop_lose_the_later_one():
    def setup(p: Project) -> None:
        p.add_track("bus", "B1", track_id="b1")
        p.add_track("bus", "B2", track_id="b2")

    res = concurrent(setup, lambda a, _: a.track("b1").set_send("b2", 0.5),
                     lambda b, _: b.track("b2").set_send("b1", 0.5))
    sends = {t["id"]: t["sends"] for t in res["a_first"]["tracks"]}
    assert sends == {"b1": [{"bus": "b2", "level": 0.5, "pre_fader": False}], "b2": []}


def test_send_to_a_bus_the_other_peer_deleted_goes():
    def setup(p: Project) -> None:
        p.add_track("bus", "B", track_id="b")
        p.add_track("audio", "T", track_id="t")

    res = concurrent(setup, lambda a, _: a.track("t").set_send("b"),
                     lambda b, _: b.delete_track("b"))
    assert res["a_first"]["tracks"][0]["sends"] == []


def test_automation_of_an_effect_the_other_peer_removed_goes():
    def setup(p: Project) -> str:
        return p.add_track("audio", "T", track_id="t").add_effect("gain", {"db": 0.0},
                                                                  effect_id="fx1")

    res = concurrent(setup, lambda a, e: a.track("t").add_automation_point(f"{e}.db", 0, -3),
                     lambda b, e: b.track("t").remove_effect(e))
    t = res["a_first"]["tracks"][0]
    assert t["effects"] == [] and t["automation"] == []


def test_concurrent_edits_to_the_same_field_agree():
    def setup(p: Project) -> None:
        p.add_track("audio", "T", track_id="t").add_clip(SRC, 0, 1, clip_id="c")

    def ea(a: Project, _: None) -> None:
        a.track("t").volume = 0.2
        a.clip("c").gain = 0.5

    def eb(b: Project, _: None) -> None:
        b.track("t").volume = 0.7
        b.clip("c").loop = True  # another field of the same clip: both survive

    res = concurrent(setup, ea, eb)
    t = res["a_first"]["tracks"][0]
    assert t["volume"] in (0.2, 0.7)
    assert (t["clips"][0]["gain"], t["clips"][0]["loop"]) == (0.5, True)


def test_concurrent_effect_inserts_keep_both():
    def setup(p: Project) -> None:
        p.add_track("audio", "T", track_id="t")

    res = concurrent(setup, lambda a, _: a.track("t").add_effect("gain", effect_id="fa"),
                     lambda b, _: b.track("t").add_effect("lowpass", effect_id="fb"))
    assert sorted(e["id"] for e in res["a_first"]["tracks"][0]["effects"]) == ["fa", "fb"]


def live_pair() -> tuple[Project, Project]:
    a = Project.create("alice")
    b = Project("bob")
    b.apply_update(a.get_update())
    return a, b


def test_undo_reverts_only_the_local_users_edits():
    a, b = live_pair()
    t = a.add_track("audio", "Drums")
    sync(a, b)
    a.track(t.id).volume = 0.5
    b.track(t.id).name = "Kit"
    b.track(t.id).pan = -0.5
    sync(a, b)
    assert a.undo() == "set track volume"
    sync(a, b)
    for p in (a, b):
        tr = p.track(t.id)
        assert (tr.volume, tr.name, tr.pan) == (1.0, "Kit", -0.5)
    assert b.undo_labels == ["rename track", "set track pan"]
    assert b.undo() == "set track pan"
    sync(a, b)
    assert (a.track(t.id).pan, a.track(t.id).name) == (0.0, "Kit")
    assert a.undo() == "add audio track"
    sync(a, b)
    assert a.tracks() == [] and b.tracks() == []
    assert not a.can_undo and a.can_redo
    assert a.redo() == "add audio track"
    sync(a, b)
    assert [x.name for x in b.tracks()] == ["Kit"]


def test_repairs_are_never_undone_and_undo_revivals_get_repaired():
    a, b = live_pair()
    t1 = a.add_track("audio", "One")
    t2 = a.add_track("audio", "Two")
    c = t1.add_clip(SRC, 0, 1)
    sync(a, b)
    a.clip(c.id).move(track=t2.id)
    b.delete_track(t2.id)
    sync(a, b)
    assert c.id not in [x.id for x in a.clips()] + [x.id for x in b.clips()]
    # alice undoes her move: the repair deleted the clip (not her), so there is nothing
    # of hers to bring back; whatever undo revives, both peers agree and nothing is broken
    a.undo()
    sync(a, b)
    assert a.to_interchange() == b.to_interchange()
    assert a.repair() == 0


def test_repair_origin_is_not_tracked_by_undo():
    a, b = live_pair()
    a.add_track("meta", "M1", track_id="m1")
    a.add_track("meta", "M2", track_id="m2")
    sync(a, b)
    n = len(a.undo_labels)
    a.move_track("m2", parent="m1")
    b.move_track("m1", parent="m2")
    sync(a, b)
    assert len(a.undo_labels) == n + 1 and len(b.undo_labels) == 1
    assert REPAIR_ORIGIN.startswith("ouroboros")
    assert names(a.to_interchange()) == [("M1", [("M2", [])])]


@pytest.mark.parametrize("garbage", [b"", b"\x00\x01\x02junk"])
def test_bad_update_bytes_are_refused(garbage):
    from companion.errors import ProjectError
    a, _ = live_pair()
    before = a.to_interchange()
    try:
        a.apply_update(garbage)
    except ProjectError:
        pass
    assert a.to_interchange() == before


def test_undo_skips_a_step_a_peer_has_overwritten_and_names_the_one_it_undid():
    a, b = live_pair()
    t = a.add_track("audio", "X")
    sync(a, b)
    a.track(t.id).volume = 0.5
    sync(a, b)
    b.track(t.id).volume = 0.7  # bob's later value replaces alice's
    sync(a, b)
    # nothing of alice's volume edit is left to revert, so (as in Yjs) undo goes on to
    # her previous step, and says so
    assert a.undo() == "add audio track"
    sync(a, b)
    assert a.tracks() == [] and b.tracks() == []
    assert a.redo() == "add audio track"
    sync(a, b)
    assert [x.volume for x in b.tracks()] == [0.7]  # bob's value was never clobbered


def test_a_one_way_replica_converges_to_the_editors_content():
    """The player's replica hears the editor only (never sends): it repairs what it hears,
    then hears the editor's own repair, and ends with the same content."""
    a, b = live_pair()
    a.add_track("meta", "M1", track_id="m1")
    a.add_track("meta", "M2", track_id="m2")
    a.add_track("audio", "T", track_id="t")
    sync(a, b)
    player = Project("player")
    stop = a.observe_updates(player.apply_update)
    a.move_track("m2", parent="m1")
    a.move_track("t", parent="m2")
    b.move_track("m1", parent="m2")
    b.move_track("t", parent="m1")
    a.apply_update(b.get_update(a.get_state()))
    stop()
    player.apply_update(a.get_update(player.get_state()))
    assert player.to_interchange() == a.to_interchange()
    # the cycle is cut at m1; t was moved into both metatracks and stays in m1 (the lower
    # ID); m1's two concurrent appends are ordered by the CRDT, the same on every peer
    ((top, kids),) = names(a.to_interchange())
    assert top == "M1" and sorted(map(str, kids)) == sorted(map(str, ["T", ("M2", [])]))


def test_track_moved_into_a_metatrack_the_other_peer_deleted_goes_to_the_root():
    def setup(p: Project) -> None:
        p.add_track("meta", "M", track_id="m")
        p.add_track("audio", "In M", parent="m", track_id="inner")
        p.add_track("audio", "X", track_id="x")

    res = concurrent(setup, lambda a, _: a.move_track("x", parent="m"),
                     lambda b, _: b.delete_track("m"))
    assert names(res["a_first"]) == ["X"]  # "In M" went with its metatrack


def test_undoing_a_delete_inside_a_metatrack_a_peer_deleted_lands_at_the_root():
    a, b = live_pair()
    a.add_track("meta", "M", track_id="m")
    t = a.add_track("audio", "T", parent="m", track_id="t")
    t.add_clip(SRC, 0, 1, clip_id="c")
    a.add_track("audio", "Other", track_id="o")
    sync(a, b)
    a.delete_track("t")
    sync(a, b)
    b.delete_track("m")
    sync(a, b)
    assert a.undo() == "delete track"  # T and its clip come back, M does not
    sync(a, b)
    assert names(a.to_interchange()) == names(b.to_interchange()) == ["Other", "T"]
    assert [c.id for c in b.track("t").clips()] == ["c"]
