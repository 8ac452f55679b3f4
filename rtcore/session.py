"""Crash-safe file writes: to a temporary name, fsynced, renamed, the directory fsynced.
(Sessions themselves are in rtcore.store.)"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def fsync_path(path: Path) -> None:
    """Make a file's data, or a directory's entries (a rename, a new file), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path  # said where a directory is meant


def fsync_rename(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable, then put it in place of ``final`` (atomically)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one.
    A write that fails (a full disk: ``OSError`` with ENOSPC) raises with the OS's own
    error and removes its temporary file, so it leaves no half-written file taking room."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_rename(tmp, path)


def write_json_atomic(path: Path, doc: Any) -> None:
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
