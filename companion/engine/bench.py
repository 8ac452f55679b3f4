"""``ouro bench render``: the arrangement engine's figures, printed.

- ``mix``: 64 stereo float files of 60 s, each a looping clip on its own track under 8
  metatracks, rendered by ``ouro render`` (a whole command, from start to the file on
  disk), beside ``ecasound`` and ``sox -m`` mixing the same 64 files to the same format.
- ``fx``: the same project with a 3-band EQ and a compressor on every track.
- ``play``: 32 tracks with effects rendered in 256-frame blocks on one core: the time of
  every block against the period.
- ``edit``: a 1,000-clip project opened; an edit's way to the player's new plan; the size
  of 10,000 edits on disk.
- ``drift``: a looping arrangement rendered for hours in blocks; the last block compared
  with the same frames rendered by a fresh plan located there (0 frames of drift), and the
  process's memory along the way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

RATE = 48000


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_sources(where: Path, count: int, seconds: float) -> list[Path]:
    """``count`` stereo float32 WAVs of ``seconds``: tones a few hertz apart."""
    where.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    paths = []
    for i in range(count):
        path = where / f"in{i:02d}.wav"
        if not path.exists():
            x = (0.05 * np.sin(2 * np.pi * (110 + 7 * i) * t)).astype(np.float32)
            sf.write(path, np.stack([x, 0.8 * x], axis=1), RATE, subtype="FLOAT")
        paths.append(path)
    return paths


def project_doc(refs: list[str], seconds: float, effects: bool,
                metatracks: int = 8) -> dict[str, Any]:
    """An interchange project: one looping clip per track, tracks spread over metatracks."""
    bpm = 120.0
    length = seconds * bpm / 240.0
    per = math.ceil(len(refs) / metatracks)
    metas = []
    for m in range(metatracks):
        children = []
        for i, ref in enumerate(refs[m * per:(m + 1) * per], start=m * per):
            fx = ([{"id": f"eq{i}", "kind": "eq3", "params": {}},
                   {"id": f"comp{i}", "kind": "compressor", "params": {}}] if effects else [])
            children.append({
                "id": f"t{i}", "kind": "audio", "name": f"Track {i + 1}", "effects": fx,
                "clips": [{"id": f"c{i}", "source": ref, "start": 0.0, "length": length,
                           "loop": True}]})
        metas.append({"id": f"m{m}", "kind": "meta", "name": f"Group {m + 1}",
                      "children": children})
    return {"format": "ouroboros-project", "version": 1, "sample_rate": RATE,
            "tempo": [{"at": 0.0, "bpm": bpm}], "meter": [{"at": 0.0, "num": 4, "den": 4}],
            "tracks": metas, "master": {"volume": 1.0, "effects": []}}


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return took


def _warm(paths: list[Path]) -> None:
    """Read every file once, so each contestant starts with them in the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def bench_mix(work: Path, seconds: float, count: int = 64) -> dict[str, Any]:
    from companion.engine.pool import Pool

    paths = make_sources(work / "sources", count, seconds)
    proj = work / "mix"
    proj.mkdir(exist_ok=True)
    with Pool(proj, RATE) as pool:
        refs = [pool.import_file(p) for p in paths]
    report: dict[str, Any] = {"tracks": count, "seconds": seconds}
    for effects in (False, True):
        name = "fx" if effects else "mix"
        doc = proj / f"{name}.json"
        doc.write_text(json.dumps(project_doc(refs, seconds, effects)))
        _warm(sorted((proj / "audio").glob("*")))
        took = _timed([str(Path(sys.executable).parent / "ouro"), "render", str(doc),
                       "--out", str(work / f"out-{name}.wav")])
        report[name] = {"seconds": round(took, 3), "realtime": round(seconds / took, 1)}
    _warm(paths)
    if shutil.which("sox"):
        took = _timed(["sox", "-m", *map(str, paths), "-e", "floating-point", "-b", "32",
                       str(work / "out-sox.wav")])
        report["sox"] = {"seconds": round(took, 3), "realtime": round(seconds / took, 1)}
    if shutil.which("ecasound"):
        chains: list[str] = []
        for i, p in enumerate(paths):
            chains += [f"-a:{i}", f"-i:{p}"]
        took = _timed(["ecasound", "-q", f"-f:f32_le,2,{RATE}", *chains,
                       "-a:" + ",".join(str(i) for i in range(count)),
                       f"-o:{work / 'out-eca.wav'}"])
        report["ecasound"] = {"seconds": round(took, 3), "realtime": round(seconds / took, 1)}
    for other in ("sox", "ecasound"):
        if other in report:
            report["mix"][f"vs_{other}"] = round(report[other]["seconds"]
                                                 / report["mix"]["seconds"], 2)
    return report


def _plan(doc: dict[str, Any], pool: Any, block: int) -> Any:
    from companion.engine.render import compile_plan

    return compile_plan(doc, pool, max_block=block, realtime=False)


def bench_play(work: Path, tracks: int = 32, block: int = 256,
               seconds: float = 20.0) -> dict[str, Any]:
    """Per-block render time on one core, 32 tracks with EQ and compressor each."""
    from companion.engine.pool import Pool

    paths = make_sources(work / "sources", tracks, 8.0)
    proj = work / "play"
    proj.mkdir(exist_ok=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with Pool(proj, RATE) as pool:
        refs = [pool.import_file(p) for p in paths]
        plan = _plan(project_doc(refs, 600.0, effects=True, metatracks=4), pool, block)
        out = np.zeros((2, block), np.float32)
        blocks = int(seconds * RATE / block)
        times = np.zeros(blocks, np.int64)
        for _ in range(50):  # warm-up: caches, first calls
            plan.render(0, out)
        for i in range(blocks):
            t0 = time.perf_counter_ns()
            plan.render(i * block, out)
            times[i] = time.perf_counter_ns() - t0
    period_us = block * 1e6 / RATE
    us = times / 1000.0
    return {"tracks": tracks, "block": block, "period_us": round(period_us, 1),
            "blocks": blocks, "p50_us": round(float(np.percentile(us, 50)), 1),
            "p99_us": round(float(np.percentile(us, 99)), 1),
            "max_us": round(float(us.max()), 1),
            "p99_of_period": round(float(np.percentile(us, 99)) / period_us, 3)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_drift(work: Path, hours: float, block: int = 4096) -> dict[str, Any]:
    """Hours of a looping arrangement in blocks: the last block against a fresh plan's."""
    from companion.engine.pool import Pool

    paths = make_sources(work / "sources", 4, 8.0)
    proj = work / "drift"
    proj.mkdir(exist_ok=True)
    with Pool(proj, RATE) as pool:
        refs = [pool.import_file(p) for p in paths]
        doc = project_doc(refs, hours * 3600 + 60, effects=False, metatracks=2)
        # odd loop lengths, so no two loops ever line up with the blocks again
        for m, meta in enumerate(doc["tracks"]):
            for c, child in enumerate(meta["children"]):
                child["clips"][0]["offset"] = 0.123 * (m + c)
                child["clips"][0]["start"] = 0.37 * c
        plan = _plan(doc, pool, block)
        out = np.zeros((2, block), np.float32)
        total = int(hours * 3600 * RATE) // block * block
        rss = [_rss_mb()]
        t0 = time.perf_counter()
        marks = 8
        for i in range(total // block):
            plan.render(i * block, out)
            if (i + 1) % max(1, (total // block) // marks) == 0:
                rss.append(_rss_mb())
        took = time.perf_counter() - t0
        last = out.copy()
        fresh = _plan(doc, pool, block)
        again = np.zeros((2, block), np.float32)
        fresh.render(total - block, again)
    diff = int(np.count_nonzero(last != again))
    return {"hours": hours, "block": block, "seconds": round(took, 1),
            "realtime": round(hours * 3600 / took, 1), "differing_samples_last_block": diff,
            "rss_mb": [round(r, 1) for r in rss], "rss_growth_mb": round(rss[-1] - rss[1], 1)}


def bench_edit(work: Path, clips: int = 1000, edits: int = 10000) -> dict[str, Any]:
    """A 1,000-clip project: how long it takes to open, how long from an edit in the app to
    the player's new plan (the edit's update applied to the player's replica, snapshot,
    compile), and what 10,000 edits leave on disk."""
    from companion.engine.render import compile_plan
    from companion.model.document import Project
    from companion.model.persist import ProjectDir
    from rtcore.live import GcGuard

    paths = make_sources(work / "sources", 8, 2.0)
    path = work / "edit.ouro"
    shutil.rmtree(path, ignore_errors=True)
    per_track = 20
    with ProjectDir.create(path, "bench", sample_rate=RATE, bpm=120.0) as pd:
        with pd.pool() as pool:
            refs = [pool.import_file(p) for p in paths]
        project = pd.project
        with project.edit("build"):
            for t in range(clips // per_track):
                track = project.add_track("audio", f"Track {t + 1}")
                for c in range(per_track):
                    track.add_clip(refs[(t + c) % len(refs)], start=c * 1.0, length=0.75)
    opens = []
    for _ in range(5):
        t0 = time.perf_counter()
        with ProjectDir.open(path, "bench") as pd:
            opened = len(pd.project.clips())
        opens.append(time.perf_counter() - t0)
    # the app's document and the player's replica, as two processes would hold them
    with ProjectDir.open(path, "app") as pd, pd.pool() as pool:
        app = pd.project
        replica = Project("player")
        replica.apply_update(app.get_update())
        plan = compile_plan(replica.to_interchange(), pool, max_block=256, realtime=True)
        updates: list[bytes] = []
        stop = app.observe_updates(updates.append)
        heard = []
        # clips away from 0, so that moving one back and forth never crosses it
        some = [c for c in app.clips() if c.get()["start"] >= 1.0][::97][:10]
        # as in the player process (ouro play): the collector frozen and off, so no
        # collection of the whole heap lands in the middle of an edit
        with GcGuard(lambda: 0):
            for i, clip in enumerate(some * 3):
                updates.clear()
                clip.move(start=clip.get()["start"] + 0.125 * (1 if i % 2 else -1) + 0.0625)
                t0 = time.perf_counter()
                for u in updates:
                    replica.apply_update(u)
                plan = compile_plan(replica.to_interchange(), pool, max_block=256,
                                    previous=plan, realtime=True)
                heard.append(time.perf_counter() - t0)
        stop()
    # 10,000 edits on a small project, then its size on disk (the log compacts as it goes)
    small = work / "edits.ouro"
    shutil.rmtree(small, ignore_errors=True)
    with ProjectDir.create(small, "bench", sample_rate=RATE) as pd:
        track = pd.project.add_track("audio", "Loop")
        clip = track.add_clip(refs[0], start=0.0, length=1.0)
        for i in range(edits):
            if i % 3 == 0:
                clip.move(start=(i % 64) * 0.25)
            elif i % 3 == 1:
                track.volume = 0.5 + (i % 10) / 20
            else:
                clip.set(gain=1.0 - (i % 7) / 10)
        during = pd.size_bytes()
    with ProjectDir.open(small, "bench") as pd:
        after = pd.size_bytes()
    heard_ms = np.array(heard) * 1000
    return {"clips": opened, "open_s": [round(x, 3) for x in opens],
            "edit_to_plan_ms": {"p50": round(float(np.percentile(heard_ms, 50)), 2),
                                "max": round(float(heard_ms.max()), 2), "edits": len(heard)},
            "edits": edits, "bytes_before_close": during, "bytes_after_close": after}


def format_report(report: dict[str, Any]) -> str:
    lines = []
    if "mix" in report:
        m = report["mix"]
        lines.append(f"mix: {m['tracks']} stereo tracks of {m['seconds']:g} s under 8 "
                     f"metatracks")
        lines.append(f"  ouro render, no effects  {m['mix']['seconds']:7.2f} s  "
                     f"{m['mix']['realtime']:6.1f}x real time")
        for other in ("ecasound", "sox"):
            if other in m:
                lines.append(f"  {other:<23} {m[other]['seconds']:7.2f} s  "
                             f"{m[other]['realtime']:6.1f}x real time  (ouro "
                             f"{m['mix'].get('vs_' + other, 0):.2f}x faster)")
        lines.append(f"  ouro render, EQ + comp  {m['fx']['seconds']:7.2f} s  "
                     f"{m['fx']['realtime']:6.1f}x real time (target >= 10x)")
    if "play" in report:
        p = report["play"]
        lines.append(f"play: {p['tracks']} tracks with EQ + compressor, {p['block']}-frame "
                     f"blocks ({p['period_us']} us), one core, {p['blocks']} blocks")
        lines.append(f"  p50 {p['p50_us']} us  p99 {p['p99_us']} us  max {p['max_us']} us  "
                     f"p99 = {100 * p['p99_of_period']:.1f} % of the period (target < 50 %)")
    if "drift" in report:
        d = report["drift"]
        lines.append(f"drift: {d['hours']:g} h in {d['block']}-frame blocks, "
                     f"{d['seconds']} s ({d['realtime']}x real time)")
        lines.append(f"  last block vs a fresh plan located there: "
                     f"{d['differing_samples_last_block']} samples differ")
        lines.append(f"  memory (RSS, MB) along the way: {d['rss_mb']} "
                     f"(growth after the first block {d['rss_growth_mb']} MB)")
    if "edit" in report:
        e = report["edit"]
        lines.append(f"edit: a {e['clips']}-clip project opens in {min(e['open_s']):.3f} s "
                     f"(of {e['open_s']}; target < 1 s)")
        h = e["edit_to_plan_ms"]
        lines.append(f"  an edit to the player's new plan: p50 {h['p50']} ms, max {h['max']} "
                     f"ms over {h['edits']} edits (target < 20 ms)")
        lines.append(f"  {e['edits']} edits: {e['bytes_before_close']} bytes on disk before "
                     f"closing, {e['bytes_after_close']} after (target < 100 KB)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ouro bench render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="mix,play,drift,edit",
                        help="which parts, comma-separated: mix (with fx), play, drift, edit")
    parser.add_argument("--seconds", type=float, default=60.0, help="mix: source length")
    parser.add_argument("--hours", type=float, default=8.0, help="drift: how long")
    parser.add_argument("--play-seconds", type=float, default=20.0,
                        help="play: how much audio to render block by block")
    parser.add_argument("--clips", type=int, default=1000, help="edit: the project's clips")
    parser.add_argument("--edits", type=int, default=10000, help="edit: edits to store")
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    known = {"mix", "play", "drift", "edit"}
    if not parts <= known:
        parser.error(f"--only: unknown part(s) {sorted(parts - known)}")
    if not (math.isfinite(args.seconds) and 1 <= args.seconds <= 600):
        parser.error("--seconds must be 1..600")
    if not (math.isfinite(args.hours) and 0 < args.hours <= 24):
        parser.error("--hours must be more than 0, up to 24")
    if not (math.isfinite(args.play_seconds) and 0.1 <= args.play_seconds <= 600):
        parser.error("--play-seconds must be 0.1..600")
    if not (20 <= args.clips <= 100000 and 1 <= args.edits <= 1000000):
        parser.error("--clips must be 20..100000 and --edits 1..1000000")
    work = args.work or Path(tempfile.mkdtemp(prefix="ouro-bench-render-"))
    report: dict[str, Any] = {}
    try:
        if "mix" in parts:
            _say("mix: 64 tracks, ouro render vs ecasound vs sox ...")
            report["mix"] = bench_mix(work, args.seconds)
        if "play" in parts:
            _say("play: 32 tracks with effects in 256-frame blocks ...")
            report["play"] = bench_play(work, seconds=args.play_seconds)
        if "drift" in parts:
            _say(f"drift: {args.hours:g} hours of a looping arrangement ...")
            report["drift"] = bench_drift(work, args.hours)
        if "edit" in parts:
            _say("edit: a 1,000-clip project: open, edit to plan, 10,000 edits ...")
            report["edit"] = bench_edit(work, args.clips, args.edits)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report) if args.json else format_report(report))
    return 0
