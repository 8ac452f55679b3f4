"""``ouro project ...``: make, import, export and describe project directories.

::

    ouro project new NAME.ouro [--sample-rate R] [--bpm B]
    ouro project import SRC DEST.ouro     SRC: a project.json, or a pedal session directory
    ouro project export NAME.ouro OUT.json
    ouro project info NAME.ouro [--json]
    ouro project bounce NAME.ouro TRACK [--freeze | --flatten | --out FILE.wav]
    ouro project unfreeze NAME.ouro TRACK

Exit status 0 on success, 2 for bad input (the message on stderr names the field), and
nothing is half-written: a new project directory appears whole or not at all, and an export
replaces its file atomically. ``info`` and ``export`` read the project without locking or
writing it, so they work while the companion has it open.

``bounce`` renders a track (by ID or unique name) as the mix hears it, pre-fader
(``companion.engine.bounce``): with ``--freeze`` or ``--flatten`` into the project's pool and
onto the track in one undoable edit, with ``--out`` into a WAV file only (written under a
temporary name and renamed when whole), and with neither into the pool alone (its reference
is printed). Everything is checked before the render starts, so a refused bounce writes
nothing; a long render shows its progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from companion.errors import CompanionError, ProjectError
from companion.model.checks import SOURCE_RE
from companion.model.document import Project
from companion.model.persist import ProjectDir, export_json, read_project
from companion.model.schema import SAMPLE_RATES, read_project_file
from companion.model.timemap import Meter, TempoMap, meter_points, tempo_points

MIDI_SUFFIXES = (".mid", ".midi", ".smf")
GM_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")  # Debian's timgm6mb-soundfont


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
    imp = sub.add_parser("import", help="a project.json, a pedal session or a Standard MIDI "
                         "File, as a new project")
    imp.add_argument("src", type=Path)
    imp.add_argument("dest", type=Path)
    exp = sub.add_parser("export", help="write the project's project.json (or, to a .mid, "
                         "its MIDI tracks as a Standard MIDI File)")
    exp.add_argument("path", type=Path)
    exp.add_argument("out", type=Path)
    info = sub.add_parser("info", help="tracks, clips, length and tempo")
    info.add_argument("path", type=Path)
    info.add_argument("--json", action="store_true", help="print the figures as JSON")
    bounce = sub.add_parser("bounce", help="render a track into the pool (freeze, flatten) "
                            "or a WAV file")
    bounce.add_argument("path", type=Path)
    bounce.add_argument("track", help="the track's ID or its (unique) name")
    how = bounce.add_mutually_exclusive_group()
    how.add_argument("--freeze", action="store_true",
                     help="replace the track by its bounce, keeping it to unfreeze")
    how.add_argument("--flatten", action="store_true",
                     help="replace the track by its bounce for good")
    how.add_argument("--out", type=Path, default=None, help="write the bounce to this WAV")
    bounce.add_argument("--block-size", type=int, default=4096, help="frames per block")
    unfreeze = sub.add_parser("unfreeze", help="bring a frozen track's original back")
    unfreeze.add_argument("path", type=Path)
    unfreeze.add_argument("track", help="the track's ID or its (unique) name")
    for sp in (new, imp, exp, info, bounce, unfreeze):
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
    elif src.is_file() and src.suffix.lower() in MIDI_SUFFIXES:
        pd = ProjectDir.create(args.dest, user, build=lambda d: _from_smf(src, d, user))
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


def _from_smf(src: Path, directory: Path, user: str) -> Project:
    """A Standard MIDI File as a project: its tempo and meter, one MIDI track per (track,
    channel) of the file, played by the General MIDI SoundFont where Debian's is installed
    (its program; channel 10 on the drum bank), by the built-in synth otherwise."""
    from companion.engine.midifile import import_smf
    from companion.engine.pool import Pool

    smf = import_smf(src)
    tracks = []
    with Pool(directory, 48000) as pool:
        font = pool.import_soundfont(GM_SOUNDFONT) if GM_SOUNDFONT.is_file() else None
        for i, (clip, info) in enumerate(zip(smf.clips, smf.info, strict=True)):
            if font is None:
                instrument: dict[str, Any] = {"kind": "synth", "wave": "triangle",
                                              "attack": 0.005, "decay": 0.2, "sustain": 0.6,
                                              "release": 0.2}
            else:
                instrument = {"kind": "soundfont", "source": font,
                              "program": info.program or 0,
                              "bank": 128 if info.channel == 9 else 0}
            tracks.append({"id": f"midi{i + 1}", "kind": "midi",
                           "name": info.name or f"MIDI {i + 1}", "instrument": instrument,
                           "clips": [dict(clip, id=f"mc{i + 1}")]})
        data = {"format": "ouroboros-project", "version": 1, "sample_rate": 48000,
                "tempo": smf.tempo, "meter": smf.meter, "tracks": tracks}
        return Project.from_interchange(data, user, pool=pool)


def _export(args: argparse.Namespace) -> int:
    project, problems = read_project(args.path)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if args.out.suffix.lower() in MIDI_SUFFIXES:
        from companion.engine.midifile import export_smf

        midi = [t for t in project.all_tracks() if t.kind == "midi"]
        if not midi:
            raise ProjectError(str(args.path), "has no MIDI tracks to export")
        export_smf(args.out, [[c.get() for c in t.clips()] for t in midi], project.tempo,
                   project.meter, names=[t.name for t in midi])
        print(f"{args.out}: {len(midi)} MIDI tracks written")
        return 0
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


def find_track(p: Project, key: str) -> str:
    """The ID of the track whose ID is ``key``, or else whose name is ``key`` (it must be
    the only one); :class:`ProjectError` naming ``key`` otherwise."""
    tracks = p.all_tracks()
    if any(t.id == key for t in tracks):
        return key
    named = [t.id for t in tracks if t.name == key]
    if len(named) == 1:
        return named[0]
    if named:
        raise ProjectError(f"track {key!r}", f"names {len(named)} tracks ({', '.join(named)}); "
                           "give its ID")
    raise ProjectError(f"track {key!r}", "no track has this ID or name")


class _Progress:
    """Progress on stderr while a long render runs (only on a terminal)."""

    def __init__(self, sample_rate: int, label: str):
        self.on = sys.stderr.isatty()
        self.min_frames = 40 * sample_rate  # shorter renders finish before anyone looks
        self.label = label
        self.last = -1.0

    def __call__(self, done: int, total: int) -> None:
        if not self.on or total < self.min_frames:
            return
        now = time.monotonic()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        frac = done / total if total else 1.0
        sys.stderr.write(f"\r{self.label} [{'#' * int(frac * 30):<30}] {frac * 100:5.1f}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _write_wav(path: Path, data: Any, sample_rate: int) -> None:
    """Write ``data`` ((2, frames) float32) to ``path`` whole or not at all."""
    import soundfile as sf
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        sf.write(str(tmp), data.T, sample_rate, subtype="FLOAT", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _bounce(args: argparse.Namespace) -> int:
    if not 1 <= args.block_size <= 1 << 20:
        raise ProjectError("--block-size", f"must be 1 to {1 << 20}, got {args.block_size}")
    if args.out is not None:
        if args.out.suffix.lower() != ".wav":
            raise ProjectError("--out", f"{args.out} must be a .wav file")
        # a file only: the project is read as it is on disk, neither locked nor written
        project, _ = read_project(args.path)
        _bounce_into(args, project)
        return 0
    _with_project(args, lambda p: _bounce_into(args, p))
    return 0


def _with_project(args: argparse.Namespace, work: Callable[[Project], None]) -> None:
    """Open the project, run ``work``, close it; when ``work`` fails the directory is left
    exactly as it was (closed without compaction: nothing was edited, nothing rewritten)."""
    pd = ProjectDir.open(args.path, _user(args.user))
    try:
        work(pd.project)
    except BaseException:
        pd.close(compact=False)
        raise
    pd.close()


def _bounce_into(args: argparse.Namespace, p: Project) -> None:
    from companion.engine.bounce import bounce_track, render_track
    from companion.engine.pool import Pool
    tid = find_track(p, args.track)
    name = f"track {tid} {p.track(tid).name!r}"
    if args.freeze or args.flatten:
        try:  # before the render: a refused freeze must not leave a source behind
            p.check_bounceable(tid)
        except ProjectError as e:
            raise ProjectError(name, e.problem) from None
    snapshot = p.to_interchange()
    progress = _Progress(p.sample_rate, f"bouncing {p.track(tid).name}")
    with Pool(args.path, p.sample_rate) as pool:
        try:
            if args.out is not None:
                r = render_track(snapshot, tid, pool, block_size=args.block_size,
                                 progress=progress)
                _write_wav(args.out, r.data, r.sample_rate)
                print(f"{args.out}: {name}, {r.data.shape[1] / r.sample_rate:.3f} s from "
                      f"{r.start_wn:g} wn")
                _warn_sends(r.outside_sends)
                return
            b = bounce_track(snapshot, tid, pool, block_size=args.block_size,
                             progress=progress)
        except ProjectError as e:
            if e.where.startswith(f"track {tid}"):
                raise
            raise ProjectError(f"{name} > {e.where}", e.problem) from None
    if args.freeze:
        p.freeze(tid, b)
    elif args.flatten:
        p.flatten(tid, b)
    what = "frozen" if args.freeze else "flattened" if args.flatten else "in the pool"
    print(f"{name}: bounced, {b.frames / b.sample_rate:.3f} s from {b.start_wn:g} wn "
          f"({b.length_wn:g} wn), {b.ref}; {what}")
    _warn_sends(b.outside_sends)


def _warn_sends(sends: tuple[str, ...]) -> None:
    if sends:
        print(f"note: sends from inside it to buses outside it are not in the bounce: "
              f"{', '.join(sends)}", file=sys.stderr)


def _unfreeze(args: argparse.Namespace) -> int:
    def work(p: Project) -> None:
        tid = find_track(p, args.track)
        p.unfreeze(tid)
        print(f"track {tid} {p.track(tid).name!r}: unfrozen")
    _with_project(args, work)
    return 0


def main(argv: list[str]) -> int:
    """Run ``ouro project ARGS`` (``argv`` without the program name; a leading ``project``
    is skipped). Returns the exit status."""
    if argv[:1] == ["project"]:
        argv = argv[1:]
    try:
        args = _parser().parse_args(argv)
        return {"new": _new, "import": _import, "export": _export, "info": _info,
                "bounce": _bounce, "unfreeze": _unfreeze}[args.command](args)
    except CompanionError as e:
        print(f"ouro project: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"ouro project: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a long bounce stopped: its edit never started
        print("ouro project: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
