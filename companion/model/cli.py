"""``ouro project ...``: make, import, export and describe project directories.

::

    ouro project new NAME.ouro [--sample-rate R] [--bpm B]
    ouro project import SRC DEST.ouro     SRC: a project.json, or a pedal session directory
    ouro project export NAME.ouro OUT.json
    ouro project info NAME.ouro [--json]

Exit status 0 on success, 2 for bad input (the message on stderr names the field), and
nothing is half-written: a new project directory appears whole or not at all, and an export
replaces its file atomically. ``info`` and ``export`` read the project without locking or
writing it, so they work while the companion has it open.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from companion.errors import CompanionError, ProjectError
from companion.model.checks import SOURCE_RE
from companion.model.document import Project
from companion.model.persist import ProjectDir, export_json, read_project
from companion.model.schema import SAMPLE_RATES, read_project_file
from companion.model.timemap import Meter, TempoMap, meter_points, tempo_points


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit is 2 too; keep the message
        raise ProjectError("usage", message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ouro project", description="Companion project directories.")
    sub = p.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="make an empty project directory")
    new.add_argument("path", type=Path)
    new.add_argument("--sample-rate", type=int, default=48000)
    new.add_argument("--bpm", type=float, default=120.0)
    imp = sub.add_parser("import", help="a project.json or a pedal session, as a new project")
    imp.add_argument("src", type=Path)
    imp.add_argument("dest", type=Path)
    exp = sub.add_parser("export", help="write the project's project.json")
    exp.add_argument("path", type=Path)
    exp.add_argument("out", type=Path)
    info = sub.add_parser("info", help="tracks, clips, length and tempo")
    info.add_argument("path", type=Path)
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    for sp in (new, imp, exp, info):
        sp.add_argument("--user", default=None, help="who edits (default: the login name)")
    return p


def _user(name: str | None) -> str:
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def summary(p: Project) -> dict[str, Any]:
    """What ``info`` prints: counts, length (bars, seconds) and tempo."""
    tracks = p.all_tracks()
    kinds: dict[str, int] = {}
    for t in tracks:
        kinds[t.kind] = kinds.get(t.kind, 0) + 1
    end = p.end_position()
    tm = TempoMap(tempo_points(p.tempo), p.sample_rate)
    bb = Meter(meter_points(p.meter)).bar_beat(end)
    bars = bb.bar - 1 if (bb.beat == 1 and bb.fraction == 0) else bb.bar
    return {"tracks": len(tracks), "tracks_by_kind": kinds, "clips": len(p.clips()),
            "length_wn": end, "length_bars": bars, "length_seconds": tm.seconds(end),
            "sample_rate": p.sample_rate, "tempo": p.tempo, "meter": p.meter}


def _new(args: argparse.Namespace) -> int:
    if args.sample_rate not in SAMPLE_RATES:
        raise ProjectError("--sample-rate", f"must be one of {SAMPLE_RATES}, got "
                           f"{args.sample_rate}")
    if not 1.0 <= args.bpm <= 1000.0:  # also refuses nan
        raise ProjectError("--bpm", f"must be between 1 and 1000, got {args.bpm:g}")
    with ProjectDir.create(args.path, _user(args.user), sample_rate=args.sample_rate,
                           bpm=args.bpm):
        pass
    print(f"{args.path}: new project, {args.sample_rate} Hz, {args.bpm:g} bpm")
    return 0


def _import(args: argparse.Namespace) -> int:
    src: Path = args.src
    user = _user(args.user)
    if src.is_dir():
        from companion.model.session_import import import_session
        pd = import_session(src, args.dest, user)
    elif src.is_file():
        data = read_project_file(src)

        def build(directory: Path) -> Project:
            from companion.engine.pool import Pool
            rate = data.get("sample_rate", 48000)
            if rate not in SAMPLE_RATES:
                raise ProjectError("sample_rate", f"must be one of {SAMPLE_RATES}, got "
                                   f"{rate!r}")
            with Pool(directory, rate) as pool:
                # sha256 sources must already be in the new pool: copy those found in a
                # pool next to the file (a project directory's audio/), then import
                _copy_known_sources(data, src.parent, pool)
                return Project.from_interchange(data, user, pool=pool, base_dir=src.parent)
        pd = ProjectDir.create(args.dest, user, build=build)
    else:
        raise ProjectError(str(src), "does not exist")
    with pd:
        s = summary(pd.project)
    print(f"{args.dest}: imported {s['tracks']} tracks, {s['clips']} clips from {src}")
    return 0


def _copy_known_sources(data: dict[str, Any], base: Path, pool: Any) -> None:
    """Import the audio behind ``"sha256:..."`` sources from ``base/audio`` (the pool of the
    directory the file came from) so the new project's pool has them."""
    refs: set[str] = set()

    def walk(tracks: Any) -> None:
        for t in tracks if isinstance(tracks, list) else []:
            if not isinstance(t, dict):
                continue
            for c in t.get("clips", []) if isinstance(t.get("clips"), list) else []:
                if isinstance(c, dict) and isinstance(c.get("source"), str) \
                        and SOURCE_RE.match(c["source"]):
                    refs.add(c["source"])
            walk(t.get("children"))
    walk(data.get("tracks"))
    audio = base / "audio"
    for ref in sorted(refs):
        hexpart = ref.removeprefix("sha256:")
        for f in sorted(audio.glob(f"{hexpart}.*")) if audio.is_dir() else []:
            if f.suffix not in (".json", ".npz", ".rf64", ".tmp") and f.is_file():
                pool.import_file(f)
                break


def _export(args: argparse.Namespace) -> int:
    project, problems = read_project(args.path)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    export_json(project, args.out)
    print(f"{args.out}: written")
    return 0


def _info(args: argparse.Namespace) -> int:
    project, problems = read_project(args.path)
    s = summary(project)
    s["problems"] = problems
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(s["tracks_by_kind"].items()))
    tempo = ", ".join(f"{t['bpm']:g} bpm at {t['at']:g}" + (" (ramp)" if t["ramp"] else "")
                      for t in s["tempo"])
    meter = ", ".join(f"{m['num']}/{m['den']} at {m['at']:g}" for m in s["meter"])
    print(f"{args.path}\n"
          f"  tracks:  {s['tracks']}" + (f" ({kinds})" if kinds else "") + "\n"
          f"  clips:   {s['clips']}\n"
          f"  length:  {s['length_bars']} bars, {s['length_seconds']:.3f} s "
          f"({s['length_wn']:g} wn)\n"
          f"  tempo:   {tempo}\n"
          f"  meter:   {meter}\n"
          f"  rate:    {s['sample_rate']} Hz")
    for p in problems:
        print(f"  problem: {p}")
    return 0


def main(argv: list[str]) -> int:
    """Run ``ouro project ARGS`` (``argv`` without the program name; a leading ``project``
    is skipped). Returns the exit status."""
    if argv[:1] == ["project"]:
        argv = argv[1:]
    try:
        args = _parser().parse_args(argv)
        return {"new": _new, "import": _import, "export": _export,
                "info": _info}[args.command](args)
    except CompanionError as e:
        print(f"ouro project: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"ouro project: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
