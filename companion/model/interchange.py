"""The interchange form (``project.json``, spec/companion.md) to and from the document.

Export walks the document and writes every field of the spec: root tracks in order,
metatracks' children inline under ``"children"``. Import (:func:`build_project`) makes a new
document: it never rebuilds an existing one. ``companion.model.schema.normalize_project``
checks and normalizes the data first (and imports ``{"file": ...}`` sources into the pool);
the document's own edit checks then run on every value as it is written, so a bad file is
refused with the field named and nothing half-built escapes (the new document is dropped).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from companion.errors import ProjectError
from companion.model import checks
from companion.model.checks import ROOT, TRACK_KINDS
from companion.model.schema import SourcePool, normalize_project

if TYPE_CHECKING:
    from companion.model.document import Project

_TRACK_KEYS = {"id", "kind", "name", "volume", "pan", "mute", "solo", "effects", "sends",
               "automation", "clips", "children", "offset", "speed", "instrument",
               "frozen"}
_AUDIO_CLIP_KEYS = {"id", "source", "start", "length", "offset", "gain", "fade_in",
                    "fade_out", "reversed", "loop", "source_bpm"}
_MIDI_CLIP_KEYS = {"id", "start", "length", "notes", "cc"}


def export_project(p: Project) -> dict[str, Any]:
    """The spec's ``project.json`` dict for the document as it is now."""
    plain = p.plain()
    settings = plain["settings"]
    track = _track_exporter(plain)
    return {
        "format": settings.get("format", "ouroboros-project"),
        "version": int(settings.get("version", 1)),
        "sample_rate": int(settings.get("sample_rate", 48000)),
        "tempo": [{"at": float(x["at"]), "bpm": float(x["bpm"]), "ramp": bool(x["ramp"])}
                  for x in settings.get("tempo") or []],
        "meter": [{"at": float(x["at"]), "num": int(x["num"]), "den": int(x["den"])}
                  for x in settings.get("meter") or []],
        "tracks": [track(t) for t in plain["root"] if t in plain["tracks"]],
        "master": {"volume": float(settings.get("master_volume", 1.0)),
                   "effects": _chain(plain["master_effects"], plain["master_effect_order"])},
    }


def export_track(p: Project, track_id: str) -> dict[str, Any]:
    """One track in the interchange form (a metatrack with its children inline), as
    ``project.json`` lists it: what a freeze keeps of the original."""
    return _track_exporter(p.plain())(track_id)


def _chain(fx: Mapping[str, Any], order: list[str]) -> list[dict[str, Any]]:
    return [{"id": e, "kind": fx[e]["kind"], "params": _params(fx[e].get("params")),
             "bypass": bool(fx[e].get("bypass", False))} for e in order if e in fx]


def _track_exporter(plain: Mapping[str, Any]) -> Callable[[str], dict[str, Any]]:
    tracks = plain["tracks"]
    clips_by_track: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
    for cid, c in plain["clips"].items():
        clips_by_track.setdefault(c.get("track", ""), []).append(
            (float(c.get("start", 0.0)), cid, c))

    def clip(cid: str, c: Mapping[str, Any]) -> dict[str, Any]:
        if c.get("kind") == "midi":
            return {"id": cid, "start": float(c["start"]), "length": float(c["length"]),
                    "notes": _events(c.get("notes"), ("at", "length", "pitch", "velocity")),
                    "cc": _events(c.get("cc"), ("at", "controller", "value"))}
        out = {"id": cid, "source": c.get("source"), "start": float(c["start"]),
               "length": float(c["length"]), "offset": float(c.get("offset", 0.0)),
               "gain": float(c.get("gain", 1.0)), "fade_in": float(c.get("fade_in", 0.0)),
               "fade_out": float(c.get("fade_out", 0.0)),
               "reversed": bool(c.get("reversed", False)), "loop": bool(c.get("loop", False))}
        if c.get("source_bpm") is not None:
            out["source_bpm"] = float(c["source_bpm"])
        return out

    def track(tid: str) -> dict[str, Any]:
        t = tracks[tid]
        kind = t["kind"]
        out: dict[str, Any] = {
            "id": tid, "kind": kind, "name": t.get("name", ""),
            "volume": float(t.get("volume", 1.0)), "pan": float(t.get("pan", 0.0)),
            "mute": bool(t.get("mute", False)), "solo": bool(t.get("solo", False)),
            "effects": _chain(t.get("effects") or {}, t.get("effect_order") or []),
            "sends": [{"bus": b, "level": float(s["level"]), "pre_fader": bool(s["pre_fader"])}
                      for b, s in sorted((t.get("sends") or {}).items())],
            "automation": [{"param": param, "points": _events(pts, ("at", "value", "curve"))}
                           for param, pts in sorted((t.get("automation") or {}).items())],
        }
        if kind in ("audio", "midi"):
            out["clips"] = [clip(cid, c) for _, cid, c in sorted(
                clips_by_track.get(tid, []), key=lambda x: (x[0], x[1]))]
        if kind == "audio" and isinstance(t.get("frozen"), str):
            # the document keeps the original as one JSON string (one value, last writer
            # wins); the file spells it out
            out["frozen"] = {"track": json.loads(t["frozen"])}
        if kind == "midi":
            out["instrument"] = dict(t.get("instrument") or {})
        if kind == "meta":
            out["offset"] = float(t.get("offset", 0.0))
            out["speed"] = float(t.get("speed", 1.0))
            out["children"] = [track(c) for c in t.get("children") or [] if c in tracks]
        return out

    return track


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in (params or {}).items()}


def _events(events: Mapping[str, Any] | None, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    items = sorted((events or {}).items(), key=lambda kv: (kv[1].get("at", 0.0), kv[0]))
    out = []
    for _, v in items:
        e: dict[str, Any] = {}
        for k in keys:
            x = v.get(k)
            if k in ("pitch", "velocity", "controller") or (k == "value" and "controller" in keys):
                e[k] = int(x)
            elif k == "curve":
                e[k] = x
            else:  # the document's JSON writes 1.0 as 1: the spec's positions are floats
                e[k] = float(x)
        out.append(e)
    return out


def _keys(where: str, d: object, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ProjectError(where, f"must be an object, got {type(d).__name__}")
    extra = sorted(set(d) - allowed)
    if extra:
        raise ProjectError(f"{where} {extra[0]}", "is not a known field")
    return d


def build_project(cls: type[Project], data: Mapping[str, Any], user: str,
                  pool: SourcePool | None = None, base_dir: Path | None = None) -> Project:
    """A new :class:`Project` holding ``data`` (see ``Project.from_interchange``)."""
    from companion.model.document import IMPORT_ORIGIN
    # the shared schema checks the whole file first (and imports {"file"} sources into the
    # pool); the document's own edit checks then run on every value as it is written
    data = normalize_project(dict(data), pool, base_dir)
    if data.get("format") != "ouroboros-project":
        raise ProjectError("format", f'must be "ouroboros-project", got {data.get("format")!r}')
    if data.get("version") != 1:
        raise ProjectError("version", f"must be 1, got {data.get('version')!r}")
    sr = checks.integer("sample_rate", data.get("sample_rate"), 8000, 384000)
    p = cls.create(user, sample_rate=sr)
    # the import is the project's starting point, not an undo step: its own origin
    with p._doc.transaction(origin=IMPORT_ORIGIN):
        p._depth = 1  # the edit methods below join this transaction instead of making steps
        try:
            p.set_tempo(_list("tempo", data.get("tempo")))
            p.set_meter(_list("meter", data.get("meter", [{"at": 0, "num": 4, "den": 4}])))
            master = _keys("master", data.get("master", {}), {"volume", "effects"})
            p.master.volume = master.get("volume", 1.0)
            for i, e in enumerate(_list("master.effects", master.get("effects", []))):
                _add_effect(p.master, f"master.effects[{i}]", e)
            sends: list[tuple[Any, str, Any]] = []
            lanes: list[tuple[Any, str, Any]] = []
            ids: set[str] = set()
            for i, t in enumerate(_list("tracks", data.get("tracks"))):
                _add_track(p, f"tracks[{i}]", t, ROOT, sends, lanes, ids)
            for track, where, s in sends:
                s = _keys(where, s, {"bus", "level", "pre_fader"})
                bus = s.get("bus")
                if not isinstance(bus, str):
                    raise ProjectError(f"{where}.bus", "must be a track ID")
                track.set_send(bus, s.get("level", 1.0), s.get("pre_fader", False))
            for track, where, lane in lanes:
                lane = _keys(where, lane, {"param", "points"})
                param = lane.get("param")
                if not isinstance(param, str):
                    raise ProjectError(f"{where}.param", "must be a string")
                for k, pt in enumerate(_list(f"{where}.points", lane.get("points", []))):
                    pt = _keys(f"{where}.points[{k}]", pt, {"at", "value", "curve"})
                    try:
                        track.add_automation_point(param, pt.get("at"), pt.get("value"),
                                                   pt.get("curve", "linear"))
                    except ProjectError as e:
                        raise ProjectError(f"{where}.points[{k}]", e.problem) from e
        finally:
            p._depth = 0
    p._undo.clear()
    p._undo_labels.clear()
    p._redo_labels.clear()
    return p


def _list(where: str, v: object) -> list[Any]:
    if not isinstance(v, list):
        raise ProjectError(where, f"must be a list, got {type(v).__name__}")
    return v


def _add_effect(chain: Any, where: str, e: object) -> None:
    e = _keys(where, e, {"id", "kind", "params", "bypass"})
    params = e.get("params", {})
    if not isinstance(params, Mapping):
        raise ProjectError(f"{where}.params", "must be an object")
    eid = e.get("id")
    if eid is not None and not isinstance(eid, str):
        raise ProjectError(f"{where}.id", "must be a string")
    kind = e.get("kind")
    if not isinstance(kind, str):
        raise ProjectError(f"{where}.kind", "must be a string")
    try:
        chain.add_effect(kind, params, bypass=e.get("bypass", False), effect_id=eid)
    except ProjectError as err:
        raise ProjectError(where, err.problem) from err


def _add_track(p: Project, where: str, t: object, parent: str,
               sends: list[tuple[Any, str, Any]], lanes: list[tuple[Any, str, Any]],
               ids: set[str]) -> None:
    t = _keys(where, t, _TRACK_KEYS)
    kind = t.get("kind")
    if kind not in TRACK_KINDS:
        raise ProjectError(f"{where}.kind", f"must be one of {', '.join(TRACK_KINDS)}, "
                           f"got {kind!r}")
    tid = t.get("id")
    if not isinstance(tid, str) or not tid:
        raise ProjectError(f"{where}.id", "must be a non-empty string")
    if tid in ids:
        raise ProjectError(f"{where}.id", f"{tid!r} is used twice")
    ids.add(tid)
    name = t.get("name", "")
    here = f'{where} "{name}"' if isinstance(name, str) and name else where
    for key, only in (("children", "meta"), ("offset", "meta"), ("speed", "meta"),
                      ("instrument", "midi"), ("frozen", "audio")):
        if key in t and kind != only:
            raise ProjectError(f"{here}.{key}", f"only a {only} track has {key}")
    if "clips" in t and kind not in ("audio", "midi"):
        raise ProjectError(f"{here}.clips", f"a {kind} track holds no clips")
    try:
        track = p.add_track(str(kind), checks.text(f"{here}.name", name),
                            parent=parent or None, track_id=tid)
        for field in ("volume", "pan", "mute", "solo", "offset", "speed"):
            if field in t:
                setattr(track, field, t[field])
        if "instrument" in t:
            track.instrument = t["instrument"]
    except ProjectError as e:
        raise ProjectError(f"{here}.{e.where.split()[-1]}", e.problem) from e
    for i, fx in enumerate(_list(f"{here}.effects", t.get("effects", []))):
        _add_effect(track, f"{here}.effects[{i}]", fx)
    for i, s in enumerate(_list(f"{here}.sends", t.get("sends", []))):
        sends.append((track, f"{here}.sends[{i}]", s))
    for i, lane in enumerate(_list(f"{here}.automation", t.get("automation", []))):
        lanes.append((track, f"{here}.automation[{i}]", lane))
    for i, c in enumerate(_list(f"{here}.clips", t.get("clips", []))):
        _add_clip(track, f"{here}.clips[{i}]", c)
    frozen = t.get("frozen")
    if frozen is not None:  # after the clips: a frozen track refuses new ones
        if not isinstance(frozen, Mapping) or not isinstance(frozen.get("track"), Mapping):
            raise ProjectError(f"{here}.frozen", 'must be {"track": {...}}')
        p._set_frozen(tid, dict(frozen["track"]),
                      [c["id"] for c in t.get("clips", []) if isinstance(c, Mapping)])
    for i, child in enumerate(_list(f"{here}.children", t.get("children", []))):
        _add_track(p, f"{here}.children[{i}]", child, tid, sends, lanes, ids)


def _add_clip(track: Any, where: str, c: object) -> None:
    kind = track.kind
    c = _keys(where, c, _AUDIO_CLIP_KEYS if kind == "audio" else _MIDI_CLIP_KEYS)
    cid = c.get("id")
    if not isinstance(cid, str) or not cid:
        raise ProjectError(f"{where}.id", "must be a non-empty string")
    here = f'{where} "{cid}"'
    for key in ("start", "length"):
        if key not in c:
            raise ProjectError(f"{here}.{key}", "is missing")
    fields = {k: v for k, v in c.items() if k not in ("id", "start", "length", "notes", "cc",
                                                       "source")}
    try:
        if kind == "audio":
            src = c.get("source")
            if not isinstance(src, str):
                raise ProjectError("source", f"{src!r}: a file source needs a pool to go to")
            if fields.get("source_bpm", 0) is None:
                del fields["source_bpm"]
            track.add_clip(src, c["start"], c["length"], clip_id=cid, **fields)
        else:
            track.add_clip(None, c["start"], c["length"], clip_id=cid,
                           notes=_list(f"{here}.notes", c.get("notes", [])),
                           cc=_list(f"{here}.cc", c.get("cc", [])))
    except ProjectError as e:
        raise ProjectError(f"{here}.{e.where.split()[-1]}", e.problem) from e
