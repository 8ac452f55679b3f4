"""Deterministic repair of a merged project document.

Two peers' edits, each valid on its own, can merge into a state that breaks an invariant: a
clip moved onto a track the other peer deleted, two metatracks grouped into each other, a
track moved into two places at once. :func:`plan_repair` looks at the document's plain
content (``Project.plain()``) and returns the fixes, in order; they depend on that content
alone (IDs, order arrays), never on which peer runs them or when, so every peer that sees the
same merged state makes the same fixes. Two peers may both repair the same state before they
hear of each other's repair; their fixes then merge into a state that is either repaired or
needs one more, equally deterministic, pass (a duplicate append is itself a duplicate
listing, removed by rule 1), so the document converges.

Each call returns the fixes of the first rule that finds anything, with indices valid in the
state it was given; the caller applies them and calls again until nothing is left. The rules,
in order:

1. Order arrays: an entry naming no track, or a track already listed (the root first, then
   metatracks by ID, each array front to back), is removed.
2. A track listed nowhere goes to the end of the root, by ID.
3. Metatracks that contain each other (unreachable from the root): of the tracks on the
   cycle, the lowest ID leaves its metatrack for the end of the root.
4. A metatrack nested deeper than 10 leaves for the end of the root (the first in
   arrangement order).
5. A clip on a missing track, or on a track of another kind, is deleted.
6. A send to a missing track, to a non-bus or to itself is deleted; then sends are taken by
   (track ID, bus ID) and one that would close a routing loop is deleted.
7. Effect order arrays: entries naming no effect or listed twice go, unlisted effects are
   appended by ID.
8. An automation lane naming a missing effect or parameter is deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from companion.model import checks
from companion.model.checks import MAX_META_DEPTH, ROOT

Fix = tuple[Any, ...]
"""``(op, *args)``; ops: ``del_order`` (container, index), ``append_root`` (track),
``del_clip`` (clip), ``del_send`` (track, bus), ``del_fx_order`` (owner, index),
``append_fx_order`` (owner, effect), ``del_lane`` (track, param). The master chain's owner
is ``""``."""


def plan_repair(state: Mapping[str, Any]) -> list[Fix]:
    """The fixes the first broken rule needs (empty: the state is sound)."""
    tracks: dict[str, Any] = state.get("tracks") or {}
    root: list[str] = state.get("root") or []
    for rule in (_duplicates, _unlisted, _cycles, _depth):
        fixes = rule(tracks, root)
        if fixes:
            return fixes
    fixes = _clips(tracks, state.get("clips") or {})
    if fixes:
        return fixes
    for rule2 in (_sends, _effects, _lanes):
        fixes = rule2(tracks, root, state)
        if fixes:
            return fixes
    return []


def _containers(tracks: Mapping[str, Any], root: list[str]) -> list[tuple[str, list[str]]]:
    metas = sorted(t for t, v in tracks.items() if v.get("kind") == "meta")
    return [(ROOT, root), *((m, list(tracks[m].get("children") or [])) for m in metas)]


def _duplicates(tracks: Mapping[str, Any], root: list[str]) -> list[Fix]:
    seen: set[str] = set()
    fixes: list[Fix] = []
    for container, ids in _containers(tracks, root):
        bad = []
        for i, tid in enumerate(ids):
            if tid not in tracks or tid in seen:
                bad.append(i)
            seen.add(tid)
        fixes.extend(("del_order", container, i) for i in reversed(bad))
    return fixes


def _unlisted(tracks: Mapping[str, Any], root: list[str]) -> list[Fix]:
    listed = {t for _, ids in _containers(tracks, root) for t in ids}
    return [("append_root", t) for t in sorted(set(tracks) - listed)]


def _cycles(tracks: Mapping[str, Any], root: list[str]) -> list[Fix]:
    reach = checks.reachable(tracks, root)
    lost = sorted(set(tracks) - reach)
    if not lost:
        return []
    parent_of = checks.parents(tracks, root)
    # every lost track's container is lost too, so following containers must loop
    path: list[str] = []
    t = lost[0]
    while t not in path:
        path.append(t)
        t = parent_of[t]
    cycle = path[path.index(t):]
    pick = min(cycle)
    container = parent_of[pick]
    index = list(tracks[container].get("children") or []).index(pick)
    return [("del_order", container, index), ("append_root", pick)]


def _depth(tracks: Mapping[str, Any], root: list[str]) -> list[Fix]:
    parent_of = checks.parents(tracks, root)
    order: list[str] = []

    def walk(ids: list[str]) -> None:
        for tid in ids:
            order.append(tid)
            walk(list(tracks.get(tid, {}).get("children") or []))
    walk(root)
    for tid in order:
        if tracks[tid].get("kind") == "meta" and \
                checks.meta_depth(tracks, parent_of, tid) > MAX_META_DEPTH:
            container = parent_of[tid]
            index = list(tracks[container].get("children") or []).index(tid)
            return [("del_order", container, index), ("append_root", tid)]
    return []


def _clips(tracks: Mapping[str, Any], clips: Mapping[str, Any]) -> list[Fix]:
    return [("del_clip", cid) for cid, c in sorted(clips.items())
            if c.get("track") not in tracks
            or tracks[c["track"]].get("kind") != c.get("kind", "audio")]


def _sends(tracks: Mapping[str, Any], root: list[str], state: Mapping[str, Any]) -> list[Fix]:
    fixes: list[Fix] = []
    for tid in sorted(tracks):
        for bus in sorted(tracks[tid].get("sends") or {}):
            if bus == tid or tracks.get(bus, {}).get("kind") != "bus":
                fixes.append(("del_send", tid, bus))
    if fixes:
        return fixes
    parent_of = checks.parents(tracks, root)
    kept: list[tuple[str, str]] = []
    for tid in sorted(tracks):
        for bus in sorted(tracks[tid].get("sends") or {}):
            trial = [*kept, (tid, bus)]
            if checks.find_cycle(checks.routing_edges(tracks, parent_of, trial)):
                fixes.append(("del_send", tid, bus))
            else:
                kept.append((tid, bus))
    return fixes


def _chains(tracks: Mapping[str, Any], state: Mapping[str, Any]
            ) -> list[tuple[str, dict[str, Any], list[str]]]:
    out = [("", dict(state.get("master_effects") or {}),
            list(state.get("master_effect_order") or []))]
    for tid in sorted(tracks):
        t = tracks[tid]
        out.append((tid, dict(t.get("effects") or {}), list(t.get("effect_order") or [])))
    return out


def _effects(tracks: Mapping[str, Any], root: list[str], state: Mapping[str, Any]
             ) -> list[Fix]:
    fixes: list[Fix] = []
    for owner, fx, order in _chains(tracks, state):
        seen: set[str] = set()
        bad = []
        for i, e in enumerate(order):
            if e not in fx or e in seen:
                bad.append(i)
            seen.add(e)
        fixes.extend(("del_fx_order", owner, i) for i in reversed(bad))
        fixes.extend(("append_fx_order", owner, e) for e in sorted(set(fx) - seen))
    return fixes


def _lanes(tracks: Mapping[str, Any], root: list[str], state: Mapping[str, Any]) -> list[Fix]:
    fixes: list[Fix] = []
    for tid in sorted(tracks):
        t = tracks[tid]
        fx = t.get("effects") or {}
        for param in sorted(t.get("automation") or {}):
            if param in ("volume", "pan"):
                continue
            eid, _, name = param.partition(".")
            if eid not in fx or name not in (fx[eid].get("params") or {}):
                fixes.append(("del_lane", tid, param))
    return fixes
