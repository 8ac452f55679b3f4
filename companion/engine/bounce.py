"""Bounce: one track's (or metatrack's) output rendered into a new pool source.

:func:`render_track` renders what a track contributes to the mix, pre-fader: its content
(clips, instrument, or a metatrack's children) through its own effect chain, with its own
automation of effect parameters, at volume 1 and pan 0 (volume, pan, their automation, mute,
solo and sends stay live on whatever plays the result). It uses the project's renderer on a
copy of the snapshot that holds only the track, inside its ancestors made neutral (no
effects, volume 1, pan 0, no sends; their offsets kept, so positions map to the same
frames) and a neutral master. The renderer then does the rest as it does for the mix:
latency compensation (the result lands on the timeline's own frames), effect tails, varispeed
of the track's own content.

The frames covered are ``[first, end)``: from the frame of the track's first clip to the last
content's end plus the tails of its chains (the plan's default end). With effects on the way,
rendering starts at frame 0 (or at ``first`` when that is earlier) and the frames before
``first`` are dropped, so effect state (a chorus' LFO, say) is what an export from the
start has at ``first``, and the blocks fall on an export's grid (effect automation is
taken once per block): with the same block size the bounce holds the very samples the mix
renders.

:func:`bounce_track` stores the result in the pool (:meth:`Pool.add_array`) and returns a
:class:`Bounce`, whose ``start_wn``/``length_wn`` place one clip on the same track (in its
own coordinates, i.e. inside the same ancestors) covering exactly those frames.

Refused (:class:`ProjectError`, naming the track): a track that does not exist, a bus (its
content is other tracks' sends), a track with no clips, a track inside metatracks whose
speeds do not multiply to exactly 1 (the bounce is rendered at the root's rate, and a clip
inside them would be varispeeded again: bounce the ancestor with the speed instead), and a
metatrack holding a bus that a track outside it sends to (its output depends on tracks the
bounce cannot contain).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from companion.engine.render import DEFAULT_MAX_BLOCK, EffectFactory, SourcePool, compile_plan
from companion.errors import ProjectError
from companion.model.schema import normalize_project
from companion.model.timemap import TempoMap, tempo_points

Progress = Callable[[int, int], None]
"""``progress(frames_done, frames_total)``, called after every rendered block."""


@dataclass(frozen=True)
class Bounce:
    """A track rendered into the pool, and where a clip of it must sit to play it back."""

    track_id: str
    ref: str  #: the pool reference, ``"sha256:<hex>"``
    start_wn: float  #: the clip's start in the track's own coordinates (inside its ancestors)
    length_wn: float  #: the clip's length (wn)
    start_frame: int  #: the first frame covered (timeline frames)
    end_frame: int  #: one past the last
    sample_rate: int
    #: sends from inside a bounced metatrack to buses outside it ("child > bus"): not part
    #: of the bounce (they feed the bus, not the metatrack's output)
    outside_sends: tuple[str, ...] = ()

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass(frozen=True)
class Rendered:
    """What :func:`render_track` returns: the samples and their placement."""

    track_id: str
    data: NDArray[np.float32]  #: ``(2, frames)``
    start_wn: float
    length_wn: float
    start_frame: int
    end_frame: int
    sample_rate: int
    outside_sends: tuple[str, ...]


def _find(tracks: list[dict[str, Any]], tid: str, path: list[dict[str, Any]]
          ) -> list[dict[str, Any]] | None:
    """The ancestors of ``tid`` (outermost first) followed by the track itself."""
    for t in tracks:
        if t["id"] == tid:
            return [*path, t]
        if t["kind"] == "meta":
            found = _find(t["children"], tid, [*path, t])
            if found is not None:
                return found
    return None


def _walk(t: dict[str, Any]) -> list[dict[str, Any]]:
    out = [t]
    for c in t.get("children", []) if t["kind"] == "meta" else []:
        out.extend(_walk(c))
    return out


def _all(tracks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for t in tracks for x in _walk(t)]


def _name(t: dict[str, Any]) -> str:
    return f'track {t["id"]} "{t["name"]}"'


def isolate(project: dict[str, Any], track_id: str
            ) -> tuple[dict[str, Any], float, float, tuple[str, ...]]:
    """The normalized ``project`` reduced to what :func:`render_track` renders: the track
    (pre-fader, sends to buses outside it removed, solo cleared) inside its neutral
    ancestors and a neutral master. Returns it with ``(a, s)``, the root position and speed
    of the track's own coordinates (a track position ``x`` is at root ``a + x / s``), and the
    sends left out. Raises :class:`ProjectError` for what cannot be bounced."""
    path = _find(project["tracks"], track_id, [])
    if path is None:
        raise ProjectError(f"track {track_id}", "does not exist")
    *ancestors, target = path
    where = _name(target)
    if target["kind"] == "bus":
        raise ProjectError(where, "is a bus: its content is other tracks' sends, which a "
                           "bounce cannot hold")
    # the composition the renderer does (render._Compiler.track), in the same order, so the
    # same floats come out
    a, s = 0.0, 1.0
    for anc in ancestors:
        a = a + anc["offset"] / s
        s = s * anc["speed"]
    if s != 1.0:
        fast = [x for x in ancestors if x["speed"] != 1.0][-1]
        raise ProjectError(where, f"is inside metatrack {fast['id']} \"{fast['name']}\" "
                           f"whose speed ({fast['speed']:g}; {s:g} in all) is not 1: a bounce "
                           "plays at the root's rate; bounce that metatrack instead, or set "
                           "its speed to 1")
    inside = {t["id"] for t in _walk(target)}
    for t in _all(project["tracks"]):
        if t["id"] in inside:
            continue
        for snd in t["sends"]:
            if snd["bus"] in inside:
                raise ProjectError(where, f"holds bus {snd['bus']}, which {_name(t)} outside "
                                   "it sends to: its output depends on that track; remove "
                                   "the send first")
    mine = copy.deepcopy(target)
    lost: list[str] = []
    for t in _walk(mine):
        t["solo"] = False  # a listening aid, not part of the sound
        if t is mine:
            continue
        kept = [x for x in t["sends"] if x["bus"] in inside]
        lost.extend(f"{t['id']} > {x['bus']}" for x in t["sends"] if x["bus"] not in inside)
        t["sends"] = kept
    # pre-fader: volume, pan, their automation, mute and sends stay live on the result
    mine.update(volume=1.0, pan=0.0, mute=False, sends=[],
                automation=[ln for ln in mine["automation"]
                            if ln["param"] not in ("volume", "pan")])
    node = mine
    for anc in reversed(ancestors):
        node = {"kind": "meta", "id": anc["id"], "name": anc["name"], "volume": 1.0,
                "pan": 0.0, "mute": False, "solo": False, "effects": [], "sends": [],
                "automation": [], "offset": anc["offset"], "speed": anc["speed"],
                "children": [node]}
    iso = {"format": project["format"], "version": project["version"],
           "sample_rate": project["sample_rate"], "tempo": project["tempo"],
           "meter": project["meter"], "tracks": [node],
           "master": {"volume": 1.0, "effects": []}}
    return iso, a, s, tuple(lost)


def _first_frame(t: dict[str, Any], tempo: TempoMap, a: float, s: float) -> int | None:
    """The frame of the earliest clip start in ``t`` (unmuted parts only)."""
    if t["mute"]:
        return None
    firsts: list[int] = []
    if t["kind"] in ("audio", "midi"):
        firsts = [tempo.frame(a + c["start"] / s) for c in t["clips"] if c["length"] > 0]
    elif t["kind"] == "meta":
        a2, s2 = a + t["offset"] / s, s * t["speed"]
        for c in t["children"]:
            f = _first_frame(c, tempo, a2, s2)
            if f is not None:
                firsts.append(f)
    return min(firsts) if firsts else None


def _has_effects(t: dict[str, Any]) -> bool:
    return any(not fx["bypass"] for x in _walk(t) for fx in x["effects"])


def _place(tempo: TempoMap, a: float, s: float, frame: int, after: float | None = None
           ) -> float:
    """A track position ``x`` with ``tempo.frame(a + x / s) == frame`` (or, with ``after``,
    a length ``L`` with ``tempo.frame(a + (after + L) / s) == frame``), computed the way
    the renderer maps clips. The start of the frame is half a frame from either rounding
    edge, far more than float error; the few ulps of nudging are a safety net."""
    target = (tempo.position_of_frame(frame) - a) * s

    def at(v: float) -> int:
        x = v if after is None else after + v
        return tempo.frame(a + x / s)

    v = target if after is None else target - after
    for _ in range(64):
        got = at(v)
        if got == frame:
            return v
        v = math.nextafter(v, math.inf if got < frame else -math.inf)
    raise ProjectError("bounce", f"cannot place a clip at frame {frame}")  # pragma: no cover


def render_track(snapshot: dict[str, Any], track_id: str, pool: SourcePool, *,
                 block_size: int = DEFAULT_MAX_BLOCK, progress: Progress | None = None,
                 effect_factory: EffectFactory | None = None) -> Rendered:
    """Render track ``track_id`` of ``snapshot`` (interchange form) as the mix hears it,
    pre-fader (see the module's docstring). Raises :class:`ProjectError` naming the track
    for what cannot be bounced or rendered."""
    project = normalize_project(snapshot, pool)
    iso, a, s, lost = isolate(project, track_id)
    path = _find(iso["tracks"], track_id, [])
    assert path is not None
    target = path[-1]
    tempo = TempoMap(tempo_points(project["tempo"]), int(project["sample_rate"]))
    first = _first_frame(target, tempo, a, s)
    if first is None:
        raise ProjectError(_name(target), "has nothing to bounce (no clips that play)")
    plan = compile_plan(iso, pool, max_block=block_size, effect_factory=effect_factory)
    end = max(plan.end_frame, first + 1)
    # with effects, start where an export starts, so stateful effects (LFOs) are in the
    # state the mix has at `first`; without, the frames before `first` are silence anyway
    start = min(0, first) if _has_effects(target) else first
    data = np.zeros((2, end - first), np.float32)
    scratch = np.zeros((2, block_size), np.float32)
    total = end - start
    for f in range(start, end, block_size):
        # blocks on the grid an export from `start` uses (effect automation is taken per
        # block); the frames before `first` only advance effect state, so each block goes
        # through a scratch and memory follows the bounce's length, not its place in the song
        n = min(block_size, end - f)
        plan.render(f, scratch[:, :n])
        lo = max(f, first)
        if lo < f + n:
            data[:, lo - first:f + n - first] = scratch[:, lo - f:n]
        if progress is not None:
            progress(f + n - start, total)
    x0 = _place(tempo, a, s, first)
    length = _place(tempo, a, s, end, after=x0)
    return Rendered(track_id, data, x0, length, first, end, int(project["sample_rate"]),
                    lost)


def bounce_track(snapshot: dict[str, Any], track_id: str, pool: SourcePool, *,
                 block_size: int = DEFAULT_MAX_BLOCK, progress: Progress | None = None,
                 effect_factory: EffectFactory | None = None) -> Bounce:
    """:func:`render_track`, stored in ``pool`` as a new source (float32 WAV, bit for bit).
    ``Project.freeze`` and ``Project.flatten`` take the result."""
    r = render_track(snapshot, track_id, pool, block_size=block_size, progress=progress,
                     effect_factory=effect_factory)
    ref = pool.add_array(r.data, r.sample_rate)
    return Bounce(track_id, ref, r.start_wn, r.length_wn, r.start_frame, r.end_frame,
                  r.sample_rate, r.outside_sends)
