"""A pedal session (``session.json`` + ``loops/*.wav``, docs/sessions.md) as a new project.

What the session becomes:

- the project's sample rate, tempo (one point at 0) and meter (``beats_per_bar`` over 4:
  the pedal's beat is a quarter note) are the session's;
- each column that holds at least one loop becomes a metatrack, ``Column N`` (1-based), in
  column order; in it, each cell with a loop becomes an audio track ``Column N Row R`` in row
  order, with the cell's volume;
- the track holds its loop as one looping clip from position 0 (a loop file starts at the
  column's beat 1, so it lands on bar 1). The clip lasts the loop's length rounded up to
  whole bars, and at least 4 bars, so a short loop is heard a few times and a loop that is
  not a whole number of bars still plays through at least once;
- the loop files are imported into the project's pool (``companion.engine.pool.Pool``,
  content-addressed, so a loop used twice is stored once).

Cells without a loop (empty or cleared) are skipped; their undo history stays on the pedal.
A manifest that cannot be used (not JSON, an unknown schema, a bad tempo, a missing loop
file, a path outside the session) raises :class:`ProjectError` naming the field, and the
project directory is not created.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from companion.errors import ProjectError, SourceError
from companion.model import checks
from companion.model.document import Project
from companion.model.persist import ProjectDir
from companion.model.schema import SAMPLE_RATES

MANIFEST = "session.json"
MIN_BARS = 4


def read_manifest(session_dir: Path) -> dict[str, Any]:
    """The session's manifest, checked for what an import needs."""
    path = Path(session_dir) / MANIFEST
    if not path.is_file():
        raise ProjectError(str(path), "is missing: not a pedal session directory")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ProjectError(str(path), f"is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ProjectError(str(path), "must hold an object")
    version = doc.get("schema_version", 1)
    if version not in (1, 2):
        raise ProjectError(f"{MANIFEST} schema_version", f"this program reads 1 and 2, got "
                           f"{version!r}")
    checks.number(f"{MANIFEST} tempo", doc.get("tempo"), lo=1, hi=1000)
    checks.integer(f"{MANIFEST} beats_per_bar", doc.get("beats_per_bar", 4), 1, 64)
    rate = checks.integer(f"{MANIFEST} sample_rate", doc.get("sample_rate"), 1, 10**6)
    if rate not in SAMPLE_RATES:
        raise ProjectError(f"{MANIFEST} sample_rate", f"must be one of {SAMPLE_RATES}, got "
                           f"{rate}")
    cells = doc.get("cells", [])
    if not isinstance(cells, list):
        raise ProjectError(f"{MANIFEST} cells", "must be a list")
    return doc


def _loops(session_dir: Path, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells holding a loop, checked, by (column, row)."""
    root = Path(session_dir).resolve()
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    for i, cell in enumerate(doc.get("cells", [])):
        where = f"{MANIFEST} cells[{i}]"
        if not isinstance(cell, dict):
            raise ProjectError(where, "must be an object")
        col = checks.integer(f"{where}.column", cell.get("column"), 0, 1000)
        row = checks.integer(f"{where}.row", cell.get("row"), 0, 1000)
        if (col, row) in seen:
            raise ProjectError(where, f"column {col} row {row} is listed twice")
        seen.add((col, row))
        rel = cell.get("file")
        if rel is None:
            continue  # empty or cleared: nothing to arrange
        if not isinstance(rel, str) or not rel:
            raise ProjectError(f"{where}.file", f"must be a relative path, got {rel!r}")
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise ProjectError(f"{where}.file", f"{rel!r} is outside the session")
        if not path.is_file():
            raise ProjectError(f"{where}.file", f"{rel!r} does not exist")
        beats = checks.integer(f"{where}.beats", cell.get("beats", 0), 0, 100000)
        volume = checks.number(f"{where}.volume", cell.get("volume", 1.0), lo=0, hi=100)
        out.append({"column": col, "row": row, "path": path, "beats": beats,
                    "volume": volume, "where": where})
    out.sort(key=lambda c: (c["column"], c["row"]))
    return out


def clip_bars(beats: int, beats_per_bar: int) -> int:
    """How many bars a loop's clip lasts: its length rounded up to whole bars, at least
    :data:`MIN_BARS`.

    >>> clip_bars(5, 4), clip_bars(20, 4), clip_bars(0, 3)
    (4, 5, 4)
    """
    return max(MIN_BARS, math.ceil(beats / beats_per_bar))


def build_from_session(session_dir: Path, directory: Path, user: str) -> Project:
    """A new project from the session in ``session_dir``, its loops imported into the pool
    in ``directory`` (a project directory being made)."""
    from companion.engine.pool import Pool  # lazily: the model loads without the engine

    doc = read_manifest(session_dir)
    loops = _loops(session_dir, doc)
    rate = int(doc["sample_rate"])
    bpb = int(doc.get("beats_per_bar", 4))
    p = Project.create(user, sample_rate=rate, bpm=float(doc["tempo"]), meter=(bpb, 4))
    with Pool(directory, rate) as pool:
        refs = {}
        for cell in loops:
            try:
                refs[cell["path"]] = pool.import_file(cell["path"])
            except (SourceError, OSError) as e:
                raise ProjectError(f"{cell['where']}.file", str(e)) from e
    with p.edit("import session"):
        columns: dict[int, str] = {}
        for cell in loops:
            col, row = cell["column"], cell["row"]
            if col not in columns:
                columns[col] = p.add_track("meta", f"Column {col + 1}").id
            t = p.add_track("audio", f"Column {col + 1} Row {row + 1}", parent=columns[col])
            t.volume = cell["volume"]
            bars = clip_bars(cell["beats"], bpb)
            t.add_clip(refs[cell["path"]], 0.0, bars * bpb * 0.25, loop=True)
    return p


def import_session(session_dir: Path, dest: Path, user: str) -> ProjectDir:
    """Make the project directory ``dest`` from a pedal session and open it."""
    session_dir = Path(session_dir)
    read_manifest(session_dir)  # refuse early, before anything is made
    return ProjectDir.create(Path(dest), user,
                             build=lambda d: build_from_session(session_dir, d, user))
