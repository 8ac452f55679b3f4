"""A project on disk: ``NAME.ouro/``, crash-safe.

Layout::

    NAME.ouro/
        doc.snapshot   the whole document as one update (``Doc.get_update()``), replaced
                       atomically by compaction
        doc.log        the updates since that snapshot, one record per committed change,
                       appended and fsynced after every edit
        project.json   an export in the interchange form (written atomically on compaction
                       and on close, for tools; never read back by ``open``)
        audio/         the pool (``companion.engine.pool.Pool``)
        lock           held (flock) while a process has the project open

Records of ``doc.log`` (after an 8-byte header ``OUROLOG1``) and the snapshot (after
``OUROSNP1``) are ``<u32 length><u32 crc32><payload>``, little-endian. A log record's
payload is one update as pycrdt emitted it; the snapshot's is the whole document's update,
zlib-compressed (updates are repetitive: 10,000 edits shrink about fourfold). Opening replays the
snapshot and then each record; a torn or corrupt record ends the replay there: the records
before it are kept, the tail is cut off (so new records follow sound ones) and reported in
:attr:`ProjectDir.problems`. Replaying the project's own updates brings back the same
document (same items, same IDs), so peers that knew it before still merge cleanly: nothing is
rebuilt from a file.

A kill -9 loses at most the edit in flight: every change's update is appended and fsynced
when the change is committed (``Project.on_commit``). When the log passes
``compact_bytes``, the document is written as a new snapshot (temporary file, fsync, rename,
directory fsync) and the log is emptied; a crash between the two only replays some updates
twice, which a CRDT ignores.

We keep our own log rather than pycrdt-store (not installed; an async SQLite store, where
the companion's model is synchronous and this needs one file format we can check with a
checksum and repair by truncation).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "song.ouro"
>>> with ProjectDir.create(d, "alice", bpm=90.0) as pd:
...     _ = pd.project.add_track("audio", "Drums")
>>> with ProjectDir.open(d, "alice") as pd:
...     [t.name for t in pd.project.tracks()], pd.project.tempo[0]["bpm"]
(['Drums'], 90.0)
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pycrdt import Doc

from companion.errors import ProjectError
from companion.model.document import Project
from rtcore.session import fsync_dir, write_bytes_atomic

LOG_MAGIC = b"OUROLOG1"
SNAP_MAGIC = b"OUROSNP1"
_REC = struct.Struct("<II")
LOG = "doc.log"
SNAPSHOT = "doc.snapshot"
EXPORT = "project.json"
LOCK = "lock"


def record(payload: bytes) -> bytes:
    """One length-prefixed, checksummed record."""
    return _REC.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes, start: int) -> tuple[list[bytes], int, str | None]:
    """The sound records of ``data`` from ``start``: (payloads, where the sound part ends,
    what was wrong after it, or None)."""
    out: list[bytes] = []
    pos = start
    while pos < len(data):
        if pos + _REC.size > len(data):
            return out, pos, f"a torn record header at byte {pos}"
        n, crc = _REC.unpack_from(data, pos)
        body = data[pos + _REC.size:pos + _REC.size + n]
        if len(body) < n:
            return out, pos, f"a torn record at byte {pos} ({len(body)} of {n} bytes)"
        if zlib.crc32(body) != crc:
            return out, pos, f"a corrupt record at byte {pos} (checksum mismatch)"
        out.append(bytes(body))
        pos += _REC.size + n
    return out, pos, None


def snapshot_bytes(project: Project) -> bytes:
    """The snapshot file's content for ``project``.

    The update is re-encoded through a fresh document: a live document keeps the content
    of deleted items its undo history might restore, a fresh one holds only what the
    update says is alive (same items, same IDs, so nothing is rebuilt)."""
    fresh: Doc[Any] = Doc()
    fresh.apply_update(project.get_update())
    return SNAP_MAGIC + record(zlib.compress(fresh.get_update(), 6))


def export_json(project: Project, path: Path) -> None:
    """Write ``project``'s interchange form to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(project.to_interchange(), indent=1) + "\n").encode())


def load_doc(path: Path) -> tuple[Doc[Any], list[str], int | None]:
    """Replay a project directory's snapshot and log into a new document, writing nothing:
    (the document, problems found, where to cut the log, or None if it is sound)."""
    path = Path(path)
    snap_path = path / SNAPSHOT
    if not snap_path.is_file():
        raise ProjectError(str(path), "is not a project directory (no doc.snapshot)")
    problems: list[str] = []
    snap = snap_path.read_bytes()
    if not snap.startswith(SNAP_MAGIC):
        raise ProjectError(str(snap_path), "is not a project snapshot")
    recs, _, bad = read_records(snap, len(SNAP_MAGIC))
    if bad or len(recs) != 1:
        # written atomically, so this is damage from outside: refuse rather than guess
        raise ProjectError(str(snap_path), bad or "must hold exactly one record")
    doc: Doc[Any] = Doc()
    try:
        doc.apply_update(zlib.decompress(recs[0]))
    except Exception as e:
        raise ProjectError(str(snap_path), f"cannot be read: {e}") from e
    log_path = path / LOG
    data = log_path.read_bytes() if log_path.exists() else LOG_MAGIC
    if not data.startswith(LOG_MAGIC):
        problems.append(f"{log_path}: no log header; its {len(data)} bytes were ignored "
                        f"(kept as {LOG}.damaged)")
        return doc, problems, 0
    recs, end, bad = read_records(data, len(LOG_MAGIC))
    for r in recs:
        try:
            doc.apply_update(r)
        except Exception as e:  # a record that passed its checksum but is no update
            raise ProjectError(str(log_path), f"a record cannot be applied: {e}") from e
    if bad:
        problems.append(f"{log_path}: {bad}; the {len(recs)} records before it were "
                        f"replayed, the last {len(data) - end} bytes dropped")
        return doc, problems, end
    return doc, problems, None


def read_project(path: Path, user: str = "reader") -> tuple[Project, list[str]]:
    """A project directory's document, read only (no lock, nothing written): for ``info``
    and ``export`` while the project may be open elsewhere."""
    doc, problems, _ = load_doc(path)
    return Project(user, doc), problems


def open_replica(path: Path, user: str = "replica") -> Project:
    """A replica of the project in directory ``path`` (for the player): the document as
    on disk, neither locked nor written; feed it the editor's updates with
    ``Project.apply_update``."""
    return read_project(path, user)[0]


class ProjectDir:
    """An open project directory: its :class:`Project`, kept durable as it is edited."""

    compact_bytes = 64 * 1024  # the log is folded into the snapshot past this size

    def __init__(self, path: Path, project: Project, problems: list[str], lock: IO[bytes],
                 fsync: bool = True):
        self.path = path
        self.project = project
        self.problems = problems
        self.fsync = fsync
        self._lock = lock
        self._pending: list[bytes] = []
        self._log = open(path / LOG, "ab", buffering=0)  # held open while the project is
        self._stops = [project.observe_updates(self._pending.append),
                       project.on_commit(self.flush)]
        self._closed = False

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, user: str, *, sample_rate: int = 48000, bpm: float = 120.0,
               build: Callable[[Path], Project] | None = None, fsync: bool = True
               ) -> ProjectDir:
        """Make a new project directory at ``path`` (which must not exist) and open it.
        ``build(directory)`` may supply the document (an import: it can fill the pool in
        ``directory``); by default it is a new, empty project. Everything is written in a
        temporary directory that is renamed into place at the end, so a failure leaves
        nothing behind."""
        path = Path(path)
        if path.exists():
            raise ProjectError(str(path), "already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            (tmp / "audio").mkdir()
            project = build(tmp) if build else Project.create(user, sample_rate, bpm)
            write_bytes_atomic(tmp / SNAPSHOT, snapshot_bytes(project))
            write_bytes_atomic(tmp / LOG, LOG_MAGIC)
            export_json(project, tmp / EXPORT)
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(path.parent)
        return cls.open(path, user, fsync=fsync)

    @classmethod
    def open(cls, path: Path, user: str, *, fsync: bool = True) -> ProjectDir:
        """Open a project directory: replay its snapshot and log (see the module's
        docstring); a torn tail is cut off and named in :attr:`problems`."""
        path = Path(path)
        snap_path = path / SNAPSHOT
        if not snap_path.is_file():
            raise ProjectError(str(path), "is not a project directory (no doc.snapshot)")
        lock = open(path / LOCK, "ab")  # held (locked) until close
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            lock.close()
            raise ProjectError(str(path), "is open in another process") from e
        try:
            return cls._replay(path, user, lock, fsync)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def _replay(cls, path: Path, user: str, lock: IO[bytes], fsync: bool) -> ProjectDir:
        doc, problems, cut = load_doc(path)
        log_path = path / LOG
        if cut is not None and cut < len(LOG_MAGIC):
            os.replace(log_path, path / f"{LOG}.damaged")  # kept for a human to look at
            write_bytes_atomic(log_path, LOG_MAGIC)
        elif cut is not None:
            # later records must follow sound ones, or the next open would stop at the tear
            # again and drop them
            with open(log_path, "r+b") as f:
                f.truncate(cut)
                f.flush()
                os.fsync(f.fileno())
        project = Project(user, doc)
        pd = cls(path, project, problems, lock, fsync)
        # a crash may have come between a merge and its repair
        project.repair()
        return pd

    # --- writing ------------------------------------------------------------------------
    def flush(self) -> None:
        """Append the updates committed since the last flush, fsync, and compact when the
        log has grown past :attr:`compact_bytes`."""
        if self._closed or not self._pending:
            return
        n = len(self._pending)
        batch = b"".join(record(u) for u in self._pending[:n])
        pos = self._log.tell()
        try:
            view = memoryview(batch)
            while view:  # unbuffered: a short write is retried, a failure seen at once
                view = view[self._log.write(view) or 0:]
            if self.fsync:
                os.fsync(self._log.fileno())
        except OSError:
            # a full disk: cut what was half-written, so later records never follow a torn
            # one; the updates stay pending and go out with the next flush
            try:
                self._log.truncate(pos)
            except OSError:
                pass
            raise
        del self._pending[:n]
        if self._log.tell() > self.compact_bytes:
            self.compact()

    def compact(self) -> None:
        """Write the whole document as the new snapshot and empty the log."""
        self._pending.clear()  # the snapshot holds them
        write_bytes_atomic(self.path / SNAPSHOT, snapshot_bytes(self.project))
        self._log.close()
        write_bytes_atomic(self.path / LOG, LOG_MAGIC)
        self._log = open(self.path / LOG, "ab", buffering=0)
        export_json(self.project, self.path / EXPORT)

    def export(self, out: Path) -> None:
        """Write the interchange ``project.json`` to ``out`` atomically."""
        export_json(self.project, Path(out))

    def size_bytes(self) -> int:
        """What the document takes on disk (snapshot and log)."""
        return sum((self.path / n).stat().st_size for n in (SNAPSHOT, LOG))

    def pool(self) -> Any:
        """The project's audio pool (``companion.engine.pool.Pool``)."""
        from companion.engine.pool import Pool
        return Pool(self.path, self.project.sample_rate)

    def close(self, compact: bool = True) -> None:
        """Flush, compact (by default), write ``project.json`` and release the lock."""
        if self._closed:
            return
        self.flush()
        if compact:
            self.compact()
        for stop in self._stops:
            stop()
        self._closed = True
        self._log.close()
        self._lock.close()

    def __enter__(self) -> ProjectDir:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
