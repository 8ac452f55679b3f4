"""The interchange form (``project.json``): checked and normalized in one place.

:func:`parse_project_text` turns the bytes of a ``project.json`` into a dict (refusing a
file too large, too deeply nested, or with ``NaN``/``Infinity`` in it, before or while it is
parsed) and :func:`normalize_project` checks that dict against the render contract
(``spec/companion.md``) and returns a new dict with every field present and the defaults
filled in. Everything that renders, saves or merges a project can then rely on the shape.

A problem raises :class:`~companion.errors.ProjectError` whose ``where`` names the track
(its index and name), the clip (its id) and the field::

    tracks[2] "Bass" > clips[0] "c3" > length

>>> p = normalize_project({"format": "ouroboros-project", "version": 1,
...     "tracks": [{"kind": "audio", "id": "t1", "name": "Drums"}]})
>>> p["tracks"][0]["volume"], p["tracks"][0]["clips"], p["master"]
(1.0, [], {'volume': 1.0, 'effects': []})
"""

from __future__ import annotations

import json
import marshal
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from companion.errors import ProjectError, SourceError
from companion.model.effect_kinds import check_effect, check_param
from companion.model.timemap import MeterPoint, TempoPoint, check_meter, check_tempo

FORMAT = "ouroboros-project"
VERSION = 1
MAX_JSON_BYTES = 20 * 1024 * 1024  # a project is text about tracks; audio lives in the pool
MAX_JSON_DEPTH = 64  # ten nested metatracks need about 35 levels
MAX_META_DEPTH = 10
MAX_POSITION_WN = 100_000.0  # more than a day of music at any tempo the map allows
MAX_SECONDS = 86_400.0
MAX_GAIN = 100.0  # +40 dB; a linear gain above it is a typo, not a mix decision
MIN_SPEED = 1.0 / 64.0
MAX_SPEED = 64.0
MAX_ENVELOPE_S = 60.0
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000,
                176400, 192000)
TRACK_KINDS = ("audio", "midi", "meta", "bus")
CURVES = ("linear", "exp", "scurve", "step")
WAVES = ("sine", "saw", "square", "triangle")
DEFAULT_SYNTH: dict[str, Any] = {"kind": "synth", "wave": "sine", "attack": 0.005,
                                 "decay": 0.1, "sustain": 0.8, "release": 0.1}
_REF = re.compile(r"sha256:[0-9a-f]{64}")


class SourcePool(Protocol):
    """What the schema needs of the audio pool (``companion.engine.pool.Pool``)."""

    def source(self, ref: str) -> Any: ...

    def import_file(self, path: Path) -> str: ...

    def source_path(self, ref: str) -> Path: ...

    def import_soundfont(self, path: Path) -> str: ...


# --------------------------------------------------------------------------- the JSON text

def _reject_constant(name: str) -> float:
    raise ProjectError("project.json", f"{name} is not a number a project may hold")


def parse_project_text(text: bytes | str, where: str = "project.json") -> dict[str, Any]:
    """Parse the text of a ``project.json``; refuse it (:class:`ProjectError`) when it is
    larger than :data:`MAX_JSON_BYTES` (before parsing any of it), nested deeper than
    :data:`MAX_JSON_DEPTH`, holds ``NaN``/``Infinity``, is not JSON or not an object."""
    # a str of n characters is at most 4n bytes in UTF-8: encode only when that matters
    size = len(text)
    if isinstance(text, str) and size * 4 > MAX_JSON_BYTES:
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_JSON_BYTES:
        raise ProjectError(where, f"is {size / 1e6:.1f} MB; a project file may be at most "
                           f"{MAX_JSON_BYTES // (1024 * 1024)} MB")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ProjectError:
        raise
    except RecursionError:
        raise ProjectError(where, f"is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as e:
        raise ProjectError(where, f"is not valid JSON: {e.msg} at line {e.lineno} "
                           f"column {e.colno}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ProjectError(where, f"cannot be read: {e}") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise ProjectError(where, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict):
        raise ProjectError(where, f"must hold a JSON object, not {_type_name(data)}")
    return data


def read_project_file(path: Path) -> dict[str, Any]:
    """:func:`parse_project_text` of a file, refusing an oversized one by its size alone."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ProjectError(str(path), f"is {size / 1e6:.1f} MB; a project file may be at "
                               f"most {MAX_JSON_BYTES // (1024 * 1024)} MB")
        data = path.read_bytes()
    except OSError as e:
        raise ProjectError(str(path), f"cannot be read: {e.strerror or e}") from None
    return parse_project_text(data, str(path))


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile file sets the depth)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
        if deepest > MAX_JSON_DEPTH:
            break
    return deepest


# --------------------------------------------------------------------------- small checks

def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _at(where: str, field: str) -> str:
    return f"{where} > {field}" if where else field


def quote(name: str) -> str:
    """How names appear in ``where``: in double quotes, JSON-escaped."""
    return json.dumps(name, ensure_ascii=False)


def _object(v: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
            ) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProjectError(where, f"must be an object, got {_type_name(v)}")
    for k in v:
        if k not in allowed:
            raise ProjectError(_at(where, str(k)), "is not a field this object may have "
                               f"(allowed: {', '.join(allowed)})")
    for k in required:
        if k not in v:
            raise ProjectError(_at(where, k), "is missing")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise ProjectError(where, f"must be a list, got {_type_name(v)}")
    return v


def _number(v: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProjectError(where, f"must be a number, got {_type_name(v)}")
    f = float(v)
    if not math.isfinite(f):
        raise ProjectError(where, f"must be a finite number, got {v}")
    if not lo <= f <= hi:
        raise ProjectError(where, f"must be between {lo:g} and {hi:g}, got {f:g}")
    return f


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or (
            isinstance(v, float) and not v.is_integer()):
        raise ProjectError(where, f"must be a whole number, got {_type_name(v)} {v!r}")
    i = int(v)
    if not lo <= i <= hi:
        raise ProjectError(where, f"must be between {lo} and {hi}, got {i}")
    return i


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ProjectError(where, f"must be true or false, got {_type_name(v)}")
    return v


def _str(v: Any, where: str, nonempty: bool = True) -> str:
    if not isinstance(v, str):
        raise ProjectError(where, f"must be a string, got {_type_name(v)}")
    if nonempty and not v:
        raise ProjectError(where, "must not be empty")
    if len(v) > 1000:
        raise ProjectError(where, f"is {len(v)} characters long; at most 1000")
    return v


def _enum(v: Any, where: str, options: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in options:
        raise ProjectError(where, f"must be one of {', '.join(options)}, got {v!r}")
    return v


# --------------------------------------------------------------------------- the project

_TRACK_COMMON = ("kind", "id", "name", "volume", "pan", "mute", "solo", "effects", "sends",
                 "automation")
_TRACK_FIELDS = {
    "audio": (*_TRACK_COMMON, "clips", "frozen"),
    "midi": (*_TRACK_COMMON, "clips", "instrument"),
    "meta": (*_TRACK_COMMON, "children", "offset", "speed"),
    "bus": _TRACK_COMMON,
}
_AUDIO_CLIP = ("id", "source", "start", "length", "offset", "gain", "fade_in", "fade_out",
               "reversed", "loop", "source_bpm")
_MIDI_CLIP = ("id", "start", "length", "notes", "cc")


def _without_sends(track: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in track.items() if k != "sends"}
    if isinstance(out.get("children"), list):
        out["children"] = [_without_sends(c) if isinstance(c, dict) else c
                           for c in out["children"]]
    return out


def normalize_project(raw: Any, pool: SourcePool | None = None,
                      base_dir: Path | None = None, *,
                      cache: NormalizeCache | None = None) -> dict[str, Any]:
    """Check ``raw`` (a parsed ``project.json``) against the contract and return its
    normalized form. With a ``pool``, every source must be in it; with a ``base_dir`` too,
    ``{"file": path}`` sources (relative to ``base_dir``) are imported into the pool and
    replaced by their ``"sha256:..."`` reference.

    ``cache``: a :class:`NormalizeCache` that an earlier call filled. A track whose raw
    content is the same as then (same types, same values, same key order) takes its
    normalized form from the cache instead of being checked field by field again; what
    depends on the rest of the project (unique ids, routing, nesting depth) is checked
    every time. A successful call leaves in the cache exactly the tracks of this project.
    The result is the same as without a cache, errors included; unchanged tracks' dicts
    are the very objects an earlier call returned (treat them as read-only)."""
    n = _Normalizer(pool, base_dir)
    if cache is None or base_dir is not None:  # an import reads files: never cached
        return n.project(raw)
    n.reuse, n.cache_context = cache.entries, cache.context
    out = n.project(raw)
    # only now, after every check passed: a refused project leaves the cache as it was
    cache.entries, cache.context = n.fresh, n.context
    return out


class NormalizeCache:
    """Normalized tracks of the last successful :func:`normalize_project` that used it,
    keyed by each raw track's exact content (its ``marshal`` bytes, so ``True`` and ``1``
    or ``1`` and ``1.0`` are different keys) and nesting depth. Valid for one pool, sample
    rate, tempo map and meter (a frozen track is checked against them); another context
    starts empty. Not shared between threads: :func:`companion.engine.render.compile_plan`
    gives each plan its own, seeded from the previous plan's."""

    def __init__(self, seed: NormalizeCache | None = None):
        # replaced as a whole after each successful normalization, never changed in place,
        # so a seeded cache may share its seed's dict
        self.entries: dict[tuple[int, bytes], _Cached] = seed.entries if seed else {}
        self.context: tuple[Any, ...] | None = seed.context if seed else None


class _Cached:
    """One normalized track (with its subtree) and the ids it holds, for replaying the
    project-wide checks without checking its fields again."""

    __slots__ = ("child_keys", "clip_ids", "track", "track_ids")

    def __init__(self, track: dict[str, Any], child_keys: list[tuple[int, bytes]]):
        self.track = track
        # a metatrack's children's own entries: kept along with it, so that an edit of the
        # metatrack itself (its volume) still finds each child unchanged
        self.child_keys = child_keys
        self.track_ids = [t["id"] for t, _ in iter_tracks([track])]
        self.clip_ids = [c["id"] for t, _ in iter_tracks([track])
                         if t["kind"] in ("audio", "midi") for c in t["clips"]]


def _content_key(raw: Any) -> bytes | None:
    """The exact content of JSON-like data as bytes (``None`` for anything else). Version 2
    of marshal writes no back-references, so equal data gives equal bytes whatever objects
    it shares; bytes that decode to the same value can only come from the same content."""
    try:
        return marshal.dumps(raw, 2)
    except (ValueError, RecursionError):
        return None


def iter_tracks(tracks: list[dict[str, Any]], depth: int = 0
                ) -> Iterator[tuple[dict[str, Any], int]]:
    """Every track of a normalized project (parents before children) with its depth."""
    for t in tracks:
        yield t, depth
        if t["kind"] == "meta":
            yield from iter_tracks(t["children"], depth + 1)


class _Normalizer:
    def __init__(self, pool: SourcePool | None, base_dir: Path | None):
        self.pool = pool
        self.base_dir = base_dir
        self.track_where: dict[str, str] = {}
        self.track_kind: dict[str, str] = {}
        self.clip_ids: set[str] = set()
        self.imported: dict[Path, str] = {}
        # routing edges (track id -> track id or "" for the master), with where they came from
        self.edges: dict[str, list[tuple[str, str]]] = {}
        self.sample_rate = 48000
        self.raw_tempo: Any = None
        self.raw_meter: Any = None
        # the incremental path (normalize_project's cache): entries to read, entries kept
        self.reuse: dict[tuple[int, bytes], _Cached] | None = None
        self.fresh: dict[tuple[int, bytes], _Cached] = {}
        self.context: tuple[Any, ...] | None = None
        self.cache_context: tuple[Any, ...] | None = None
        self.child_keys: list[list[tuple[int, bytes]]] = [[]]  # per level being checked

    # ---- top level
    def project(self, raw: Any) -> dict[str, Any]:
        p = _object(raw, "", ("format", "version", "sample_rate", "tempo", "meter", "tracks",
                              "master"), ("format", "version"))
        if p["format"] != FORMAT:
            raise ProjectError("format", f"must be {FORMAT!r}, got {p['format']!r}")
        version = _int(p["version"], "version", 1, 1_000_000)
        if version != VERSION:
            raise ProjectError("version", f"this program reads version {VERSION}, "
                               f"got {version}")
        rate = _int(p.get("sample_rate", 48000), "sample_rate", 1, 10**6)
        if rate not in SAMPLE_RATES:
            raise ProjectError("sample_rate", f"must be one of {SAMPLE_RATES}, got {rate}")
        self.sample_rate = rate
        self.raw_tempo = p.get("tempo", [{"at": 0.0, "bpm": 120.0}])
        self.raw_meter = p.get("meter", [{"at": 0.0, "num": 4, "den": 4}])
        tempo = self.tempo(p.get("tempo", [{"at": 0.0, "bpm": 120.0}]))
        meter = self.meter(p.get("meter", [{"at": 0.0, "num": 4, "den": 4}]))
        if self.reuse is not None:
            # what a track's check may depend on besides its own content (a frozen track
            # is checked as a project with this rate, tempo and meter)
            self.context = (self.pool, rate, repr(tempo), repr(meter))
            if self.context != self.cache_context:
                self.reuse = {}
        tracks = [self.track(t, f"tracks[{i}]", None, 0)
                  for i, t in enumerate(_list(p.get("tracks", []), "tracks"))]
        master = self.master(p.get("master", {}))
        self.check_routing(tracks)
        return {"format": FORMAT, "version": VERSION, "sample_rate": rate, "tempo": tempo,
                "meter": meter, "tracks": tracks, "master": master}

    def tempo(self, raw: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, pt in enumerate(_list(raw, "tempo")):
            w = f"tempo[{i}]"
            _object(pt, w, ("at", "bpm", "ramp"), ("at", "bpm"))
            out.append({"at": _number(pt["at"], f"{w} > at", -MAX_POSITION_WN, MAX_POSITION_WN),
                        "bpm": _number(pt["bpm"], f"{w} > bpm", -1e9, 1e9),
                        "ramp": _bool(pt.get("ramp", False), f"{w} > ramp")})
        check_tempo([TempoPoint(d["at"], d["bpm"], d["ramp"]) for d in out])
        return out

    def meter(self, raw: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, pt in enumerate(_list(raw, "meter")):
            w = f"meter[{i}]"
            _object(pt, w, ("at", "num", "den"), ("at", "num", "den"))
            out.append({"at": _number(pt["at"], f"{w} > at", -MAX_POSITION_WN, MAX_POSITION_WN),
                        "num": _int(pt["num"], f"{w} > num", 1, 64),
                        "den": _int(pt["den"], f"{w} > den", 1, 64)})
        check_meter([MeterPoint(d["at"], d["num"], d["den"]) for d in out])
        return out

    def master(self, raw: Any) -> dict[str, Any]:
        m = _object(raw, "master", ("volume", "effects"))
        return {"volume": _number(m.get("volume", 1.0), "master > volume", 0.0, MAX_GAIN),
                "effects": self.effects(m.get("effects", []), "master")}

    # ---- tracks
    def frozen(self, raw: Any, where: str) -> dict[str, Any]:
        """A frozen track keeps what it was (``{"track": {...}}``, the original in the
        interchange form) so that it can be unfrozen; what plays is the audio track's own
        clips (the bounce). The original is checked as a project of its own, with this
        project's tempo, so that unfreezing can never bring back something unplayable."""
        _object(raw, where, ("track",), ("track",))
        original = raw["track"]
        if not isinstance(original, dict):
            raise ProjectError(f"{where} > track", f"must be an object, got "
                               f"{_type_name(original)}")
        inner = _Normalizer(self.pool, None)
        try:  # its sends name this project's buses: checked when it is unfrozen
            inner.project({"format": "ouroboros-project", "version": 1,
                           "sample_rate": self.sample_rate, "tempo": self.raw_tempo,
                           "meter": self.raw_meter, "tracks": [_without_sends(original)]})
        except ProjectError as e:
            raise ProjectError(f"{where} > track > {e.where}", e.problem) from None
        return {"track": original}

    def track(self, raw: Any, where: str, parent: str | None, meta_depth: int
              ) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise ProjectError(where, f"must be an object, got {_type_name(raw)}")
        if "name" in raw and isinstance(raw["name"], str):
            where = f"{where} {quote(raw['name'])}"
        elif "id" in raw and isinstance(raw["id"], str):
            where = f"{where} {quote(raw['id'])}"
        key = None
        if self.reuse is not None:
            content = _content_key(raw)
            if content is not None:
                key = (meta_depth, content)
                hit = self.reuse.get(key)
                if hit is not None and self.track_where.keys().isdisjoint(hit.track_ids) \
                        and self.clip_ids.isdisjoint(hit.clip_ids):
                    self.replay(hit.track, where, parent)
                    self.keep(key, hit)
                    self.child_keys[-1].append(key)
                    return hit.track
                # a duplicate id: checked in full below, so that it is reported exactly
                # where it would be without the cache
        self.child_keys.append([])
        try:
            t = self.check_track(raw, where, parent, meta_depth)
        finally:
            children = self.child_keys.pop()
        if key is not None:
            self.fresh[key] = _Cached(t, children)
            self.child_keys[-1].append(key)
        return t

    def keep(self, key: tuple[int, bytes], hit: _Cached) -> None:
        """Keep a reused entry, and its subtree's, for the next normalization."""
        self.fresh[key] = hit
        for k in hit.child_keys:
            child = self.reuse.get(k) if self.reuse is not None else None
            if child is not None:
                self.keep(k, child)

    def replay(self, t: dict[str, Any], where: str, parent: str | None) -> None:
        """What :meth:`check_track` records about the rest of the project, for a track
        (and its subtree) taken from the cache: ids and routing edges, in the same order."""
        tid = t["id"]
        self.track_where[tid] = where
        self.track_kind[tid] = t["kind"]
        self.edges[tid] = [(parent or "", where)] + [
            (s["bus"], _at(where, f"sends[{i}] > bus")) for i, s in enumerate(t["sends"])]
        if t["kind"] in ("audio", "midi"):
            self.clip_ids.update(c["id"] for c in t["clips"])
        elif t["kind"] == "meta":
            for i, c in enumerate(t["children"]):
                self.replay(c, f"{where} > children[{i}] {quote(c['name'])}", tid)

    def check_track(self, raw: dict[str, Any], where: str, parent: str | None,
                    meta_depth: int) -> dict[str, Any]:
        if "kind" not in raw:
            raise ProjectError(_at(where, "kind"), "is missing")
        kind = _enum(raw["kind"], _at(where, "kind"), TRACK_KINDS)
        _object(raw, where, _TRACK_FIELDS[kind], ("id",))
        tid = _str(raw["id"], _at(where, "id"))
        if tid in self.track_where:
            raise ProjectError(_at(where, "id"), f"{quote(tid)} is already the id of "
                               f"{self.track_where[tid]}")
        self.track_where[tid] = where
        self.track_kind[tid] = kind
        t: dict[str, Any] = {
            "kind": kind, "id": tid,
            "name": _str(raw.get("name", tid), _at(where, "name"), nonempty=False),
            "volume": _number(raw.get("volume", 1.0), _at(where, "volume"), 0.0, MAX_GAIN),
            "pan": _number(raw.get("pan", 0.0), _at(where, "pan"), -1.0, 1.0),
            "mute": _bool(raw.get("mute", False), _at(where, "mute")),
            "solo": _bool(raw.get("solo", False), _at(where, "solo")),
            "effects": self.effects(raw.get("effects", []), where),
        }
        sends: list[dict[str, Any]] = []
        for i, s in enumerate(_list(raw.get("sends", []), _at(where, "sends"))):
            w = _at(where, f"sends[{i}]")
            _object(s, w, ("bus", "level", "pre_fader"), ("bus",))
            sends.append({"bus": _str(s["bus"], f"{w} > bus"),
                          "level": _number(s.get("level", 1.0), f"{w} > level", 0.0, MAX_GAIN),
                          "pre_fader": _bool(s.get("pre_fader", False), f"{w} > pre_fader")})
        t["sends"] = sends
        self.edges[tid] = [(parent or "", where)] + [
            (s["bus"], _at(where, f"sends[{i}] > bus")) for i, s in enumerate(sends)]
        t["automation"] = self.automation(raw.get("automation", []), where, t["effects"])
        if kind == "audio":
            t["clips"] = [self.audio_clip(c, _at(where, f"clips[{i}]"))
                          for i, c in enumerate(_list(raw.get("clips", []),
                                                      _at(where, "clips")))]
            if raw.get("frozen") is not None:
                t["frozen"] = self.frozen(raw["frozen"], _at(where, "frozen"))
        elif kind == "midi":
            t["clips"] = [self.midi_clip(c, _at(where, f"clips[{i}]"))
                          for i, c in enumerate(_list(raw.get("clips", []),
                                                      _at(where, "clips")))]
            t["instrument"] = self.instrument(raw.get("instrument", DEFAULT_SYNTH),
                                              _at(where, "instrument"))
        elif kind == "meta":
            if meta_depth + 1 > MAX_META_DEPTH:
                raise ProjectError(where, f"metatracks nest at most {MAX_META_DEPTH} deep")
            t["offset"] = _number(raw.get("offset", 0.0), _at(where, "offset"),
                                  -MAX_POSITION_WN, MAX_POSITION_WN)
            t["speed"] = _number(raw.get("speed", 1.0), _at(where, "speed"),
                                 MIN_SPEED, MAX_SPEED)
            t["children"] = [self.track(c, _at(where, f"children[{i}]"), tid, meta_depth + 1)
                             for i, c in enumerate(_list(raw.get("children", []),
                                                         _at(where, "children")))]
        return t

    def effects(self, raw: Any, where: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, e in enumerate(_list(raw, _at(where, "effects"))):
            w = _at(where, f"effects[{i}]")
            if isinstance(e, dict) and isinstance(e.get("id"), str):
                w = f"{w} {quote(e['id'])}"
            spec = check_effect_spec(e, w)
            if spec["id"] in seen:
                raise ProjectError(_at(w, "id"), f"{quote(spec['id'])} is already the id of "
                                   "another effect in this chain")
            seen.add(spec["id"])
            out.append(spec)
        return out

    def automation(self, raw: Any, where: str, effects: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
        lanes = []
        params_seen: set[str] = set()
        by_id = {e["id"]: e for e in effects}
        for i, lane in enumerate(_list(raw, _at(where, "automation"))):
            w = _at(where, f"automation[{i}]")
            _object(lane, w, ("param", "points"), ("param",))
            param = _str(lane["param"], f"{w} > param")
            check_value: Callable[[float, str], float]
            if param == "volume":
                def check_value(v: Any, pw: str) -> float:
                    return _number(v, pw, 0.0, MAX_GAIN)
            elif param == "pan":
                def check_value(v: Any, pw: str) -> float:
                    return _number(v, pw, -1.0, 1.0)
            else:
                eid, dot, name = param.rpartition(".")
                if not dot or eid not in by_id:
                    raise ProjectError(f"{w} > param", f"{param!r} names nothing: it must be "
                                       "volume, pan or <effect id>.<param> of this track's "
                                       f"effects ({', '.join(by_id) or 'none'})")
                spec = by_id[eid]
                if name not in spec.get("params", {}):
                    raise ProjectError(f"{w} > param", f"{param!r} names nothing: effect "
                                       f"{quote(eid)} has no parameter {name!r} (it has "
                                       f"{', '.join(spec.get('params', {})) or 'none'})")
                check_value = _effect_param_checker(spec, name)
            if param in params_seen:
                raise ProjectError(f"{w} > param", f"{param!r} already has a lane")
            params_seen.add(param)
            points: list[dict[str, Any]] = []
            for j, pt in enumerate(_list(lane.get("points", []), f"{w} > points")):
                pw = f"{w} > points[{j}]"
                _object(pt, pw, ("at", "value", "curve"), ("at", "value"))
                at = _number(pt["at"], f"{pw} > at", -MAX_POSITION_WN, MAX_POSITION_WN)
                if points and at < points[-1]["at"]:
                    raise ProjectError(f"{pw} > at", f"points must be in order: {at:g} after "
                                       f"{points[-1]['at']:g}")
                points.append({"at": at, "value": check_value(pt["value"], f"{pw} > value"),
                               "curve": _enum(pt.get("curve", "linear"), f"{pw} > curve",
                                              CURVES)})
            lanes.append({"param": param, "points": points})
        return lanes

    # ---- clips
    def _clip_common(self, c: dict[str, Any], where: str) -> dict[str, Any]:
        cid = _str(c["id"], f"{where} > id")
        if cid in self.clip_ids:
            raise ProjectError(f"{where} > id", f"{quote(cid)} is already the id of another "
                               "clip")
        self.clip_ids.add(cid)
        start = _number(c["start"], f"{where} > start", 0.0, MAX_POSITION_WN)
        length = c["length"]
        if isinstance(length, int | float) and not isinstance(length, bool) and length < 0:
            raise ProjectError(f"{where} > length", f"must not be negative, got {length:g}")
        return {"id": cid, "start": start,
                "length": _number(length, f"{where} > length", 0.0, MAX_POSITION_WN)}

    def _clip_where(self, c: Any, where: str) -> str:
        if isinstance(c, dict) and isinstance(c.get("id"), str):
            return f"{where} {quote(c['id'])}"
        return where

    def audio_clip(self, raw: Any, where: str) -> dict[str, Any]:
        where = self._clip_where(raw, where)
        c = _object(raw, where, _AUDIO_CLIP, ("id", "source", "start", "length"))
        out = self._clip_common(c, where)
        out["source"] = self.source(c["source"], f"{where} > source")
        out["offset"] = _number(c.get("offset", 0.0), f"{where} > offset", 0.0, MAX_SECONDS)
        out["gain"] = _number(c.get("gain", 1.0), f"{where} > gain", 0.0, MAX_GAIN)
        out["fade_in"] = _number(c.get("fade_in", 0.0), f"{where} > fade_in", 0.0, MAX_SECONDS)
        out["fade_out"] = _number(c.get("fade_out", 0.0), f"{where} > fade_out", 0.0,
                                  MAX_SECONDS)
        out["reversed"] = _bool(c.get("reversed", False), f"{where} > reversed")
        out["loop"] = _bool(c.get("loop", False), f"{where} > loop")
        bpm = c.get("source_bpm")
        out["source_bpm"] = None if bpm is None else _number(bpm, f"{where} > source_bpm",
                                                             1.0, 1000.0)
        return out

    def midi_clip(self, raw: Any, where: str) -> dict[str, Any]:
        where = self._clip_where(raw, where)
        c = _object(raw, where, _MIDI_CLIP, ("id", "start", "length"))
        out = self._clip_common(c, where)
        notes = []
        for i, n in enumerate(_list(c.get("notes", []), f"{where} > notes")):
            w = f"{where} > notes[{i}]"
            _object(n, w, ("at", "length", "pitch", "velocity"), ("at", "length", "pitch"))
            ln = n["length"]
            if isinstance(ln, int | float) and not isinstance(ln, bool) and ln < 0:
                raise ProjectError(f"{w} > length", f"must not be negative, got {ln:g}")
            notes.append({"at": _number(n["at"], f"{w} > at", 0.0, MAX_POSITION_WN),
                          "length": _number(ln, f"{w} > length", 0.0, MAX_POSITION_WN),
                          "pitch": _int(n["pitch"], f"{w} > pitch", 0, 127),
                          "velocity": _int(n.get("velocity", 100), f"{w} > velocity", 1, 127)})
        cc = []
        for i, e in enumerate(_list(c.get("cc", []), f"{where} > cc")):
            w = f"{where} > cc[{i}]"
            _object(e, w, ("at", "controller", "value"), ("at", "controller", "value"))
            cc.append({"at": _number(e["at"], f"{w} > at", 0.0, MAX_POSITION_WN),
                       "controller": _int(e["controller"], f"{w} > controller", 0, 127),
                       "value": _int(e["value"], f"{w} > value", 0, 127)})
        out["notes"] = notes
        out["cc"] = cc
        return out

    def source(self, raw: Any, where: str, soundfont: bool = False) -> str | dict[str, str]:
        """An audio source (or, with ``soundfont``, a SoundFont): a pool reference that
        must be in the pool, or ``{"file": path}`` imported into it."""
        if isinstance(raw, dict):
            _object(raw, where, ("file",), ("file",))
            rel = _str(raw["file"], f"{where} > file")
            if self.pool is None or self.base_dir is None:
                return {"file": rel}
            path = (self.base_dir / rel).resolve()
            if path not in self.imported:
                try:
                    self.imported[path] = (self.pool.import_soundfont(path) if soundfont
                                           else self.pool.import_file(path))
                except (SourceError, OSError) as e:
                    raise ProjectError(f"{where} > file", f"{rel!r} cannot be imported: "
                                       f"{e}") from None
            return self.imported[path]
        ref = _str(raw, where)
        if not _REF.fullmatch(ref):
            raise ProjectError(where, f"must be \"sha256:<64 hex digits>\" or "
                               f"{{\"file\": path}}, got {ref!r}")
        if self.pool is not None:
            try:
                if soundfont:
                    self.pool.source_path(ref)
                else:
                    self.pool.source(ref)
            except SourceError as e:
                raise ProjectError(where, f"{ref} is not in the pool ({e})") from None
        return ref

    def instrument(self, raw: Any, where: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise ProjectError(where, f"must be an object, got {_type_name(raw)}")
        kind = _enum(raw.get("kind"), f"{where} > kind", ("synth", "soundfont"))
        if kind == "synth":
            _object(raw, where, ("kind", "wave", "attack", "decay", "sustain", "release"))
            d = DEFAULT_SYNTH
            return {"kind": "synth",
                    "wave": _enum(raw.get("wave", d["wave"]), f"{where} > wave", WAVES),
                    **{k: _number(raw.get(k, d[k]), f"{where} > {k}", 0.0, MAX_ENVELOPE_S)
                       for k in ("attack", "decay")},
                    "sustain": _number(raw.get("sustain", d["sustain"]), f"{where} > sustain",
                                       0.0, 1.0),
                    "release": _number(raw.get("release", d["release"]), f"{where} > release",
                                       0.0, MAX_ENVELOPE_S)}
        _object(raw, where, ("kind", "source", "program", "bank"), ("kind", "source"))
        return {"kind": "soundfont", "source": self.source(raw["source"], f"{where} > source",
                                                           soundfont=True),
                "program": _int(raw.get("program", 0), f"{where} > program", 0, 127),
                "bank": _int(raw.get("bank", 0), f"{where} > bank", 0, 16383)}

    # ---- routing
    def check_routing(self, tracks: list[dict[str, Any]]) -> None:
        for tid, edges in self.edges.items():
            for dest, where in edges[1:]:
                if dest not in self.track_kind:
                    raise ProjectError(where, f"{quote(dest)} is not the id of any track")
                if self.track_kind[dest] != "bus":
                    raise ProjectError(where, f"{quote(dest)} is a {self.track_kind[dest]} "
                                       "track; sends go to buses")
                if dest == tid:
                    raise ProjectError(where, "a bus cannot send to itself (routing cycle)")
        # depth-first search for a cycle through the tree and the sends
        state: dict[str, int] = {}  # 1 on the current path, 2 done
        for root in self.edges:
            if state.get(root):
                continue
            path: list[str] = [root]
            state[root] = 1
            stack: list[Iterator[tuple[str, str]]] = [iter(self.edges[root])]
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                    continue
                dest, where = nxt
                if not dest:
                    continue
                if state.get(dest) == 1:
                    self.report_cycle(path[path.index(dest):])
                if not state.get(dest):
                    state[dest] = 1
                    path.append(dest)
                    stack.append(iter(self.edges[dest]))


    def report_cycle(self, cycle: list[str]) -> None:
        """Name the cycle from the send that closes it (a tree alone has no cycle)."""
        n = len(cycle)
        for i in range(n):
            src, dest = cycle[i], cycle[(i + 1) % n]
            for dst, where in self.edges[src][1:]:
                if dst == dest:
                    names = [quote(cycle[(i + k) % n]) for k in range(n + 1)]
                    raise ProjectError(where, "routing cycle: " + " -> ".join(names))
        raise ProjectError(self.track_where[cycle[0]], "routing cycle")  # pragma: no cover


# --------------------------------------------------------------------------- effects

def check_effect_spec(spec: Any, where: str) -> dict[str, Any]:
    """Normalize one effect spec (the kinds and their parameters live in
    :mod:`companion.model.effect_kinds`)."""
    return dict(check_effect(spec, where))


def _effect_param_checker(spec: dict[str, Any], name: str) -> Callable[[Any, str], float]:
    """Automation values are checked as the effect checks a static value; only numeric
    parameters can be automated."""
    def check(v: Any, where: str) -> float:
        value = check_param(spec["kind"], name, v, where)
        if isinstance(value, str):
            raise ProjectError(where, f"{name} is a choice, not a number; it cannot be "
                               "automated")
        return float(value)
    return check
