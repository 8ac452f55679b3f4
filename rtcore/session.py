"""Crash-safe file writes: to a temporary name, fsynced, renamed, the directory fsynced.
(Sessions themselves are in rtcore.store.)"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_rename(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable, then put it in place of ``final`` (atomically)."""
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
    fsync_rename(tmp, path)
