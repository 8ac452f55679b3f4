"""Value and structure checks for the project document, on plain Python values.

The document (``companion.model.document``) calls these before it writes anything, so an edit
that would break the render contract raises :class:`ProjectError` and leaves the document as
it was; the repair pass (``companion.model.repair``) uses the same structural helpers on a
merged state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from companion.errors import ProjectError
from companion.model.schema import (
    MAX_GAIN,
    MAX_POSITION_WN,
    MAX_SECONDS,
    MAX_SPEED,
    MIN_SPEED,
)

TRACK_KINDS = ("audio", "midi", "meta", "bus")
CURVES = ("linear", "exp", "scurve", "step")
MAX_META_DEPTH = 10
SOURCE_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
ROOT = ""  # the container key of the root track order


def number(where: str, value: object, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    """A finite real number within bounds (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProjectError(where, f"must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ProjectError(where, f"must be a finite number, got {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ProjectError(where, f"must be {'above' if lo_open else 'at least'} {lo:g}, "
                           f"got {v:g}")
    if hi is not None and v > hi:
        raise ProjectError(where, f"must be at most {hi:g}, got {v:g}")
    return v


def integer(where: str, value: object, lo: int, hi: int) -> int:
    """An integer within ``lo..hi`` (a float with an integral value is accepted)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProjectError(where, f"must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ProjectError(where, f"must be an integer, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise ProjectError(where, f"must be {lo} to {hi}, got {v}")
    return v


def boolean(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ProjectError(where, f"must be true or false, got {value!r}")
    return value


def text(where: str, value: object, max_len: int = 200) -> str:
    if not isinstance(value, str):
        raise ProjectError(where, f"must be a string, got {value!r}")
    if len(value) > max_len:
        raise ProjectError(where, f"must be at most {max_len} characters")
    return value


def source_ref(where: str, value: object) -> str:
    if not isinstance(value, str) or not SOURCE_RE.match(value):
        raise ProjectError(where, f'must be "sha256:<64 hex digits>", got {value!r}')
    return value


def param_value(where: str, value: object) -> float | str | bool:
    """An effect parameter: a finite number, a string or a boolean."""
    if isinstance(value, bool | str):
        return value
    return number(where, value)


# Each clip field's check; the bounds are the interchange schema's (companion.model.schema),
# so whatever an edit writes exports as a project the schema accepts.
def _seconds(w: str, v: object) -> float:
    return number(w, v, lo=0, hi=MAX_SECONDS)


CLIP_FIELDS: dict[str, Any] = {
    "start": lambda w, v: number(w, v, lo=0, hi=MAX_POSITION_WN),
    "length": lambda w, v: number(w, v, lo=0, hi=MAX_POSITION_WN),
    "offset": _seconds,
    "gain": lambda w, v: number(w, v, lo=0, hi=MAX_GAIN),
    "fade_in": _seconds,
    "fade_out": _seconds,
    "reversed": boolean,
    "loop": boolean,
    "source": source_ref,
    "source_bpm": lambda w, v: None if v is None else number(w, v, lo=1, hi=1000),
}
AUDIO_CLIP_FIELDS = tuple(CLIP_FIELDS)
MIDI_CLIP_FIELDS = ("start", "length")

TRACK_FIELDS: dict[str, Any] = {
    "name": text,
    "volume": lambda w, v: number(w, v, lo=0, hi=MAX_GAIN),
    "pan": lambda w, v: number(w, v, lo=-1, hi=1),
    "mute": boolean,
    "solo": boolean,
    "offset": lambda w, v: number(w, v, lo=-MAX_POSITION_WN, hi=MAX_POSITION_WN),
    "speed": lambda w, v: number(w, v, lo=MIN_SPEED, hi=MAX_SPEED),
}


def note(where: str, n: Mapping[str, Any]) -> dict[str, Any]:
    """A MIDI note ``{"at", "length", "pitch", "velocity"}`` checked and normalized."""
    return {"at": number(f"{where}.at", n.get("at"), lo=0, hi=MAX_POSITION_WN),
            "length": number(f"{where}.length", n.get("length"), lo=0, hi=MAX_POSITION_WN),
            "pitch": integer(f"{where}.pitch", n.get("pitch"), 0, 127),
            "velocity": integer(f"{where}.velocity", n.get("velocity", 100), 1, 127)}


def cc(where: str, c: Mapping[str, Any]) -> dict[str, Any]:
    """A MIDI controller event ``{"at", "controller", "value"}``."""
    return {"at": number(f"{where}.at", c.get("at"), lo=0, hi=MAX_POSITION_WN),
            "controller": integer(f"{where}.controller", c.get("controller"), 0, 127),
            "value": integer(f"{where}.value", c.get("value"), 0, 127)}


def auto_point(where: str, at: object, value: object, curve: object) -> dict[str, Any]:
    if curve not in CURVES:
        raise ProjectError(f"{where}.curve", f"must be one of {', '.join(CURVES)}, got {curve!r}")
    return {"at": number(f"{where}.at", at, lo=-MAX_POSITION_WN, hi=MAX_POSITION_WN),
            "value": number(f"{where}.value", value),
            "curve": curve}


# --- structure -------------------------------------------------------------------------------

def children_of(tracks: Mapping[str, Any], root: list[str], container: str) -> list[str]:
    """The order array of ``container`` (``ROOT`` or a metatrack's ID)."""
    if container == ROOT:
        return root
    return list(tracks.get(container, {}).get("children", []))


def parents(tracks: Mapping[str, Any], root: Iterable[str]) -> dict[str, str]:
    """Track ID -> its container (``ROOT`` or a metatrack ID), the first listing winning."""
    out: dict[str, str] = {}
    for tid in root:
        out.setdefault(tid, ROOT)
    for mid in sorted(tracks):
        for tid in tracks[mid].get("children", []) or []:
            out.setdefault(tid, mid)
    return out


def meta_depth(tracks: Mapping[str, Any], parent_of: Mapping[str, str], tid: str) -> int:
    """How many metatracks contain ``tid``, itself included if it is one (a root metatrack
    is at depth 1). Stops counting on a cycle."""
    depth = 1 if tracks.get(tid, {}).get("kind") == "meta" else 0
    seen = {tid}
    p = parent_of.get(tid, ROOT)
    while p != ROOT and p not in seen:
        seen.add(p)
        depth += 1
        p = parent_of.get(p, ROOT)
    return depth


def check_structure(tracks: Mapping[str, Any], root: list[str]) -> None:
    """The whole tree and its sends: every listed track exists, is listed once, is reachable
    from the root, metatracks nest at most 10 deep, sends go to buses, and the routing (tree
    plus sends) is acyclic. Raises :class:`ProjectError` for the first problem."""
    seen: dict[str, str] = {}
    for container in [ROOT, *sorted(t for t in tracks if tracks[t].get("kind") == "meta")]:
        for tid in children_of(tracks, root, container):
            name = container or "the root"
            if tid not in tracks:
                raise ProjectError(f"track {tid}", f"listed in {name} but does not exist")
            if tid in seen:
                raise ProjectError(f"track {tid}", "is listed twice")
            seen[tid] = container
    for tid in tracks:
        if tid not in seen:
            raise ProjectError(f"track {tid}", "is in no track list")
    reach = reachable(tracks, root)
    if len(reach) != len(tracks):
        bad = sorted(set(tracks) - reach)[0]
        raise ProjectError(f"track {bad}", "metatracks would contain each other (a cycle)")
    for tid in tracks:
        if tracks[tid].get("kind") == "meta" and meta_depth(tracks, seen, tid) > MAX_META_DEPTH:
            raise ProjectError(f"track {tid}",
                               f"metatracks would nest more than {MAX_META_DEPTH} deep")
    for tid, t in tracks.items():
        for bus in t.get("sends", {}) or {}:
            if bus not in tracks or tracks[bus].get("kind") != "bus":
                raise ProjectError(f"track {tid} sends", f"{bus!r} is not a bus")
    cyc = routing_cycle(tracks, seen)
    if cyc:
        raise ProjectError(f"track {cyc[0]} sends", f"the routing would loop: {' -> '.join(cyc)}")


def reachable(tracks: Mapping[str, Any], root: list[str]) -> set[str]:
    out: set[str] = set()
    stack = [t for t in root if t in tracks]
    while stack:
        tid = stack.pop()
        if tid in out:
            continue
        out.add(tid)
        stack.extend(c for c in tracks[tid].get("children", []) or [] if c in tracks)
    return out


def routing_edges(tracks: Mapping[str, Any], parent_of: Mapping[str, str],
                  sends: Iterable[tuple[str, str]] | None = None) -> dict[str, list[str]]:
    """Signal flow: a track feeds its metatrack and the buses it sends to."""
    edges: dict[str, list[str]] = {t: [] for t in tracks}
    for tid, p in parent_of.items():
        if p != ROOT and tid in edges:
            edges[tid].append(p)
    if sends is None:
        sends = [(tid, bus) for tid, t in tracks.items() for bus in t.get("sends", {}) or {}]
    for src, bus in sends:
        if src in edges:
            edges[src].append(bus)
    return edges


def find_cycle(edges: Mapping[str, list[str]]) -> list[str] | None:
    """One cycle of a directed graph (as a closed path of node IDs), or None."""
    state: dict[str, int] = {}
    for start in sorted(edges):
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            nxt = edges.get(node, [])
            if i < len(nxt):
                stack.append((node, i + 1))
                child = nxt[i]
                if state.get(child) == 1:
                    return [*path[path.index(child):], child]
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def routing_cycle(tracks: Mapping[str, Any], parent_of: Mapping[str, str]) -> list[str] | None:
    return find_cycle(routing_edges(tracks, parent_of))
