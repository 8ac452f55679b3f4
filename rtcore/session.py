"""Saving a session: one consolidated audio file per loop and a ``session.json`` manifest.

Writes are crash-safe: each file goes to a temporary name, is fsynced and renamed, and the
manifest is written last, so a manifest never names a file that is not complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import soundfile as sf

from rtcore.engine import STATE_NAMES, Engine
from rtcore.loops import consolidate

SCHEMA_VERSION = 1


def _fsync_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dirfd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def write_json_atomic(path: Path, doc: Any) -> None:
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    _fsync_rename(tmp, path)


def save_session(engine: Engine, directory: Path) -> Path:
    """Write every cell's current loop and the manifest; returns the manifest's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "loops").mkdir(exist_ok=True)
    cells: list[dict[str, Any]] = []
    for col in engine.columns:
        for cell in engine.cells[col.index]:
            take = cell.take
            if take is None:
                continue
            data = take.data if take.data is not None else consolidate(take)
            rel = f"loops/c{col.index}_r{cell.row}_t{take.serial}.wav"
            tmp = directory / (rel + ".tmp")
            sf.write(tmp, data, engine.sample_rate, subtype="FLOAT", format="WAV")
            _fsync_rename(tmp, directory / rel)
            cells.append({
                "column": col.index, "row": cell.row, "file": rel,
                "beats": take.beats, "length_frames": take.length,
                "recorded_sync_offset_frames": take.sync_offset,
                "volume": cell.volume, "state": STATE_NAMES[cell.state],
            })
    manifest = directory / "session.json"
    write_json_atomic(manifest, {
        "schema_version": SCHEMA_VERSION,
        "tempo": engine.tempo_bpm,
        "sample_rate": engine.sample_rate,
        "beats_per_bar": engine.beats_per_bar,
        "channels": engine.channels,
        "columns": engine.ncols,
        "rows": engine.nrows,
        "cells": cells,
    })
    return manifest
