"""Sessions on disk: the working session the engine keeps saved, and named sessions.

Layout, under the engine's data directory::

    session/                 the working session: saved as the engine goes
        session.json         the manifest (written last, atomically)
        loops/t<serial>.wav  one consolidated loop per take (index 0 is column beat 1)
    sessions/<name>/         named sessions: the same layout

The manifest (schema 2)::

    {"schema_version": 2, "saved_at": "...", "tempo": 120.0, "sample_rate": 48000,
     "beats_per_bar": 4, "channels": 2, "columns": 5, "rows": 5,
     "takes": {"<serial>": {"file": "loops/t7.wav", "beats": 4, "length_frames": 96000,
                            "recorded_sync_offset_frames": 0}},
     "cells": [{"column": 0, "row": 0, "volume": 1.0, "state": "playing",
                "history": ["3", "cleared", "7"], "history_pos": 2}]}

``history`` is the cell's undo history, oldest first (``"cleared"`` marks a clear) and
``history_pos`` its current entry, so undo survives a restart; the engine's ``undo_depth``
bounds it, and loop files no manifest entry names are deleted after each manifest write.
Schema 1 (one ``file`` per cell, no history) still loads.

Every write is crash-safe: a loop file goes to a temporary name, is fsynced and renamed
(and its directory fsynced) before any manifest names it, and the manifest is replaced the
same way, so a crash leaves the old manifest or the new one, each naming complete files.
Loading never raises for what is in the files: whatever cannot be used (a missing or
corrupt loop, a wrong sample rate, a manifest from a newer schema) is skipped and named in
``Loaded.problems``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import soundfile as sf

from rtcore.engine import CLEARED, STATE_NAMES, Engine
from rtcore.loops import Audio, Take, consolidate
from rtcore.session import fsync_dir, write_bytes_atomic, write_json_atomic

SCHEMA_VERSION = 2
MANIFEST = "session.json"
LOOP_FORMATS = {"wav": ("WAV", "FLOAT", ".wav"), "flac": ("FLAC", "PCM_24", ".flac")}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def check_name(name: object) -> str:
    """A session name: letters, digits, space, ``_ . -``, at most 64, not starting with a
    dot (it becomes a directory name)."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name.strip() != name:
        raise ValueError(f"session name {name!r}: use 1-64 letters, digits, spaces, "
                         f"'_', '.' or '-', starting with a letter or digit")
    return name


def save_loop(directory: Path, serial: int, data: Audio, sample_rate: int,
              fmt: str = "wav") -> str:
    """Write one consolidated loop (crash-safe); returns its path relative to
    ``directory``. WAV keeps the float32 samples bit-exact; FLAC stores 24-bit integers.

    The file is encoded in memory and then written with plain OS calls: a full disk then
    fails with the OS's error (ENOSPC, named), where libsndfile would only say "System
    error.", and leaves no partial file behind."""
    container, subtype, ext = LOOP_FORMATS[fmt]
    rel = f"loops/t{serial}{ext}"
    final = directory / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    sf.write(encoded, data, sample_rate, subtype=subtype, format=container)
    write_bytes_atomic(final, encoded.getbuffer())
    return rel


def manifest_of(engine: Engine, files: dict[int, str]) -> dict[str, Any]:
    """The manifest for the engine's matrix as it is now, naming only takes whose loop file
    is written (``files``: take serial -> relative path). Not real-time: it only reads the
    engine's cells, so it may run while the audio thread runs (a cell caught mid-change is
    written again with the next manifest)."""
    takes: dict[str, Any] = {}
    cells: list[dict[str, Any]] = []
    for col in engine.columns:
        for cell in engine.cells[col.index]:
            hist_len, hist_pos = cell.hist_len, cell.hist_pos
            entries = cell.hist[:hist_len]
            history: list[str] = []
            pos = -1
            for i, entry in enumerate(entries):
                if entry is CLEARED:
                    history.append("cleared")
                elif isinstance(entry, Take) and entry.serial in files:
                    key = str(entry.serial)
                    takes[key] = {"file": files[entry.serial], "beats": entry.beats,
                                  "length_frames": entry.length,
                                  "recorded_sync_offset_frames": entry.sync_offset}
                    history.append(key)
                else:
                    continue  # not saved yet (or gone): the next manifest has it
                if i <= hist_pos:
                    pos = len(history) - 1
            if not history and cell.volume == 1.0:
                continue
            current = takes.get(history[pos]) if pos >= 0 else None
            cells.append({"column": col.index, "row": cell.row,
                          "file": current["file"] if current else None,
                          "beats": current["beats"] if current else 0,
                          "length_frames": current["length_frames"] if current else 0,
                          "recorded_sync_offset_frames":
                              current["recorded_sync_offset_frames"] if current else 0,
                          "volume": cell.volume, "state": STATE_NAMES[cell.state],
                          "history": history, "history_pos": pos})
    return {
        "schema_version": SCHEMA_VERSION,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tempo": engine.tempo_bpm,
        "sample_rate": engine.sample_rate,
        "beats_per_bar": engine.beats_per_bar,
        "channels": engine.channels,
        "columns": engine.ncols,
        "rows": engine.nrows,
        "takes": takes,
        "cells": cells,
    }


def save_session(engine: Engine, directory: Path, files: dict[int, str] | None = None,
                 fmt: str = "wav") -> Path:
    """Write every loop of the matrix (current and in the undo history) that is not in
    ``files`` yet, then the manifest; returns the manifest's path. Not real-time: a take
    not consolidated yet is consolidated here."""
    files = {} if files is None else files
    for col in engine.columns:
        for cell in engine.cells[col.index]:
            for entry in cell.hist[:cell.hist_len]:
                if not isinstance(entry, Take) or (
                        entry.serial in files and (directory / files[entry.serial]).exists()):
                    continue
                data = entry.data if entry.data is not None else consolidate(entry)
                files[entry.serial] = save_loop(directory, entry.serial, data,
                                                engine.sample_rate, fmt)
    return write_manifest(directory, manifest_of(engine, files))


def write_manifest(directory: Path, doc: dict[str, Any],
                   keep: Iterable[str] = ()) -> Path:
    """Replace the manifest, then delete loop files it does not name (other than ``keep``:
    loops saved but not in a cell's history yet)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST
    write_json_atomic(path, doc)
    named = {t["file"] for t in doc.get("takes", {}).values()} | set(keep)
    loops = directory / "loops"
    if loops.is_dir():
        for f in loops.iterdir():
            rel = f"loops/{f.name}"
            if rel not in named and (f.suffix in (".wav", ".flac") or f.name.endswith(".tmp")):
                f.unlink(missing_ok=True)
    return path


@dataclass
class Loaded:
    """What could be read of a session: engine-ready cells and what went wrong."""

    tempo: float | None = None
    beats_per_bar: int | None = None
    cells: list[dict[str, Any]] = field(default_factory=list)
    files: dict[int, str] = field(default_factory=dict)  # serial -> relative path
    problems: list[str] = field(default_factory=list)
    loops: int = 0
    frames: int = 0

    def summary(self) -> dict[str, Any]:
        return {"loops": self.loops, "cells": len(self.cells), "problems": self.problems}


def load_session(directory: Path, engine: Engine) -> Loaded:
    """Read the session in ``directory`` for ``engine`` (its rate, channels and matrix):
    takes are built here, ready for :meth:`Engine.install_session`. Never raises for the
    files' content; see ``Loaded.problems``."""
    out = Loaded()
    path = directory / MANIFEST
    if not path.exists():
        if directory.exists() and any((directory / "loops").glob("t*")):
            out.problems.append(f"{path}: missing; its loop files cannot be placed")
        return out
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        out.problems.append(f"{path}: cannot read: {exc}")
        return out
    except json.JSONDecodeError as exc:
        out.problems.append(f"{path}: not valid JSON ({exc}); nothing loaded")
        return out
    if not isinstance(doc, dict):
        out.problems.append(f"{path}: not a JSON object; nothing loaded")
        return out
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        out.problems.append(f"{path}: schema_version {version!r} is not a version number; "
                            f"reading it as version {SCHEMA_VERSION}")
        version = SCHEMA_VERSION
    elif version > SCHEMA_VERSION:
        out.problems.append(f"{path}: schema version {version} is newer than this engine's "
                            f"({SCHEMA_VERSION}); loading what it can read")
    rate = doc.get("sample_rate")
    if rate != engine.sample_rate:
        out.problems.append(f"{path}: recorded at {rate!r} Hz, the engine runs at "
                            f"{engine.sample_rate} Hz; no loop loaded")
        return out
    tempo = doc.get("tempo")
    if isinstance(tempo, int | float) and not isinstance(tempo, bool):
        out.tempo = float(tempo)
    else:
        out.problems.append(f"{path}: tempo {tempo!r} is not a number; keeping the current")
    bpb = doc.get("beats_per_bar", 4)
    if isinstance(bpb, int) and not isinstance(bpb, bool) and 1 <= bpb <= 32:
        out.beats_per_bar = bpb
    else:
        out.problems.append(f"{path}: beats_per_bar {bpb!r} is not 1..32; keeping the current")
    cells = doc.get("cells")
    if not isinstance(cells, list):
        out.problems.append(f"{path}: 'cells' is not a list; no loop loaded")
        return out
    takes_doc = doc.get("takes", {})
    if not isinstance(takes_doc, dict):
        out.problems.append(f"{path}: 'takes' is not an object; only cells' own files load")
        takes_doc = {}
    takes_doc, cells = _with_history(takes_doc, cells)
    takes: dict[str, Take] = {}
    column_length: dict[int, int] = {}
    used: set[tuple[int, int]] = set()
    for n, entry in enumerate(cells):
        where = f"{path}: cells[{n}]"
        if not isinstance(entry, dict):
            out.problems.append(f"{where}: not an object; skipped")
            continue
        c, r = entry.get("column"), entry.get("row")
        if not (_int(c) and _int(r) and 0 <= c < engine.ncols and 0 <= r < engine.nrows):
            out.problems.append(f"{where}: no cell ({c!r}, {r!r}) in a {engine.ncols}x"
                                f"{engine.nrows} matrix; skipped")
            continue
        where = f"{path}: cell ({c}, {r})"
        if (c, r) in used:
            out.problems.append(f"{where}: listed twice; the second is skipped")
            continue
        used.add((c, r))
        volume = entry.get("volume", 1.0)
        if not isinstance(volume, int | float) or isinstance(volume, bool) \
                or not 0.0 <= volume <= 4.0:
            out.problems.append(f"{where}: volume {volume!r} is not 0..4; using 1.0")
            volume = 1.0
        history_doc = entry.get("history", [])
        if not isinstance(history_doc, list):
            out.problems.append(f"{where}: history is not a list; the cell is left empty")
            continue
        pos = entry.get("history_pos", len(history_doc) - 1)
        if not _int(pos) or not -1 <= pos < len(history_doc):
            out.problems.append(f"{where}: history_pos {pos!r} is out of range; using the "
                                f"newest entry")
            pos = len(history_doc) - 1
        history: list[object] = []
        new_pos = -1
        for i, key in enumerate(history_doc):
            item: object | None
            if key == "cleared":
                item = CLEARED
            else:
                item = takes.get(str(key))
                if item is None:
                    item = _load_take(directory, str(key), takes_doc.get(str(key)), engine,
                                      where, out)
                    if item is not None:
                        takes[str(key)] = item
            if item is None:
                continue
            if isinstance(item, Take) and i == pos:
                length = column_length.setdefault(c, item.length)
                if item.length != length:
                    out.problems.append(f"{where}: its loop is {item.length} frames, the "
                                        f"column's others {length}; skipped")
                    continue
            history.append(item)
            if i <= pos:
                new_pos = len(history) - 1
        if not history and volume == 1.0:
            continue
        out.cells.append({"column": c, "row": r, "volume": float(volume),
                          "history": history, "pos": new_pos,
                          "state": entry.get("state", "idle")})
    out.loops = len(takes)
    out.frames = sum(t.length for t in takes.values())
    out.files = {t.serial: takes_doc[k]["file"] for k, t in takes.items()}
    return out


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _with_history(takes: dict[str, Any], cells: list[Any]) -> tuple[dict[str, Any],
                                                                     list[Any]]:
    """A cell entry without ``history`` (schema 1, or written by hand) is its own ``file``
    as a history of one."""
    takes = dict(takes)
    out: list[Any] = []
    for i, entry in enumerate(cells):
        if isinstance(entry, dict) and "history" not in entry and entry.get("file"):
            key = f"cell-{i}"
            takes[key] = {"file": entry.get("file"), "beats": entry.get("beats"),
                          "length_frames": entry.get("length_frames"),
                          "recorded_sync_offset_frames":
                              entry.get("recorded_sync_offset_frames", 0)}
            entry = {**entry, "history": [key], "history_pos": 0}
        out.append(entry)
    return takes, out


def _load_take(directory: Path, key: str, meta: Any, engine: Engine, where: str,
               out: Loaded) -> Take | None:
    if not isinstance(meta, dict):
        out.problems.append(f"{where}: take {key!r} is not described under 'takes'; skipped")
        return None
    rel, beats, length = meta.get("file"), meta.get("beats"), meta.get("length_frames")
    if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts:
        out.problems.append(f"{where}: take {key!r} names no file inside the session "
                            f"({rel!r}); skipped")
        return None
    longest = engine.max_chunks * engine.chunk_frames
    if not (_int(beats) and beats > 0 and _int(length) and 0 < length <= longest):
        out.problems.append(f"{where}: take {key!r}: beats {beats!r} / length_frames "
                            f"{length!r} are not usable; skipped")
        return None
    path = directory / rel
    if not path.is_file():
        out.problems.append(f"{where}: {rel}: missing; skipped")
        return None
    try:
        with sf.SoundFile(path) as f:
            if f.samplerate != engine.sample_rate or f.channels != engine.channels:
                out.problems.append(f"{where}: {rel}: {f.channels} channel(s) at "
                                    f"{f.samplerate} Hz, the engine has {engine.channels} at "
                                    f"{engine.sample_rate} Hz; skipped")
                return None
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        out.problems.append(f"{where}: {rel}: not a readable audio file ({exc}); skipped")
        return None
    if data.shape[0] != length:
        out.problems.append(f"{where}: {rel}: holds {data.shape[0]} frames, the manifest "
                            f"says {length} (cut short?); skipped")
        return None
    if not np.all(np.isfinite(data)):
        out.problems.append(f"{where}: {rel}: has samples that are not numbers; skipped")
        return None
    take = Take(engine.channels, engine.chunk_frames, engine.max_chunks, 0)
    serial = int(key) if key.isdigit() else 0
    take.reset(serial)
    take.length = length
    take.beats = beats
    offset = meta.get("recorded_sync_offset_frames", 0)
    take.sync_offset = offset if _int(offset) else 0
    take.captured = length
    take.data = np.ascontiguousarray(data)
    take.crc = zlib.crc32(take.data.data)
    return take


def session_info(directory: Path) -> dict[str, Any]:
    """A named session's summary for a listing (without reading its audio)."""
    info: dict[str, Any] = {"name": directory.name}
    try:
        doc = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        info["tempo"] = doc.get("tempo")
        info["loops"] = len(doc.get("takes", {})) if isinstance(doc.get("takes"), dict) \
            else sum(1 for c in doc.get("cells", []) if isinstance(c, dict) and "file" in c)
        info["saved_at"] = doc.get("saved_at")
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        info["problem"] = f"unreadable manifest: {exc}"
    return info


def copy_session(src: Path, dst: Path) -> None:
    """Copy a session directory crash-safely: its loop files and manifest into a temporary
    directory (each file fsynced), renamed into place; an existing ``dst`` is replaced only
    once the copy is whole."""
    tmp = dst.with_name(dst.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "loops").mkdir(parents=True)
    loops = src / "loops"
    for f in sorted(loops.iterdir()) if loops.is_dir() else []:
        if f.is_file() and not f.name.endswith(".tmp"):
            shutil.copyfile(f, tmp / "loops" / f.name)
            with open(tmp / "loops" / f.name, "rb") as fh:
                os.fsync(fh.fileno())
    shutil.copyfile(src / MANIFEST, tmp / MANIFEST)
    with open(tmp / MANIFEST, "rb") as fh:
        os.fsync(fh.fileno())
    fsync_dir(tmp / "loops")
    fsync_dir(tmp)
    old = dst.with_name(dst.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        dst.rename(old)
    tmp.rename(dst)
    fsync_dir(dst.parent)
    if old.exists():
        shutil.rmtree(old)


class SessionKeeper:
    """Keeps the engine's working session saved as it goes, and runs the named-session
    requests. Everything here runs on the engine's I/O thread (see rtcore.ioside), apart
    from :meth:`request`, which only queues work (or lists, which reads no audio).

    - A finished recording's loop file is written as soon as it is consolidated
      (:meth:`loop_done`).
    - The manifest is rewritten when the matrix changed (a state, a volume, the undo
      position, a new loop), at most every ``MANIFEST_INTERVAL_S``.
    - ``save_as``, ``load``, ``delete`` and ``new`` run in order; their outcome is in the
      status (``session.last``) and is sent to whoever asked.
    """

    MANIFEST_INTERVAL_S = 0.25
    RETRY_S = 2.0  # after a failed save (a full disk, say)

    def __init__(self, engine: Engine, data_dir: Path, fmt: str = "wav"):
        if fmt not in LOOP_FORMATS:
            raise ValueError(f"loop format must be one of {', '.join(LOOP_FORMATS)}, "
                             f"got {fmt!r}")
        self.engine = engine
        self.dir = data_dir / "session"
        self.named = data_dir / "sessions"
        self.fmt = fmt
        self.files: dict[int, str] = {}
        self.jobs: deque[tuple[str, str, Any]] = deque()
        self.signature: tuple[Any, ...] = ()
        self.dirty = False
        self.last_write = 0.0
        self.loops_saved = 0
        self.manifests = 0
        self.problem = ""  # the last save that failed, until one succeeds
        self.last: dict[str, Any] = {}
        self.restored: dict[str, Any] = {}
        self.installing = -1  # the engine's session_loads when an install was queued
        self.unsaved: dict[int, tuple[Take, Audio]] = {}  # loops whose save failed

    # ------------------------------------------------------------------ start

    def restore(self) -> Loaded:
        """Load the working session into the engine before its audio starts."""
        loaded = load_session(self.dir, self.engine)
        self._install_now(loaded)
        self.files = dict(loaded.files)
        self.restored = loaded.summary()
        return loaded

    def _install_now(self, loaded: Loaded) -> None:
        eng = self.engine
        eng.install_session(loaded.cells, loaded.tempo or eng.tempo_bpm,
                            loaded.beats_per_bar or eng.beats_per_bar)

    # ------------------------------------------------------------------ I/O thread

    def loop_done(self, take: Take, data: Audio) -> bool:
        """A recording was consolidated: write its loop file now."""
        try:
            self.files[take.serial] = save_loop(self.dir, take.serial, data,
                                                self.engine.sample_rate, self.fmt)
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            self.problem = f"loop t{take.serial} not saved: {exc}"
            self.unsaved[take.serial] = (take, data)
            return False
        self.unsaved.pop(take.serial, None)
        self.loops_saved += 1
        self.dirty = True
        return True

    def forget(self, take: Take) -> None:
        """The engine let go of a take (out of the undo history): its file may go."""
        if self.files.pop(take.serial, None) is not None:
            self.dirty = True
        self.unsaved.pop(take.serial, None)

    def service(self, now: float) -> int:
        """Run queued requests, and rewrite the manifest if the matrix changed."""
        done = 0
        while self.jobs:
            op, name, reply = self.jobs.popleft()
            self._run_job(op, name, reply)
            done += 1
        if self.installing >= 0:
            if self.engine.session_loads <= self.installing:
                return done  # the engine has not swapped the matrix yet: nothing to save
            self.installing = -1
            self.dirty = True
        sig = self._signature()
        if sig != self.signature:
            self.signature = sig
            self.dirty = True
        wait = self.RETRY_S if self.problem else self.MANIFEST_INTERVAL_S
        if self.dirty and now - self.last_write >= wait:
            self.write()
            done += 0 if self.problem else 1
        return done

    def write(self) -> None:
        self.last_write = time.monotonic()
        self.dirty = False
        try:
            complete = self._save_missing()
            write_manifest(self.dir, manifest_of(self.engine, self.files),
                           self.files.values())
            self.manifests += 1
            if complete:
                self.problem = ""
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            self.problem = f"session not saved: {exc}"
            self.dirty = True

    def _save_missing(self) -> bool:
        """Write the loops whose save failed; False if one still could not be written."""
        complete = True
        for take, data in list(self.unsaved.values()):
            complete = self.loop_done(take, data) and complete
        if not complete:
            self.dirty = True  # try again with the next manifest
        return complete

    def _signature(self) -> tuple[Any, ...]:
        eng = self.engine
        parts: list[Any] = [eng.tempo_bpm, eng.beats_per_bar]
        for col in eng.columns:
            for cell in eng.cells[col.index]:
                parts.append((cell.state, cell.volume, cell.hist_pos, cell.hist_len,
                               id(cell.take)))
        return tuple(parts)

    # ------------------------------------------------------------------ requests

    def request(self, op: str, args: list[Any], reply: Any) -> dict[str, Any]:
        """``/ouro/session/<op>``: ``list`` answers now; ``save``, ``save_as <name>``,
        ``load <name>``, ``delete <name>`` and ``new`` are queued for the I/O thread and
        answered when done. Raises ValueError for a malformed request."""
        takes_name = op in ("save_as", "load", "delete")
        if op not in ("list", "save", "new") and not takes_name:
            raise ValueError(f"session/{op}: unknown (save, save_as, load, list, delete, "
                             f"new)")
        if takes_name:
            if len(args) != 1:
                raise ValueError(f"session/{op}: takes one name, got {len(args)} arguments")
            name = check_name(args[0])
        else:
            if args:
                raise ValueError(f"session/{op}: takes no arguments, got {len(args)}")
            name = ""
        if op == "list":
            return {"op": "list", "ok": True, "sessions": self.list()}
        if op in ("load", "delete") and not (self.named / name / MANIFEST).exists():
            raise ValueError(f"session/{op}: no session named {name!r}")
        self.jobs.append((op, name, reply))
        return {"op": op, "name": name, "ok": True, "queued": True}

    def list(self) -> list[dict[str, Any]]:
        if not self.named.is_dir():
            return []
        return [session_info(d) for d in sorted(self.named.iterdir())
                if d.is_dir() and not d.name.endswith((".partial", ".old"))]

    def _run_job(self, op: str, name: str, reply: Any) -> None:
        result: dict[str, Any] = {"op": op, "name": name, "ok": True}
        try:
            if op == "save":
                self.write()
                if self.problem:
                    raise OSError(self.problem)
            elif op == "save_as":
                self.write()
                if self.problem:
                    raise OSError(self.problem)
                self.named.mkdir(parents=True, exist_ok=True)
                copy_session(self.dir, self.named / name)
            elif op == "delete":
                shutil.rmtree(self.named / name)
            elif op == "load":
                loaded = load_session(self.named / name, self.engine)
                copy_session(self.named / name, self.dir)
                self.files = dict(loaded.files)
                self._queue_install(loaded)
                result.update(loaded.summary())
            elif op == "new":
                self._queue_install(Loaded())
                self.files = {}
                self.dirty = True
        except (OSError, ValueError, KeyError) as exc:
            result.update(ok=False, error=f"session/{op} {name}: {exc}".replace(" :", ":"))
        self.last = result
        if reply is not None:
            reply(result)

    def _queue_install(self, loaded: Loaded) -> None:
        eng = self.engine
        self.installing = eng.session_loads
        eng.from_io.append(("session", loaded.cells, loaded.tempo or eng.tempo_bpm,
                            loaded.beats_per_bar or eng.beats_per_bar))

    def status(self) -> dict[str, Any]:
        return {"directory": str(self.dir), "format": self.fmt, "loops_saved": self.loops_saved,
                "manifests_written": self.manifests, "problem": self.problem or None,
                "restored": self.restored, "last": self.last, "queued": len(self.jobs)}
