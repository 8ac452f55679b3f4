"""``ouro render``: render a project to a WAV file (and each root track to its own, with
``--stems``), the same samples the player plays.

``PROJECT`` is a project directory (``NAME.ouro/``: its document as saved, with the pool
``audio/``) or an interchange ``project.json`` (its pool is ``audio/`` beside it).
``{"file": path}`` sources are imported into that pool first. Output is float32 stereo at
the project's rate, written under a temporary name and renamed when complete: a failed
render leaves nothing behind. A project that cannot be rendered exits 2 with a message
naming the track, clip or field.

>>> main(["--help"])  # doctest: +ELLIPSIS
usage: ouro render ...
0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from companion.errors import ProjectError, SourceError
from companion.model.schema import normalize_project, read_project_file

PROGRESS_ABOVE_S = 2.0  # a render expected to take less shows no progress bar


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ouro render", description="Render a project to WAV.")
    p.add_argument("project", type=Path, help="project directory or interchange project.json")
    p.add_argument("--out", type=Path, required=True, help="the WAV file to write")
    p.add_argument("--start", type=float, default=None, help="first position (whole notes)")
    p.add_argument("--end", type=float, default=None,
                   help="end position (whole notes); default: the last clip's end plus tails")
    p.add_argument("--block-size", type=int, default=4096, help="frames per block")
    p.add_argument("--stems", type=Path, default=None,
                   help="also write each root track's output into this directory")
    return p


def _locate(project: Path) -> tuple[Path, Path]:
    """The ``project.json`` and the directory that holds the pool's ``audio/``."""
    if project.is_dir():
        return project / "project.json", project
    return project, project.parent


def _stem_name(index: int, track: dict[str, Any]) -> str:
    safe = re.sub(r"[^\w.-]+", "_", track["name"] or track["id"]).strip("._") or "track"
    return f"{index + 1:02d}-{safe[:60]}.wav"


class _Progress:
    """A one-line progress bar on stderr, only when it is a terminal and the job is long."""

    def __init__(self, total: int, sample_rate: int):
        self.total = total
        self.on = sys.stderr.isatty() and total > PROGRESS_ABOVE_S * sample_rate * 20
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rrendering [{bar:<30}] {frac * 100:5.1f}%")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def render_file(project_path: Path, out: Path, start_wn: float | None = None,
                end_wn: float | None = None, block_size: int = 4096,
                stems: Path | None = None) -> None:
    """What ``ouro render`` does; raises :class:`ProjectError`/:class:`SourceError` for a
    project that cannot be rendered, having written nothing."""
    from companion.engine.pool import Pool
    from companion.engine.render import compile_plan

    if block_size < 1 or block_size > 1 << 20:
        raise ProjectError("--block-size", f"must be 1 to {1 << 20}, got {block_size}")
    json_path, pool_dir = _locate(project_path)
    if (pool_dir / "doc.snapshot").is_file():
        # a project directory: its document as saved (snapshot and log, read without the
        # lock, so the app may have it open); project.json there is only the last export
        from companion.model.persist import read_project

        raw = read_project(pool_dir, "render")[0].to_interchange()
    else:
        raw = read_project_file(json_path)
    rate = normalize_project(raw)["sample_rate"]  # checked once before the pool is touched
    with Pool(pool_dir, rate, map_files=True) as pool:
        project = normalize_project(raw, pool, base_dir=json_path.parent)
        plan = compile_plan(project, pool, max_block=block_size)
        start = 0 if start_wn is None else plan.tempo.frame(start_wn)
        end = plan.end_frame if end_wn is None else plan.tempo.frame(end_wn)
        if end < start:
            what = f"--end {end_wn:g}" if end_wn is not None else "the project's end"
            raise ProjectError("--start", f"{start_wn:g} wn is after {what} (frame {end} < "
                               f"{start})")
        roots = project["tracks"]
        if stems is not None:
            plan.enable_stems([t["id"] for t in roots])
        targets = [(out, None)]
        if stems is not None:
            targets += [(stems / _stem_name(i, t), t["id"]) for i, t in enumerate(roots)]
        tmp = {path: path.with_name(f".{path.name}.{os.getpid()}.part") for path, _ in targets}
        files: list[tuple[sf.SoundFile, str | None]] = []
        try:
            if stems is not None:
                stems.mkdir(parents=True, exist_ok=True)
            for path, tid in targets:
                files.append((sf.SoundFile(str(tmp[path]), "w", plan.sample_rate, 2,
                                           "FLOAT", format="WAV"), tid))
            block = np.zeros((2, block_size), np.float32)
            progress = _Progress(end - start, plan.sample_rate)
            for f in range(start, end, block_size):
                n = min(block_size, end - f)
                plan.render(f, block[:, :n])
                for file, tid in files:
                    data = block[:, :n] if tid is None else plan.stems[tid][:, :n]
                    file.write(data.T)
                progress.update(f + n - start)
            progress.update(end - start, final=True)
            for file, _ in files:
                file.close()
            for path, _ in targets:
                os.replace(tmp[path], path)
        except BaseException:
            for file, _ in files:
                with contextlib.suppress(Exception):
                    file.close()
            for part in tmp.values():
                with contextlib.suppress(OSError):
                    part.unlink()
            raise


def main(argv: list[str]) -> int:
    """``ouro render PROJECT --out FILE.wav [--start WN] [--end WN] [--block-size N]
    [--stems DIR]``. Returns the exit status: 0 done, 2 bad input, 1 could not write."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or argparse's own usage error (2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        render_file(args.project, args.out, args.start, args.end, args.block_size,
                    args.stems)
    except (ProjectError, SourceError) as e:
        print(f"ouro render: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"ouro render: cannot write: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ouro render: interrupted; nothing written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
