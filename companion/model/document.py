"""The project as one pycrdt document behind a typed API.

Callers (the views, the player, the tests) use :class:`Project`, :class:`Track`,
:class:`Clip` and :class:`Master` and get plain Python values back; nothing else touches
pycrdt. The model follows jupyter_ydoc: one class wraps the Y document, and the layout below
is the one place that knows how the project is stored.

Layout (the document's root types)::

    settings   Map    format, version, sample_rate, master_volume,
                      tempo  (a list of {"at", "bpm", "ramp"}: one value, last writer wins)
                      meter  (a list of {"at", "num", "den"}: likewise)
    tracks     Map    track ID -> Map {kind, name, volume, pan, mute, solo,
                        offset, speed            (metatracks)
                        instrument               (MIDI tracks: one value)
                        frozen, frozen_clips     (frozen audio tracks: the original as
                                                  one JSON string, the bounce clips' IDs)
                        children: Array of IDs   (metatracks: their order)
                        effects: Map effect ID -> Map {kind, bypass, params: Map}
                        effect_order: Array of effect IDs
                        sends: Map bus ID -> Map {level, pre_fader}
                        automation: Map param -> Map point ID -> {"at", "value", "curve"}}
    root       Array  the root tracks' IDs, in order
    clips      Map    clip ID -> Map {track, kind ("audio" | "midi"), start, length,
                        audio: source, offset, gain, fade_in, fade_out, reversed, loop,
                               source_bpm (absent when the clip does not follow the tempo)
                               bounce (the track ID it is a bounce of; see freeze)
                        midi: notes: Map note ID -> {...}, cc: Map event ID -> {...}}
    master_effects       Map    the master chain's effects (as a track's ``effects``)
    master_effect_order  Array  its order

A clip names its track (a clip's place on its track is its ``start``, so no order is
kept); a track's place is its entry in exactly one order array (``root`` or a metatrack's
``children``). Concurrent edits to different fields merge; the same field is last writer
wins (the CRDT's rule, identical on every peer). Nothing here rebuilds a document from a
file: :meth:`Project.from_interchange` makes a *new* document for an import, and a project
on disk is reopened by replaying its own updates (``companion.model.persist``).

Every local edit runs in one transaction whose origin is the local user; the undo manager
tracks only that origin, so undo never reverts a bandmate's work. Edits check their values
and the structure (acyclic routing, nesting, references) before writing, so a refused edit
leaves the document unchanged. After remote updates (and after undo and redo, which may
revive something a peer removed), :meth:`Project.repair` restores the invariants with rules
that depend only on the document's content, in a transaction whose origin is
:data:`REPAIR_ORIGIN`, which no undo tracks. The rules are in ``docs/companion-model.md``.

>>> p = Project.create("alice", sample_rate=48000, bpm=120.0)
>>> drums = p.add_track("audio", "Drums")
>>> clip = drums.add_clip(source="sha256:" + "0" * 64, start=0.0, length=1.0)
>>> clip.gain = 0.5
>>> p.undo_labels[-1], clip.gain
('set clip gain', 0.5)
>>> p.undo()
'set clip gain'
>>> clip.gain
1.0
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from pycrdt import Array, Doc, Map, UndoManager

from companion.errors import ProjectError
from companion.model import checks
from companion.model.checks import ROOT, TRACK_KINDS
from companion.model.effect_kinds import check_effect, check_param
from companion.model.schema import DEFAULT_SYNTH, MAX_GAIN, SAMPLE_RATES, SourcePool
from companion.model.timemap import check_meter, check_tempo, meter_points, tempo_points

FORMAT = "ouroboros-project"
VERSION = 1
REPAIR_ORIGIN = "ouroboros:repair"
IMPORT_ORIGIN = "ouroboros:import"
_ROOTS = ("settings", "tracks", "root", "clips", "master_effects", "master_effect_order")
_ARRAYS = ("root", "master_effect_order")
UNDO_LIMIT = 300
"""The undo history holds at most this many steps; past it, it is cut to UNDO_KEEP."""
UNDO_KEEP = 200


def new_id(prefix: str) -> str:
    """A fresh ID: random, so two peers never mint the same one."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _load(shared: Map[Any] | Array[Any]) -> Any:
    # one call into Rust for the whole subtree: far faster than walking it from Python
    return json.loads(str(shared))


def _index_of(arr: Array[Any], value: str) -> int:
    for i, v in enumerate(_load(arr)):
        if v == value:
            return i
    return -1


def _insert_at(where: str, arr: Array[Any], value: str, index: int | None) -> None:
    n = len(arr)
    if index is None:
        index = n
    if isinstance(index, bool) or not isinstance(index, int) or not -n - 1 <= index <= n:
        raise ProjectError(where, f"index {index!r} is out of range 0..{n}")
    arr.insert(index if index >= 0 else n + 1 + index, value)


class Project:
    """A project: one pycrdt document and the local user who edits it.

    ``Project(user)`` wraps an empty document (a peer about to receive a project by
    :meth:`apply_update`); :meth:`create` starts a new project; :meth:`from_interchange`
    imports a ``project.json``.
    """

    def __init__(self, user: str, doc: Doc | None = None):
        if not isinstance(user, str) or not user:
            raise ProjectError("user", "must be a non-empty string")
        self.user = user
        self._doc: Doc = doc if doc is not None else Doc()
        # get-or-insert with the type: a document filled by apply_update knows its roots'
        # names but not their types until asked
        self._roots: dict[str, Map[Any] | Array[Any]] = {
            name: self._doc.get(name, type=Array if name in _ARRAYS else Map)
            for name in _ROOTS}
        self._origin = ("user", user)
        # plain(): the whole document as plain values, kept and brought up to date entry by
        # entry: a committed change marks the top-level entries it touched (a clip, a
        # track), and only those are converted again (one clip moved in a 1,000-clip song
        # is one small conversion, not the whole document)
        self._plain: dict[str, Any] | None = None
        self._stale_roots: set[str] = set()
        self._stale_keys: dict[str, set[str]] = {}
        self._repairing = False
        for name, shared in self._roots.items():
            shared.observe_deep(partial(self._mark_stale, name))
        self._undo = self._new_undo_manager()
        self._undo_labels: list[str] = []
        self._redo_labels: list[str] = []
        self._depth = 0
        self._hooks: list[Callable[[], None]] = []

    def _new_undo_manager(self, undo_stack: list[Any] | None = None,
                          redo_stack: list[Any] | None = None) -> UndoManager:
        # capture_timeout 0: every edit (transaction) is its own undo step; grouping is
        # explicit (Project.edit), never a matter of how fast the user clicked
        um = UndoManager(scopes=list(self._roots.values()), capture_timeout_millis=0,
                         undo_stack=undo_stack, redo_stack=redo_stack)
        um.include_origin(self._origin)
        return um

    # --- construction ------------------------------------------------------------------
    @classmethod
    def create(cls, user: str, sample_rate: int = 48000, bpm: float = 120.0,
               meter: tuple[int, int] = (4, 4)) -> Project:
        """A new, empty project. Its creation is not an undo step."""
        if sample_rate not in SAMPLE_RATES or isinstance(sample_rate, bool):
            raise ProjectError("sample_rate", f"must be one of {SAMPLE_RATES}, got "
                               f"{sample_rate!r}")
        tempo = [{"at": 0.0, "bpm": float(bpm), "ramp": False}]
        check_tempo(tempo_points(tempo))
        met = [{"at": 0.0, "num": int(meter[0]), "den": int(meter[1])}]
        check_meter(meter_points(met))
        p = cls(user)
        with p._doc.transaction(origin=IMPORT_ORIGIN):
            s = p._map("settings")
            s["format"] = FORMAT
            s["version"] = VERSION
            s["sample_rate"] = int(sample_rate)
            s["master_volume"] = 1.0
            s["tempo"] = tempo
            s["meter"] = met
        return p

    @classmethod
    def from_interchange(cls, data: Mapping[str, Any], user: str, *,
                         pool: SourcePool | None = None,
                         base_dir: Path | None = None) -> Project:
        """A NEW document holding an imported ``project.json`` (import only: an open project
        is never rebuilt from a file). The data goes through the shared schema
        (``companion.model.schema.normalize_project``) first: with a ``pool`` every source
        must be in it, and with ``base_dir`` too, ``{"file": path}`` sources are imported
        into it; without a pool such a source is refused."""
        from companion.model.interchange import build_project
        return build_project(cls, data, user, pool, base_dir)

    # --- low-level access (this module and its helpers only) ----------------------------
    def _map(self, name: str) -> Map[Any]:
        m = self._roots[name]
        assert isinstance(m, Map)
        return m

    def _arr(self, name: str) -> Array[Any]:
        a = self._roots[name]
        assert isinstance(a, Array)
        return a

    def _track_map(self, tid: str) -> Map[Any]:
        tracks = self._map("tracks")
        if tid not in tracks:
            raise ProjectError(f"track {tid}", "does not exist")
        m = tracks[tid]
        assert isinstance(m, Map)
        return m

    def _clip_map(self, cid: str) -> Map[Any]:
        clips = self._map("clips")
        if cid not in clips:
            raise ProjectError(f"clip {cid}", "does not exist")
        m = clips[cid]
        assert isinstance(m, Map)
        return m

    def _plain_tracks(self) -> tuple[dict[str, Any], list[str]]:
        return _load(self._map("tracks")), _load(self._arr("root"))

    def _order_array(self, container: str) -> Array[Any]:
        if container == ROOT:
            return self._arr("root")
        arr = self._track_map(container).get("children")
        if not isinstance(arr, Array):
            raise ProjectError(f"track {container}", "is not a metatrack")
        return arr

    # --- transactions, undo -----------------------------------------------------------
    @contextmanager
    def edit(self, label: str) -> Iterator[None]:
        """Group edits into one undo step named ``label``:

        >>> p = Project.create("alice")
        >>> with p.edit("add band"):
        ...     _ = p.add_track("audio", "Guitar"), p.add_track("audio", "Bass")
        >>> p.undo_labels, len(p.tracks())
        (['add band'], 2)

        If anything inside raises, what the block wrote is rolled back (undone, and the
        redo step dropped) and the error propagates."""
        if self._depth:
            yield
            return
        before = len(self._undo.undo_stack)
        self._depth = 1
        failed = False
        try:
            with self._doc.transaction(origin=self._origin):
                yield
        except BaseException:
            failed = True
            raise
        finally:
            self._depth = 0
            after = len(self._undo.undo_stack)
            if failed and after > before:
                self._undo.undo()
                self._undo = self._new_undo_manager(list(self._undo.undo_stack),
                                                    list(self._undo.redo_stack)[:-1])
            elif after > before:
                self._undo_labels.append(label)
                self._redo_labels.clear()
                if after > UNDO_LIMIT:
                    self._trim_history()
            self._sync_labels()
            self._notify()

    def on_commit(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after every finished change (an edit or an edit block, an
        undo, a redo, a merge and its repair): the moment to make things durable (the
        updates themselves come through :meth:`observe_updates`). Returns a function that
        stops it."""
        self._hooks.append(callback)
        return lambda: self._hooks.remove(callback)

    def _notify(self) -> None:
        for cb in list(self._hooks):
            cb()

    def _trim_history(self) -> None:
        # yrs' undo manager does work in proportion to its stack on every transaction
        # (10,000 steps: ~10 ms an edit); keep the newest UNDO_KEEP steps, in bursts so
        # the rebuild is rare
        keep = list(self._undo.undo_stack)[-UNDO_KEEP:]
        self._undo = self._new_undo_manager(keep, list(self._undo.redo_stack))
        del self._undo_labels[:-UNDO_KEEP]

    def _sync_labels(self) -> None:
        n_undo, n_redo = len(self._undo.undo_stack), len(self._undo.redo_stack)
        while len(self._undo_labels) < n_undo:
            self._undo_labels.insert(0, "edit")
        del self._undo_labels[:len(self._undo_labels) - n_undo]
        while len(self._redo_labels) < n_redo:
            self._redo_labels.insert(0, "edit")
        del self._redo_labels[:len(self._redo_labels) - n_redo]

    @property
    def can_undo(self) -> bool:
        """Whether the local user has an edit to undo."""
        return self._undo.can_undo()

    @property
    def can_redo(self) -> bool:
        return self._undo.can_redo()

    @property
    def undo_labels(self) -> list[str]:
        """The local user's undo history, oldest first (``"move clip"``, ...)."""
        return list(self._undo_labels)

    @property
    def redo_labels(self) -> list[str]:
        """What :meth:`redo` would redo, the next one last."""
        return list(self._redo_labels)

    def undo(self) -> str | None:
        """Undo the local user's last edit (never a peer's); returns its label, or None
        when there was nothing to undo.

        As in Yjs, a step whose changes peers have all overwritten since (nothing left to
        revert) is skipped and the next one is undone; the label returned is the step that
        changed something. A revived item that breaks an invariant (say, a clip on a track
        a peer deleted since) is repaired at once."""
        return self._step(undo=True)

    def redo(self) -> str | None:
        """Redo what :meth:`undo` undid; returns its label or None."""
        return self._step(undo=False)

    def _step(self, undo: bool) -> str | None:
        um = self._undo
        if not (um.can_undo() if undo else um.can_redo()):
            return None
        src, dst = ((self._undo_labels, self._redo_labels) if undo else
                    (self._redo_labels, self._undo_labels))
        before = len(um.undo_stack if undo else um.redo_stack)
        changed = um.undo() if undo else um.redo()
        popped = before - len(um.undo_stack if undo else um.redo_stack)
        taken = src[len(src) - popped:] if popped > 0 else []
        del src[len(src) - len(taken):]
        label = taken[0] if taken else "edit"
        if changed:
            dst.append(label)
        self._sync_labels()
        self.repair()
        self._notify()
        return label if changed else None

    # --- replication ------------------------------------------------------------------
    def get_state(self) -> bytes:
        """The document's state vector (what it has seen)."""
        return self._doc.get_state()

    def get_update(self, state: bytes | None = None) -> bytes:
        """Everything the document has that a peer at ``state`` lacks (all, by default)."""
        return self._doc.get_update(state)

    def apply_update(self, update: bytes, *, repair: bool = True) -> None:
        """Merge a peer's update, then repair what the merge broke (see :meth:`repair`)."""
        try:
            self._doc.apply_update(update)
        except Exception as e:  # the binding raises plain exceptions for bad bytes
            raise ProjectError("update", f"cannot be applied: {e}") from e
        if repair:
            self.repair()
        self._notify()

    def observe_updates(self, callback: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``callback(update)`` with the binary update of every committed change
        (local edits, merges, undo, repairs); returns a function that stops it."""
        sub = self._doc.observe(lambda event: callback(event.update))
        return lambda: self._doc.unobserve(sub)

    # --- reading ------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self._map("settings").get("sample_rate", 48000))

    def tracks(self) -> list[Track]:
        """The root tracks, in order."""
        return [Track(self, t) for t in _load(self._arr("root"))]

    def all_tracks(self) -> list[Track]:
        """Every track, depth first in order (a metatrack before its children)."""
        tracks, root = self._plain_tracks()
        out: list[Track] = []

        def walk(ids: Sequence[str]) -> None:
            for tid in ids:
                out.append(Track(self, tid))
                walk(tracks.get(tid, {}).get("children", []))
        walk(root)
        return out

    def track(self, track_id: str) -> Track:
        self._track_map(track_id)
        return Track(self, track_id)

    def clip(self, clip_id: str) -> Clip:
        self._clip_map(clip_id)
        return Clip(self, clip_id)

    def clips(self) -> list[Clip]:
        """Every clip of the project, by ID."""
        return [Clip(self, c) for c in sorted(self._map("clips").keys())]

    @property
    def master(self) -> Master:
        return Master(self)

    @property
    def tempo(self) -> list[dict[str, Any]]:
        """The tempo map: ``[{"at", "bpm", "ramp"}]``, sorted."""
        return [dict(p) for p in self._map("settings").get("tempo") or []]

    def set_tempo(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Replace the tempo map (checked: sorted, first at 0, bpm 1..1000)."""
        try:
            clean = [{"at": checks.number(f"tempo[{i}].at", p.get("at")),
                      "bpm": checks.number(f"tempo[{i}].bpm", p.get("bpm")),
                      "ramp": checks.boolean(f"tempo[{i}].ramp", p.get("ramp", False))}
                     for i, p in enumerate(points)]
        except AttributeError as e:
            raise ProjectError("tempo", "must be a list of {at, bpm, ramp}") from e
        check_tempo(tempo_points(clean))
        with self.edit("set tempo"):
            self._map("settings")["tempo"] = clean

    def set_bpm(self, bpm: float, at: float = 0.0) -> None:
        """Set the tempo at ``at`` (a new point, or the one already there)."""
        pts = [p for p in self.tempo if p["at"] != at]
        pts.append({"at": at, "bpm": bpm, "ramp": False})
        pts.sort(key=lambda p: p["at"])
        self.set_tempo(pts)

    def remove_tempo_point(self, at: float) -> None:
        pts = [p for p in self.tempo if p["at"] != at]
        if len(pts) == len(self.tempo):
            raise ProjectError("tempo", f"no point at {at:g}")
        self.set_tempo(pts)

    @property
    def meter(self) -> list[dict[str, Any]]:
        """The meter: ``[{"at", "num", "den"}]``."""
        return [{"at": float(p["at"]), "num": int(p["num"]), "den": int(p["den"])}
                for p in self._map("settings").get("meter") or []]

    def set_meter(self, points: Sequence[Mapping[str, Any]]) -> None:
        try:
            clean = [{"at": checks.number(f"meter[{i}].at", p.get("at")),
                      "num": checks.integer(f"meter[{i}].num", p.get("num"), 1, 64),
                      "den": checks.integer(f"meter[{i}].den", p.get("den"), 1, 64)}
                     for i, p in enumerate(points)]
        except AttributeError as e:
            raise ProjectError("meter", "must be a list of {at, num, den}") from e
        check_meter(meter_points(clean))
        with self.edit("set meter"):
            self._map("settings")["meter"] = clean

    # --- tracks -------------------------------------------------------------------------
    def add_track(self, kind: str, name: str, parent: str | None = None,
                  index: int | None = None, *, track_id: str | None = None) -> Track:
        """A new track of ``kind`` (audio, midi, meta, bus) at ``index`` of ``parent`` (a
        metatrack's ID; the root by default; the end by default)."""
        if kind not in TRACK_KINDS:
            raise ProjectError("kind", f"must be one of {', '.join(TRACK_KINDS)}, got {kind!r}")
        checks.text("name", name)
        tid = track_id or new_id("t")
        tracks, root = self._plain_tracks()
        if tid in tracks:
            raise ProjectError(f"track {tid}", "already exists")
        container = parent or ROOT
        sim = _sim_tracks(tracks)
        sim[tid] = {"kind": kind, "children": [] if kind == "meta" else None}
        sim_root = list(root)
        _sim_insert(sim, sim_root, container, tid, index)
        checks.check_structure(sim, sim_root)
        with self.edit(f"add {kind} track"):
            m: Map[Any] = Map()
            self._map("tracks")[tid] = m
            self._init_track(m, kind, name)
            _insert_at(f"track {container or 'root'}", self._order_array(container), tid,
                       index)
        return Track(self, tid)

    def _init_track(self, m: Map[Any], kind: str, name: str) -> None:
        m["kind"] = kind
        m["name"] = name
        m["volume"] = 1.0
        m["pan"] = 0.0
        m["mute"] = False
        m["solo"] = False
        m["effects"] = Map()
        m["effect_order"] = Array()
        m["sends"] = Map()
        m["automation"] = Map()
        if kind == "meta":
            m["offset"] = 0.0
            m["speed"] = 1.0
            m["children"] = Array()
        if kind == "midi":
            m["instrument"] = dict(DEFAULT_SYNTH)

    def _container_of(self, tid: str) -> str:
        tracks, root = self._plain_tracks()
        return checks.parents(tracks, root).get(tid, ROOT)

    def move_track(self, track_id: str, parent: str | None = None,
                   index: int | None = None) -> None:
        """Move a track (with what it contains) to ``index`` of ``parent`` (the root by
        default). Refused if it would put a metatrack inside itself, nest deeper than 10 or
        make the routing loop."""
        tracks, root = self._plain_tracks()
        if track_id not in tracks:
            raise ProjectError(f"track {track_id}", "does not exist")
        old = checks.parents(tracks, root)[track_id]
        new = parent or ROOT
        if new != ROOT and new not in tracks:
            raise ProjectError(f"track {new}", "does not exist")
        sim = _sim_tracks(tracks)
        sim_root = list(root)
        _sim_remove(sim, sim_root, old, track_id)
        _sim_insert(sim, sim_root, new, track_id, index)
        checks.check_structure(sim, sim_root)
        with self.edit("move track"):
            self._detach(track_id, old)
            _insert_at(f"track {new or 'root'}", self._order_array(new), track_id, index)

    def _detach(self, tid: str, container: str) -> None:
        arr = self._order_array(container)
        i = _index_of(arr, tid)
        if i >= 0:
            del arr[i]

    def delete_track(self, track_id: str) -> None:
        """Delete a track, everything it contains (child tracks, clips) and the sends that
        feed it."""
        tracks, root = self._plain_tracks()
        if track_id not in tracks:
            raise ProjectError(f"track {track_id}", "does not exist")
        doomed: list[str] = []
        stack = [track_id]
        while stack:
            t = stack.pop()
            doomed.append(t)
            stack.extend(c for c in tracks.get(t, {}).get("children", []) if c in tracks)
        gone = set(doomed)
        with self.edit("delete track"):
            self._detach(track_id, checks.parents(tracks, root).get(track_id, ROOT))
            clips = self._map("clips")
            for cid, c in _load(clips).items():
                if c.get("track") in gone:
                    del clips[cid]
            tm = self._map("tracks")
            for t in doomed:
                del tm[t]
            for tid, t in tracks.items():
                if tid in gone:
                    continue
                for bus in t.get("sends", {}):
                    if bus in gone:
                        del self._track_map(tid)["sends"][bus]

    def group(self, track_ids: Sequence[str], name: str = "Group") -> Track:
        """Put tracks into a new metatrack, placed where the first of them (in the order
        they appear in the arrangement) was."""
        if not track_ids:
            raise ProjectError("group", "needs at least one track")
        tracks, root = self._plain_tracks()
        for t in track_ids:
            if t not in tracks:
                raise ProjectError(f"track {t}", "does not exist")
        if len(set(track_ids)) != len(track_ids):
            raise ProjectError("group", "lists a track twice")
        order = [t.id for t in self.all_tracks()]
        chosen = sorted(track_ids, key=order.index)
        parent_of = checks.parents(tracks, root)
        for t in chosen:  # a track inside another chosen one goes along with it
            p = parent_of.get(t, ROOT)
            while p != ROOT:
                if p in chosen:
                    raise ProjectError(f"track {t}", f"is inside {p}, which is grouped too")
                p = parent_of.get(p, ROOT)
        first = chosen[0]
        container = parent_of[first]
        index = checks.children_of(tracks, root, container).index(first)
        gid = new_id("t")
        sim = _sim_tracks(tracks)
        sim_root = list(root)
        for t in chosen:
            _sim_remove(sim, sim_root, parent_of[t], t)
        sim[gid] = {"kind": "meta", "children": list(chosen)}
        _sim_insert(sim, sim_root, container, gid, index)
        checks.check_structure(sim, sim_root)
        with self.edit("group tracks"):
            for t in chosen:
                self._detach(t, parent_of[t])
            m: Map[Any] = Map()
            self._map("tracks")[gid] = m
            self._init_track(m, "meta", name)
            children = m["children"]
            for t in chosen:
                children.append(t)
            self._order_array(container).insert(index, gid)
        return Track(self, gid)

    def ungroup(self, meta_id: str) -> list[Track]:
        """Dissolve a metatrack: its children take its place, in order; it is deleted
        (with its own effects, sends and automation). Returns the children."""
        tracks, root = self._plain_tracks()
        if tracks.get(meta_id, {}).get("kind") != "meta":
            raise ProjectError(f"track {meta_id}", "is not a metatrack")
        parent_of = checks.parents(tracks, root)
        container = parent_of.get(meta_id, ROOT)
        kids = list(tracks[meta_id].get("children", []))
        index = checks.children_of(tracks, root, container).index(meta_id)
        sim = _sim_tracks(tracks)
        sim_root = list(root)
        _sim_remove(sim, sim_root, container, meta_id)
        del sim[meta_id]
        for i, k in enumerate(kids):
            _sim_insert(sim, sim_root, container, k, index + i)
        for t in sim.values():
            t["sends"] = {b: v for b, v in t.get("sends", {}).items() if b != meta_id}
        checks.check_structure(sim, sim_root)
        with self.edit("ungroup"):
            children = self._track_map(meta_id)["children"]
            children.clear()
            self._detach(meta_id, container)
            arr = self._order_array(container)
            for i, k in enumerate(kids):
                arr.insert(index + i, k)
            del self._map("tracks")[meta_id]
        return [Track(self, k) for k in kids]

    # --- bounce: freeze, flatten, unfreeze ----------------------------------------------
    def _refuse_if_frozen(self, track_id: str, what: str = "its content") -> None:
        """Frozen tracks hold their bounce and nothing else the user can edit."""
        m = self._map("tracks").get(track_id)
        if isinstance(m, Map) and m.get("frozen") is not None:
            raise ProjectError(f"track {track_id}", f"is frozen: {what} cannot change; "
                               "unfreeze it first")

    def check_bounceable(self, track_id: str) -> list[str]:
        """Raise :class:`ProjectError` (naming the track) if ``track_id`` cannot be frozen or
        flattened: it does not exist, is a bus, is frozen already, or holds a bus that a
        track outside it sends to. Returns the track and everything inside it, depth
        first. (Callers check this before spending a render on the bounce.)"""
        tracks, _ = self._plain_tracks()
        if track_id not in tracks:
            raise ProjectError(f"track {track_id}", "does not exist")
        t = tracks[track_id]
        if t.get("frozen") is not None:
            raise ProjectError(f"track {track_id}", "is frozen already; unfreeze it first")
        if t.get("kind") == "bus":
            raise ProjectError(f"track {track_id}", "is a bus: its content is other tracks' "
                               "sends, which a bounce cannot hold")
        inside: list[str] = []
        stack = [track_id]
        while stack:
            x = stack.pop()
            inside.append(x)
            stack.extend(reversed([c for c in tracks.get(x, {}).get("children") or []
                                   if c in tracks]))
        mine = set(inside)
        for tid in sorted(tracks):
            if tid in mine:
                continue
            for bus in sorted(tracks[tid].get("sends") or {}):
                if bus in mine:
                    raise ProjectError(f"track {track_id}", f"holds bus {bus}, which track "
                                       f"{tid} outside it sends to; remove the send first")
        return inside

    def freeze(self, track_id: str, bounce: BounceLike) -> None:
        """Replace the track by its bounce, keeping the original to :meth:`unfreeze`: in one
        undoable edit the track becomes an audio track (same ID, name, volume, pan, mute,
        solo, sends and volume/pan automation, all still live) holding one clip of
        ``bounce`` (``companion.engine.bounce.bounce_track``), with the original, its
        children, clips, effects and IDs, kept in ``frozen``. A frozen track refuses edits
        to its content."""
        self._replace_with_bounce(track_id, bounce, keep=True, label="freeze track")

    def flatten(self, track_id: str, bounce: BounceLike) -> None:
        """Like :meth:`freeze`, but the original is dropped (the track is an ordinary audio
        track afterwards). Undo brings it back."""
        self._replace_with_bounce(track_id, bounce, keep=False, label="flatten track")

    def _replace_with_bounce(self, track_id: str, bounce: BounceLike, keep: bool,
                             label: str) -> None:
        where = f"track {track_id} bounce"
        if getattr(bounce, "track_id", track_id) != track_id:
            raise ProjectError(where, f"is a bounce of track {bounce.track_id}")
        ref = checks.source_ref(f"{where} ref", bounce.ref)
        start = checks.CLIP_FIELDS["start"](f"{where} start", bounce.start_wn)
        length = checks.CLIP_FIELDS["length"](f"{where} length", bounce.length_wn)
        inside = self.check_bounceable(track_id)
        original = None
        if keep:
            from companion.model.interchange import export_track
            original = export_track(self, track_id)
        cid = new_id("c")
        with self.edit(label):
            clips = self._map("clips")
            mine = set(inside)
            for c_id, c in _load(clips).items():
                if c.get("track") in mine:
                    del clips[c_id]
            tm = self._map("tracks")
            for tid in inside[1:]:
                del tm[tid]
            # the track's own map is changed in place, not replaced: a peer's concurrent
            # edit of its volume, or its deletion, still applies to it
            m = self._track_map(track_id)
            for key in ("offset", "speed", "children", "instrument"):
                if key in m:
                    del m[key]
            m["kind"] = "audio"
            m["effects"] = Map()
            m["effect_order"] = Array()
            lanes = m["automation"]
            for param in list(lanes.keys()):
                if param not in ("volume", "pan"):
                    del lanes[param]
            cm: Map[Any] = Map()
            clips[cid] = cm
            for k, v in (("track", track_id), ("kind", "audio"), ("source", ref),
                         ("start", start), ("length", length), ("offset", 0.0),
                         ("gain", 1.0), ("fade_in", 0.0), ("fade_out", 0.0),
                         ("reversed", False), ("loop", False), ("bounce", track_id)):
                cm[k] = v
            if original is not None:
                self._set_frozen(track_id, original, [cid])

    def _set_frozen(self, track_id: str, original: Mapping[str, Any],
                    bounce_clips: Sequence[str]) -> None:
        # one JSON string: the original is only ever replaced whole (last writer wins), and
        # a nested map would let a merge mix two originals
        m = self._track_map(track_id)
        m["frozen"] = json.dumps(original, sort_keys=True, separators=(",", ":"))
        m["frozen_clips"] = list(bounce_clips)
        clips = self._map("clips")
        for cid in bounce_clips:
            if cid in clips:
                clips[cid]["bounce"] = track_id

    def unfreeze(self, track_id: str) -> Track:
        """Bring a frozen track's original back (its children, clips, effects and their
        automation, with their IDs) in one undoable edit, dropping the bounce clip. The mix
        settings that stayed live while it was frozen (name, volume, pan, mute, solo,
        sends, volume/pan automation) are kept as they are now. A send inside the original
        to a bus that is gone meanwhile (or that would now close a routing loop) is
        dropped. A clip a peer added to the frozen track concurrently stays if the original
        is an audio track, and is dropped otherwise."""
        from companion.model.interchange import _add_clip, _add_effect, _add_track
        m = self._track_map(track_id)
        raw = m.get("frozen")
        if raw is None:
            raise ProjectError(f"track {track_id}", "is not frozen")
        original = json.loads(str(raw))
        kind = original.get("kind")
        bounce = set(m.get("frozen_clips") or [])
        tracks = self._map("tracks")
        clips = self._map("clips")
        # an ID the original uses that the project now uses too: only a hand-made file can
        # do that (new IDs are random); refuse rather than merge two things into one
        for t in _walk_interchange(original)[1:]:
            if str(t.get("id")) in tracks:
                raise ProjectError(f"track {track_id}", f"cannot be unfrozen: its original's "
                                   f"track ID {t['id']!r} is in use")
        for t in _walk_interchange(original):
            for c in t.get("clips") or []:
                if c.get("id") in clips and c.get("id") not in bounce:
                    raise ProjectError(f"track {track_id}", f"cannot be unfrozen: its "
                                       f"original's clip ID {c['id']!r} is in use")
        with self.edit("unfreeze track"):
            del m["frozen"]
            if "frozen_clips" in m:
                del m["frozen_clips"]
            for cid, c in _load(clips).items():
                if c.get("track") == track_id and (cid in bounce or kind != "audio"):
                    del clips[cid]
            m["kind"] = kind
            m["effects"] = Map()
            m["effect_order"] = Array()
            if kind == "meta":
                m["offset"] = float(original.get("offset", 0.0))
                m["speed"] = float(original.get("speed", 1.0))
                m["children"] = Array()
            if kind == "midi":
                m["instrument"] = dict(original.get("instrument") or DEFAULT_SYNTH)
            track = Track(self, track_id)
            where = f"track {track_id} frozen"
            for i, fx in enumerate(original.get("effects") or []):
                _add_effect(track, f"{where}.effects[{i}]", fx)
            sends: list[tuple[Any, str, Any]] = []
            lanes: list[tuple[Any, str, Any]] = []
            # volume and pan lanes stayed live on the frozen track; effect lanes come back
            lanes.extend((track, f"{where}.automation[{i}]", ln)
                         for i, ln in enumerate(original.get("automation") or [])
                         if ln.get("param") not in ("volume", "pan"))
            for i, c in enumerate(original.get("clips") or []):
                _add_clip(track, f"{where}.clips[{i}]", c)
            ids = {track_id}
            for i, child in enumerate(original.get("children") or []):
                _add_track(self, f"{where}.children[{i}]", child, track_id, sends, lanes, ids)
            for t, _w, s in sends:
                try:
                    t.set_send(s["bus"], s.get("level", 1.0), s.get("pre_fader", False))
                except ProjectError:
                    pass  # the bus went away while frozen, or now closes a loop: dropped
            for t, w, lane in lanes:
                for k, pt in enumerate(lane.get("points") or []):
                    try:
                        t.add_automation_point(lane["param"], pt["at"], pt["value"],
                                               pt.get("curve", "linear"))
                    except ProjectError as e:
                        raise ProjectError(f"{w}.points[{k}]", e.problem) from e
        return Track(self, track_id)

    # --- length -------------------------------------------------------------------------
    def end_position(self) -> float:
        """The end (wn, root time) of the last clip, through enclosing metatracks."""
        tracks, root = self._plain_tracks()
        parent_of = checks.parents(tracks, root)
        end = 0.0
        for c in _load(self._map("clips")).values():
            x = float(c.get("start", 0.0)) + float(c.get("length", 0.0))
            p = parent_of.get(c.get("track", ""), ROOT)
            seen: set[str] = set()
            while p != ROOT and p not in seen:
                seen.add(p)
                t = tracks.get(p, {})
                x = float(t.get("offset", 0.0)) + x / float(t.get("speed", 1.0) or 1.0)
                p = parent_of.get(p, ROOT)
            end = max(end, x)
        return end

    def to_interchange(self) -> dict[str, Any]:
        """The spec's ``project.json`` form of the document as it is now."""
        from companion.model.interchange import export_project
        return export_project(self)

    def _mark_stale(self, root: str, events: list[Any]) -> None:
        if root in _ARRAYS:  # the orders are short: taken again whole
            self._stale_roots.add(root)
            return
        keys = self._stale_keys.setdefault(root, set())
        for e in events:
            path = e.path
            if path:  # inside one entry (a clip's field, a track's effect...)
                keys.add(str(path[0]))
            else:  # entries of the root map added, replaced or deleted
                keys.update(e.keys)

    def _fresh_plain(self) -> dict[str, Any]:
        return {n: _load(r) for n, r in self._roots.items()}

    def plain(self) -> dict[str, Any]:
        """The whole document as plain values, in its storage layout (for tools, tests, the
        repair rules and the interchange export). Treat it as read-only: the same dict is
        handed out again, brought up to date in place, after the document changes."""
        if self._depth or self._repairing:  # inside our own transaction: read it afresh
            return self._fresh_plain()
        cache = self._plain
        if cache is None:
            cache = self._plain = self._fresh_plain()
        else:
            for name in self._stale_roots:
                cache[name] = _load(self._roots[name])
            for name, keys in self._stale_keys.items():
                shared, entries = self._roots[name], cache[name]
                assert isinstance(shared, Map)  # the arrays are taken whole, above
                for key in keys:
                    if key in shared:
                        value = shared[key]
                        entries[key] = (_load(value) if isinstance(value, Map | Array)
                                        else value)
                    else:
                        entries.pop(key, None)
        self._stale_roots.clear()
        self._stale_keys.clear()
        return cache

    # --- repair -------------------------------------------------------------------------
    def repair(self) -> int:
        """Restore the invariants a merge may have broken; returns how many fixes it made.
        Runs in one transaction with :data:`REPAIR_ORIGIN` (no undo tracks it), and only
        when there is something to fix. The rules depend on the content alone, so every
        peer repairs a merged state the same way."""
        from companion.model.repair import plan_repair
        state = self.plain()
        fixes = plan_repair(state) or _bounce_fixes(state)
        if not fixes:
            return 0
        done = 0
        self._repairing = True
        try:
            with self._doc.transaction(origin=REPAIR_ORIGIN):
                # one transaction: a fix can uncover another (a cycle broken exposes a
                # depth), and reads inside it see the fixes already made
                for _ in range(10000):
                    for fix in fixes:
                        self._apply_fix(fix)
                    done += len(fixes)
                    plain = self.plain()
                    fixes = plan_repair(plain) or _bounce_fixes(plain)
                    if not fixes:
                        break
        finally:
            self._repairing = False
        if not self._depth:
            self._notify()
        return done

    def _apply_fix(self, fix: tuple[Any, ...]) -> None:
        op, *args = fix
        if op == "del_order":
            del self._order_array(args[0])[args[1]]
        elif op == "append_root":
            self._arr("root").append(args[0])
        elif op == "del_clip":
            del self._map("clips")[args[0]]
        elif op == "del_send":
            del self._track_map(args[0])["sends"][args[1]]
        elif op in ("del_fx_order", "append_fx_order"):
            order = (self._arr("master_effect_order") if args[0] == "" else
                     self._track_map(args[0])["effect_order"])
            if op == "del_fx_order":
                del order[args[1]]
            else:
                order.append(args[1])
        elif op == "del_lane":
            del self._track_map(args[0])["automation"][args[1]]
        else:  # pragma: no cover - plan_repair makes only the ops above
            raise AssertionError(op)


def _bounce_fixes(state: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The repair rule of bounces (after the rules of ``repair.py``): a track holds at most
    one bounce of itself. Two peers freezing or flattening the same track concurrently
    each add a bounce clip; a frozen track keeps the ones its ``frozen_clips`` name (the
    freeze whose original won), any other track the clip with the lowest ID. The others
    are deleted, so the track does not play twice as loud."""
    tracks: Mapping[str, Any] = state.get("tracks") or {}
    mine: dict[str, list[str]] = {}
    for cid, c in sorted((state.get("clips") or {}).items()):
        if c.get("bounce") is not None and c.get("bounce") == c.get("track"):
            mine.setdefault(str(c["track"]), []).append(cid)
    fixes: list[tuple[Any, ...]] = []
    for tid, cids in sorted(mine.items()):
        t = tracks.get(tid)
        if t is None or (len(cids) < 2 and t.get("frozen") is None):
            continue
        keep = set(cids) & set(t.get("frozen_clips") or []) if t.get("frozen") else set()
        keep = keep or {cids[0]}
        fixes.extend(("del_clip", c) for c in cids if c not in keep)
    return fixes


def _walk_interchange(t: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """An interchange track and every track inside it, depth first."""
    out = [t]
    for c in t.get("children") or []:
        out.extend(_walk_interchange(c))
    return out


class BounceLike(Protocol):
    """What :meth:`Project.freeze` needs of a bounce (``companion.engine.bounce.Bounce``)."""

    @property
    def track_id(self) -> str: ...

    @property
    def ref(self) -> str: ...

    @property
    def start_wn(self) -> float: ...

    @property
    def length_wn(self) -> float: ...


def _sim_tracks(tracks: Mapping[str, Any]) -> dict[str, Any]:
    # a copy deep enough to rearrange the tree and sends without touching the original
    return {tid: {**t, "children": list(t.get("children") or []),
                  "sends": dict(t.get("sends") or {})}
            for tid, t in tracks.items()}


def _sim_insert(sim: dict[str, Any], root: list[str], container: str, tid: str,
                index: int | None) -> None:
    if container == ROOT:
        arr = root
    else:
        if container not in sim:
            raise ProjectError(f"track {container}", "does not exist")
        if sim[container].get("kind") != "meta":
            raise ProjectError(f"track {container}", "is not a metatrack")
        arr = sim[container]["children"]
    n = len(arr)
    if index is None:
        index = n
    if isinstance(index, bool) or not isinstance(index, int) or not -n - 1 <= index <= n:
        raise ProjectError(f"track {container or 'root'}", f"index {index!r} is out of range "
                           f"0..{n}")
    arr.insert(index if index >= 0 else n + 1 + index, tid)


def _sim_remove(sim: dict[str, Any], root: list[str], container: str, tid: str) -> None:
    arr = root if container == ROOT else sim[container]["children"]
    if tid in arr:
        arr.remove(tid)


class _EffectChain:
    """Effects of one chain (a track's or the master's): methods shared by both."""

    _project: Project

    def _fx_maps(self) -> tuple[Map[Any], Array[Any]]:
        raise NotImplementedError

    def _fx_where(self) -> str:
        raise NotImplementedError

    def _check_editable(self) -> None:
        """Raise if this chain may not change (a frozen track's)."""

    def effects(self) -> list[dict[str, Any]]:
        """The chain in order: ``[{"id", "kind", "params", "bypass"}]``."""
        fx, order = self._fx_maps()
        plain = _load(fx)
        return [{"id": e, "kind": plain[e]["kind"],
                 "params": {k: float(v) if isinstance(v, int) and not isinstance(v, bool)
                            else v for k, v in plain[e].get("params", {}).items()},
                 "bypass": bool(plain[e].get("bypass", False))}
                for e in _load(order) if e in plain]

    def add_effect(self, kind: str, params: Mapping[str, Any] | None = None,
                   index: int | None = None, bypass: bool = False, *,
                   effect_id: str | None = None) -> str:
        """Add an effect of ``kind`` at ``index`` of the chain; returns its ID."""
        self._check_editable()
        where = self._fx_where()
        eid = effect_id or new_id("fx")
        # the effect catalog checks the kind and parameters and fills in the defaults, so
        # every parameter exists (automation can name any of them)
        spec = check_effect({"id": eid, "kind": kind, "params": dict(params or {}),
                             "bypass": bypass}, f"{where} effect {eid}")
        clean = spec["params"]
        fx, order = self._fx_maps()
        if eid in fx:
            raise ProjectError(f"{where} effect {eid}", "already exists")
        with self._project.edit("add effect"):
            m: Map[Any] = Map()
            fx[eid] = m
            m["kind"] = kind
            m["bypass"] = bypass
            pm: Map[Any] = Map()
            m["params"] = pm
            for k, v in clean.items():
                pm[k] = v
            _insert_at(f"{where} effects", order, eid, index)
        return eid

    def _effect(self, eid: str) -> Map[Any]:
        fx, _ = self._fx_maps()
        if eid not in fx:
            raise ProjectError(f"{self._fx_where()} effect {eid}", "does not exist")
        m = fx[eid]
        assert isinstance(m, Map)
        return m

    def move_effect(self, effect_id: str, index: int) -> None:
        self._check_editable()
        self._effect(effect_id)
        _, order = self._fx_maps()
        n = len(order)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise ProjectError(f"{self._fx_where()} effects", f"index {index!r} is out of "
                               f"range 0..{n - 1}")
        with self._project.edit("move effect"):
            del order[_index_of(order, effect_id)]
            order.insert(index, effect_id)

    def remove_effect(self, effect_id: str) -> None:
        """Remove an effect and the automation lanes of its parameters."""
        self._check_editable()
        self._effect(effect_id)
        fx, order = self._fx_maps()
        with self._project.edit("remove effect"):
            i = _index_of(order, effect_id)
            if i >= 0:
                del order[i]
            del fx[effect_id]
            self._drop_lanes_of(effect_id)

    def _drop_lanes_of(self, effect_id: str) -> None:
        pass  # the master has no automation

    def set_effect_param(self, effect_id: str, name: str, value: float | str | bool) -> None:
        self._check_editable()
        where = f"{self._fx_where()} effect {effect_id}.{name}"
        m = self._effect(effect_id)
        v = check_param(str(m["kind"]), name, value, where)
        with self._project.edit("set effect parameter"):
            m["params"][name] = v

    def set_bypass(self, effect_id: str, bypass: bool) -> None:
        self._check_editable()
        m = self._effect(effect_id)
        checks.boolean(f"{self._fx_where()} effect {effect_id}.bypass", bypass)
        with self._project.edit("bypass effect"):
            m["bypass"] = bypass


class Master(_EffectChain):
    """The master bus: volume and effect chain."""

    def __init__(self, project: Project):
        self._project = project

    def _fx_maps(self) -> tuple[Map[Any], Array[Any]]:
        return self._project._map("master_effects"), self._project._arr("master_effect_order")

    def _fx_where(self) -> str:
        return "master"

    @property
    def volume(self) -> float:
        return float(self._project._map("settings").get("master_volume", 1.0))

    @volume.setter
    def volume(self, value: float) -> None:
        v = checks.number("master.volume", value, lo=0, hi=MAX_GAIN)
        with self._project.edit("set master volume"):
            self._project._map("settings")["master_volume"] = v


class Track(_EffectChain):
    """A handle on one track; reads return plain values, writes are undoable edits."""

    def __init__(self, project: Project, track_id: str):
        self._project = project
        self.id = track_id

    def __repr__(self) -> str:
        return f"Track({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Track) and other.id == self.id and other._project is \
            self._project

    def __hash__(self) -> int:
        return hash(self.id)

    def _m(self) -> Map[Any]:
        return self._project._track_map(self.id)

    def _fx_maps(self) -> tuple[Map[Any], Array[Any]]:
        m = self._m()
        return m["effects"], m["effect_order"]

    def _fx_where(self) -> str:
        return f"track {self.id}"

    def _check_editable(self) -> None:
        self._project._refuse_if_frozen(self.id, "its effects")

    @property
    def frozen(self) -> dict[str, Any] | None:
        """The original (interchange form) a frozen track keeps for :meth:`Project.unfreeze`;
        None when the track is not frozen."""
        raw = self._field("frozen", None)
        return json.loads(str(raw)) if raw is not None else None

    @property
    def is_frozen(self) -> bool:
        return self._field("frozen", None) is not None

    @property
    def exists(self) -> bool:
        return self.id in self._project._map("tracks")

    def get(self) -> dict[str, Any]:
        """The track's own fields as plain values (not its children or clips)."""
        return dict(_load(self._m()))

    def _field(self, name: str, default: Any) -> Any:
        return self._m().get(name, default)

    def _set(self, name: str, value: Any, label: str) -> None:
        where = f"track {self.id} {name}"
        if name in ("offset", "speed") and self.kind != "meta":
            raise ProjectError(where, "only metatracks have offset and speed")
        v = checks.TRACK_FIELDS[name](where, value)
        m = self._m()
        with self._project.edit(label):
            m[name] = v

    @property
    def kind(self) -> str:
        return str(self._field("kind", "audio"))

    @property
    def name(self) -> str:
        return str(self._field("name", ""))

    @name.setter
    def name(self, value: str) -> None:
        self._set("name", value, "rename track")

    @property
    def volume(self) -> float:
        return float(self._field("volume", 1.0))

    @volume.setter
    def volume(self, value: float) -> None:
        self._set("volume", value, "set track volume")

    @property
    def pan(self) -> float:
        return float(self._field("pan", 0.0))

    @pan.setter
    def pan(self, value: float) -> None:
        self._set("pan", value, "set track pan")

    @property
    def mute(self) -> bool:
        return bool(self._field("mute", False))

    @mute.setter
    def mute(self, value: bool) -> None:
        self._set("mute", value, "mute track" if value else "unmute track")

    @property
    def solo(self) -> bool:
        return bool(self._field("solo", False))

    @solo.setter
    def solo(self, value: bool) -> None:
        self._set("solo", value, "solo track" if value else "unsolo track")

    @property
    def offset(self) -> float:
        """A metatrack's offset (wn) in its parent; 0 for other tracks."""
        return float(self._field("offset", 0.0))

    @offset.setter
    def offset(self, value: float) -> None:
        self._set("offset", value, "set metatrack offset")

    @property
    def speed(self) -> float:
        """A metatrack's speed (1: as is); 1 for other tracks."""
        return float(self._field("speed", 1.0))

    @speed.setter
    def speed(self, value: float) -> None:
        self._set("speed", value, "set metatrack speed")

    @property
    def instrument(self) -> dict[str, Any] | None:
        v = self._field("instrument", None)
        return dict(v) if isinstance(v, dict) else None

    @instrument.setter
    def instrument(self, value: Mapping[str, Any]) -> None:
        if self.kind != "midi":
            raise ProjectError(f"track {self.id} instrument", "only MIDI tracks have one")
        if not isinstance(value, Mapping) or not isinstance(value.get("kind"), str):
            raise ProjectError(f"track {self.id} instrument", "must be a dict with a kind")
        clean = {str(k): (v if isinstance(v, str | bool) else
                          checks.number(f"track {self.id} instrument.{k}", v))
                 for k, v in value.items()}
        with self._project.edit("set instrument"):
            self._m()["instrument"] = clean

    # --- tree -------------------------------------------------------------------------
    @property
    def parent(self) -> Track | None:
        p = self._project._container_of(self.id)
        return None if p == ROOT else Track(self._project, p)

    def children(self) -> list[Track]:
        """A metatrack's child tracks, in order (empty for other kinds)."""
        arr = self._m().get("children")
        return [Track(self._project, t) for t in _load(arr)] if isinstance(arr, Array) else []

    # --- clips ------------------------------------------------------------------------
    def clips(self) -> list[Clip]:
        """The track's clips, by start (then ID)."""
        mine = [(c.get("start", 0.0), cid) for cid, c in _load(self._project._map("clips"))
                .items() if c.get("track") == self.id]
        return [Clip(self._project, cid) for _, cid in sorted(mine)]

    def add_clip(self, source: str | None = None, start: float = 0.0, length: float = 1.0,
                 *, clip_id: str | None = None, notes: Sequence[Mapping[str, Any]] = (),
                 cc: Sequence[Mapping[str, Any]] = (), **fields: Any) -> Clip:
        """A new clip: on an audio track ``source`` ("sha256:<hex>") and the optional
        fields ``offset``, ``gain``, ``fade_in``, ``fade_out``, ``reversed``, ``loop``,
        ``source_bpm``; on a MIDI track ``notes`` and ``cc``."""
        self._project._refuse_if_frozen(self.id, "its clips")
        kind = self.kind
        cid = clip_id or new_id("c")
        where = f"track {self.id} clip {cid}"
        clips = self._project._map("clips")
        if cid in clips:
            raise ProjectError(where, "already exists")
        if kind == "audio":
            vals: dict[str, Any] = {"start": start, "length": length, "offset": 0.0,
                                    "gain": 1.0, "fade_in": 0.0, "fade_out": 0.0,
                                    "reversed": False, "loop": False, "source": source}
            for k, v in fields.items():
                if k not in checks.AUDIO_CLIP_FIELDS:
                    raise ProjectError(f"{where} {k}", "is not a field of an audio clip")
                vals[k] = v
            if notes or cc:
                raise ProjectError(where, "an audio clip has no notes or cc")
        elif kind == "midi":
            if source is not None or fields:
                raise ProjectError(where, f"a MIDI clip takes only start, length, notes and "
                                   f"cc (got {', '.join(sorted(fields)) or 'source'})")
            vals = {"start": start, "length": length}
        else:
            raise ProjectError(f"track {self.id}", f"a {kind} track holds no clips")
        clean = {k: checks.CLIP_FIELDS[k](f"{where} {k}", v) for k, v in vals.items()}
        clean_notes = [checks.note(f"{where} notes[{i}]", n) for i, n in enumerate(notes)]
        clean_cc = [checks.cc(f"{where} cc[{i}]", c) for i, c in enumerate(cc)]
        with self._project.edit("add clip"):
            m: Map[Any] = Map()
            clips[cid] = m
            m["track"] = self.id
            m["kind"] = kind
            for k, v in clean.items():
                if v is not None:
                    m[k] = v
            if kind == "midi":
                nm: Map[Any] = Map()
                m["notes"] = nm
                for n in clean_notes:
                    nm[new_id("n")] = n
                ccm: Map[Any] = Map()
                m["cc"] = ccm
                for c in clean_cc:
                    ccm[new_id("cc")] = c
        return Clip(self._project, cid)

    def add_midi_clip(self, start: float, length: float,
                      notes: Sequence[Mapping[str, Any]] = (),
                      cc: Sequence[Mapping[str, Any]] = ()) -> Clip:
        """:meth:`add_clip` for a MIDI track, spelled out."""
        return self.add_clip(None, start, length, notes=notes, cc=cc)

    # --- sends ------------------------------------------------------------------------
    def sends(self) -> list[dict[str, Any]]:
        """``[{"bus", "level", "pre_fader"}]``, by bus ID."""
        s = _load(self._m()["sends"])
        return [{"bus": b, "level": float(v["level"]), "pre_fader": bool(v["pre_fader"])}
                for b, v in sorted(s.items())]

    def set_send(self, bus: str, level: float = 1.0, pre_fader: bool = False) -> None:
        """Send to ``bus`` (one send per bus; setting it again changes it). Refused if the
        target is not a bus or the routing would loop."""
        where = f"track {self.id} send {bus}"
        lv = checks.number(f"{where} level", level, lo=0, hi=MAX_GAIN)
        checks.boolean(f"{where} pre_fader", pre_fader)
        tracks, root = self._project._plain_tracks()
        if tracks.get(bus, {}).get("kind") != "bus":
            raise ProjectError(where, f"{bus!r} is not a bus")
        sim = _sim_tracks(tracks)
        sim[self.id]["sends"][bus] = {"level": lv, "pre_fader": pre_fader}
        checks.check_structure(sim, list(root))
        sends = self._m()["sends"]
        with self._project.edit("set send"):
            if bus in sends:
                s = sends[bus]
                s["level"] = lv
                s["pre_fader"] = pre_fader
            else:
                sends[bus] = Map({"level": lv, "pre_fader": pre_fader})

    def remove_send(self, bus: str) -> None:
        sends = self._m()["sends"]
        if bus not in sends:
            raise ProjectError(f"track {self.id} send {bus}", "does not exist")
        with self._project.edit("remove send"):
            del sends[bus]

    # --- automation -------------------------------------------------------------------
    def _check_param(self, param: str) -> None:
        where = f"track {self.id} automation {param!r}"
        if param in ("volume", "pan"):
            return
        eid, dot, name = param.partition(".")
        if not dot:
            raise ProjectError(where, 'must be "volume", "pan" or "<effect id>.<param>"')
        fx, _ = self._fx_maps()
        if eid not in fx:
            raise ProjectError(where, f"names effect {eid!r}, which this track does not have")
        if name not in fx[eid]["params"]:
            raise ProjectError(where, f"effect {eid} has no parameter {name!r}")

    def _check_auto_value(self, param: str, value: object, where: str) -> float:
        if param == "pan":
            return checks.number(where, value, lo=-1, hi=1)
        if param == "volume":
            return checks.number(where, value, lo=0, hi=MAX_GAIN)
        eid, _, name = param.partition(".")
        fx, _ = self._fx_maps()
        v = check_param(str(fx[eid]["kind"]), name, value, where)
        if isinstance(v, str):
            raise ProjectError(where, f"{name} is a choice; it cannot be automated")
        return v

    def automation(self) -> list[dict[str, Any]]:
        """``[{"param", "points": [{"at", "value", "curve"}]}]``, lanes by param, points by
        position."""
        lanes = _load(self._m()["automation"])
        return [{"param": p, "points": [dict(v) for _, v in sorted(
            pts.items(), key=lambda kv: (kv[1]["at"], kv[0]))]}
            for p, pts in sorted(lanes.items())]

    def add_automation_point(self, param: str, at: float, value: float,
                             curve: str = "linear") -> str:
        """Add a point to the lane of ``param`` (made on first use); returns its ID."""
        self._check_param(param)
        where = f"track {self.id} automation {param}"
        pt = checks.auto_point(where, at, value, curve)
        pt["value"] = self._check_auto_value(param, value, f"{where}.value")
        pid = new_id("p")
        lanes = self._m()["automation"]
        with self._project.edit("add automation point"):
            if param not in lanes:
                lanes[param] = Map()
            lanes[param][pid] = pt
        return pid

    def move_automation_point(self, param: str, point_id: str, at: float, value: float,
                              curve: str | None = None) -> None:
        lanes = self._m()["automation"]
        if param not in lanes or point_id not in lanes[param]:
            raise ProjectError(f"track {self.id} automation {param} point {point_id}",
                               "does not exist")
        old = lanes[param][point_id]
        where = f"track {self.id} automation {param}"
        pt = checks.auto_point(where, at, value, curve or old["curve"])
        pt["value"] = self._check_auto_value(param, value, f"{where}.value")
        with self._project.edit("move automation point"):
            lanes[param][point_id] = pt

    def remove_automation_point(self, param: str, point_id: str) -> None:
        lanes = self._m()["automation"]
        if param not in lanes or point_id not in lanes[param]:
            raise ProjectError(f"track {self.id} automation {param} point {point_id}",
                               "does not exist")
        with self._project.edit("remove automation point"):
            del lanes[param][point_id]

    def clear_automation(self, param: str) -> None:
        lanes = self._m()["automation"]
        if param in lanes:
            with self._project.edit("clear automation"):
                del lanes[param]

    def _drop_lanes_of(self, effect_id: str) -> None:
        lanes = self._m()["automation"]
        for p in list(lanes.keys()):
            if p.startswith(effect_id + "."):
                del lanes[p]


class Clip:
    """A handle on one clip; reads return plain values, writes are undoable edits."""

    def __init__(self, project: Project, clip_id: str):
        self._project = project
        self.id = clip_id

    def __repr__(self) -> str:
        return f"Clip({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Clip) and other.id == self.id and other._project is \
            self._project

    def __hash__(self) -> int:
        return hash(self.id)

    def _m(self) -> Map[Any]:
        return self._project._clip_map(self.id)

    @property
    def exists(self) -> bool:
        return self.id in self._project._map("clips")

    def _refuse_if_frozen(self) -> None:
        self._project._refuse_if_frozen(str(self._m().get("track")), "its clips")

    def get(self) -> dict[str, Any]:
        """The clip as plain values (notes and cc as lists sorted by position)."""
        d = dict(_load(self._m()))
        if d.get("kind") == "midi":
            d["notes"] = _sorted_events(d.get("notes", {}))
            d["cc"] = _sorted_events(d.get("cc", {}))
        return d

    @property
    def kind(self) -> str:
        return str(self._m().get("kind", "audio"))

    @property
    def track(self) -> Track:
        return Track(self._project, str(self._m().get("track")))

    def _getf(self, name: str, default: Any) -> Any:
        return self._m().get(name, default)

    def set(self, label: str = "edit clip", **fields: Any) -> None:
        """Set several fields in one undo step: ``clip.set(start=1.0, length=0.5)``."""
        self._refuse_if_frozen()
        kind = self.kind
        allowed = checks.AUDIO_CLIP_FIELDS if kind == "audio" else checks.MIDI_CLIP_FIELDS
        clean: dict[str, Any] = {}
        for k, v in fields.items():
            where = f"clip {self.id} {k}"
            if k not in allowed:
                raise ProjectError(where, f"is not a field of a {kind} clip")
            clean[k] = checks.CLIP_FIELDS[k](where, v)
        m = self._m()
        with self._project.edit(label):
            for k, v in clean.items():
                if v is None:
                    if k in m:
                        del m[k]
                else:
                    m[k] = v

    def move(self, start: float | None = None, track: str | None = None) -> None:
        """Move the clip in time and/or to another track of the same kind."""
        self._refuse_if_frozen()
        if track is not None:
            self._project._refuse_if_frozen(track, "its clips")
        if track is not None:
            tracks, _ = self._project._plain_tracks()
            if track not in tracks:
                raise ProjectError(f"clip {self.id} track", f"track {track} does not exist")
            if tracks[track]["kind"] != self.kind:
                raise ProjectError(f"clip {self.id} track", f"a {self.kind} clip cannot go on "
                                   f"a {tracks[track]['kind']} track")
        s = None if start is None else checks.number(f"clip {self.id} start", start)
        m = self._m()
        with self._project.edit("move clip"):
            if s is not None:
                m["start"] = s
            if track is not None:
                m["track"] = track
                if "bounce" in m and m["bounce"] != track:
                    del m["bounce"]  # an ordinary clip on any other track

    def delete(self) -> None:
        self._refuse_if_frozen()
        with self._project.edit("delete clip"):
            del self._project._map("clips")[self.id]

    # fields -----------------------------------------------------------------------------
    start = property(lambda self: float(self._getf("start", 0.0)),
                     lambda self, v: self.set("move clip", start=v), doc="start (wn)")
    length = property(lambda self: float(self._getf("length", 0.0)),
                      lambda self, v: self.set("resize clip", length=v), doc="length (wn)")
    offset = property(lambda self: float(self._getf("offset", 0.0)),
                      lambda self, v: self.set("set clip offset", offset=v),
                      doc="where in the source the clip starts (s)")
    gain = property(lambda self: float(self._getf("gain", 1.0)),
                    lambda self, v: self.set("set clip gain", gain=v), doc="linear gain")
    fade_in = property(lambda self: float(self._getf("fade_in", 0.0)),
                       lambda self, v: self.set("set fade in", fade_in=v), doc="seconds")
    fade_out = property(lambda self: float(self._getf("fade_out", 0.0)),
                        lambda self, v: self.set("set fade out", fade_out=v), doc="seconds")
    reversed = property(lambda self: bool(self._getf("reversed", False)),
                        lambda self, v: self.set("reverse clip", reversed=v))
    loop = property(lambda self: bool(self._getf("loop", False)),
                    lambda self, v: self.set("loop clip", loop=v))
    source = property(lambda self: self._getf("source", None),
                      lambda self, v: self.set("set clip source", source=v),
                      doc='"sha256:<hex>"')

    @property
    def source_bpm(self) -> float | None:
        v = self._getf("source_bpm", None)
        return None if v is None else float(v)

    @source_bpm.setter
    def source_bpm(self, value: float | None) -> None:
        self.set("set clip tempo", source_bpm=value)

    # MIDI --------------------------------------------------------------------------------
    def _events(self, name: str) -> Map[Any]:
        m = self._m()
        if self.kind != "midi":
            raise ProjectError(f"clip {self.id}", f"an audio clip has no {name}")
        ev = m[name]
        assert isinstance(ev, Map)
        return ev

    def notes(self) -> list[dict[str, Any]]:
        """The notes, by position: ``[{"id", "at", "length", "pitch", "velocity"}]``."""
        return _sorted_events(_load(self._events("notes")), with_id=True)

    def add_note(self, at: float, length: float, pitch: int, velocity: int = 100) -> str:
        n = checks.note(f"clip {self.id} note", {"at": at, "length": length, "pitch": pitch,
                                                 "velocity": velocity})
        nid = new_id("n")
        ev = self._events("notes")
        with self._project.edit("add note"):
            ev[nid] = n
        return nid

    def move_note(self, note_id: str, **fields: Any) -> None:
        ev = self._events("notes")
        if note_id not in ev:
            raise ProjectError(f"clip {self.id} note {note_id}", "does not exist")
        n = checks.note(f"clip {self.id} note {note_id}", {**ev[note_id], **fields})
        with self._project.edit("edit note"):
            ev[note_id] = n

    def remove_note(self, note_id: str) -> None:
        ev = self._events("notes")
        if note_id not in ev:
            raise ProjectError(f"clip {self.id} note {note_id}", "does not exist")
        with self._project.edit("remove note"):
            del ev[note_id]

    def cc(self) -> list[dict[str, Any]]:
        """Controller events by position: ``[{"id", "at", "controller", "value"}]``."""
        return _sorted_events(_load(self._events("cc")), with_id=True)

    def add_cc(self, at: float, controller: int, value: int) -> str:
        c = checks.cc(f"clip {self.id} cc", {"at": at, "controller": controller,
                                             "value": value})
        cid = new_id("cc")
        ev = self._events("cc")
        with self._project.edit("add cc"):
            ev[cid] = c
        return cid

    def remove_cc(self, cc_id: str) -> None:
        ev = self._events("cc")
        if cc_id not in ev:
            raise ProjectError(f"clip {self.id} cc {cc_id}", "does not exist")
        with self._project.edit("remove cc"):
            del ev[cc_id]


def _sorted_events(events: Mapping[str, Any], with_id: bool = False) -> list[dict[str, Any]]:
    items = sorted(events.items(), key=lambda kv: (kv[1].get("at", 0.0), kv[0]))
    if with_id:
        return [{"id": k, **v} for k, v in items]
    return [dict(v) for _, v in items]
