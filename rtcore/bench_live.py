"""``ouro bench live``: the engine on a private ``jackd -d dummy``, under full load.

For each block size: start a JACK server of our own and a witness client that counts the
server's xrun notifications without a process callback of its own; count them with the
server idle for a while (on a VM the dummy driver's timer alone causes some), holding the
same CPU wake-up latency request the engine will hold. Then start ``ouro engine`` as a
child process, feed its inputs from a test client while all 25 cells are filled with
stereo loops over OSC (first loops of 4, 8, 2, 16 and 4 beats, then every other row at
once), close the feeder (its Python callback would load the cycle too), keep one cell
re-recording (polling the status four times a second, as a tablet would), switch the click
on, and measure for the given duration: JACK's DSP load, the engine's callback times (from
its status histogram, so only the measured window counts), the engine's xruns (missed
cycles it caught up) and the server's xrun notifications.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rtcore.bench import COLUMN_BEATS
from rtcore.client import EngineClient, EngineProcess
from rtcore.host import SignalClient, XrunCounter, hist_from_sparse, percentiles
from rtcore.jackd import JackServer, unique_server_name
from rtcore.live import CpuWakeupGuard, LiveSettings

SAMPLE_RATE = 48000
BENCH_CONFIG = "[engine]\nclick = true\n"


def _wait_beat(osc: EngineClient, beat: int, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = osc.status()
        if st["beat"] >= beat:
            return st
        time.sleep(0.02)
    raise TimeoutError(f"beat {beat} never came")


def _command(osc: EngineClient, name: str, *args: Any) -> None:
    error = osc.command(name, *args)
    if error:
        raise RuntimeError(f"the engine refused {name} {args}: {error}")


def fill_matrix(osc: EngineClient) -> None:
    """Every cell gets a loop: first loops of different lengths, then rows 1.. at once."""
    st = osc.status()
    cols, rows = len(st["cells"]), len(st["cells"][0])
    for c in range(cols):
        _command(osc, "record", c, 0)
    deadline = time.monotonic() + 10
    while (st := osc.status())["cells"][0][0]["state"] != "recording":
        if time.monotonic() > deadline:
            raise TimeoutError("the first recordings never started")
        time.sleep(0.01)
    start = st["beat"]  # the beat the recordings began on (a beat lasts 0.5 s)
    lengths = sorted({COLUMN_BEATS[c % len(COLUMN_BEATS)] for c in range(cols)})
    for beats in lengths:
        _wait_beat(osc, start + beats - 1)
        for c in range(cols):
            if COLUMN_BEATS[c % len(COLUMN_BEATS)] == beats:
                _command(osc, "record", c, 0)
    _wait_beat(osc, start + lengths[-1] + 1)
    for c in range(cols):
        for r in range(1, rows):
            _command(osc, "record", c, r)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = osc.status()
        if all(cell["state"] == "playing" for col in st["cells"] for cell in col):
            return
        time.sleep(0.2)
    raise TimeoutError("not every cell was playing after a minute")


class _Rerecorder(threading.Thread):
    """Keeps cell (0, 1) recording: a new take as soon as the last one plays."""

    def __init__(self, port: int):
        super().__init__(daemon=True, name="bench-rerecord")
        self.osc = EngineClient("127.0.0.1", port)
        self.done = threading.Event()
        self.takes = 0

    def run(self) -> None:
        while not self.done.wait(0.25):
            try:
                cell = self.osc.status()["cells"][0][1]
            except (TimeoutError, OSError):
                continue
            if cell["state"] == "playing" and cell["next_state"] == "playing":
                self.osc.send("record", 0, 1)
                self.takes += 1


def bench_block_size(block_size: int, seconds: float, baseline_s: float,
                     workdir: Path, log: Any = print) -> dict[str, Any]:
    server = JackServer(unique_server_name("bench"), period_frames=block_size,
                        log_path=workdir / f"jackd-{block_size}.log")
    server.start()
    engine = None
    feeder = None
    witness = None
    try:
        witness = XrunCounter(server.name)
        with CpuWakeupGuard(LiveSettings().cpu_wakeup_latency_us) as wakeup:
            x0 = witness.xruns
            time.sleep(baseline_s)
            baseline = witness.xruns - x0
            wakeup_baseline = wakeup.status()
        cfg = workdir / "bench.toml"
        cfg.write_text(BENCH_CONFIG)
        engine = EngineProcess(server.name, workdir / f"data-{block_size}",
                               extra=["--config", str(cfg)]).start()
        feeder = SignalClient(server.name, "ouro-bench", outputs=2)
        for i in (1, 2):
            feeder.connect(f"ouro-bench:out_{i}", f"ouroboros:in_{i}")
        osc = engine.client()
        log(f"  {block_size} frames: filling 25 cells over OSC ...")
        fill_matrix(osc)
        feeder.close()
        feeder = None
        rerecord = _Rerecorder(engine.osc_port)
        rerecord.start()
        time.sleep(1.0)
        st0 = osc.status()
        x1 = witness.xruns
        loads = []
        log(f"  {block_size} frames: measuring for {seconds:g} s ...")
        t_end = time.monotonic() + seconds
        while (left := t_end - time.monotonic()) > 0:
            time.sleep(min(0.5, left))
            loads.append(witness.cpu_load())
        st1 = osc.status()
        rerecord.done.set()
        rerecord.join()
        server_xruns = witness.xruns - x1
        hist = hist_from_sparse(st1["callback"]["hist"]) - hist_from_sparse(
            st0["callback"]["hist"])
        p50, p99, p999 = percentiles(hist, (0.5, 0.99, 0.999))
        nz = [int(i) for i in hist.nonzero()[0]]
        period_us = block_size / SAMPLE_RATE * 1e6
        playing = sum(c["state"] in ("playing", "recording") for col in st1["cells"]
                      for c in col)
        return {
            "block_size": block_size, "period_us": round(period_us, 2),
            "seconds": seconds, "callbacks": int(hist.sum()),
            "p50_us": p50, "p99_us": p99, "p999_us": p999,
            "max_us": nz[-1] if nz else 0,
            "p99_fraction": round(p99 / period_us, 4),
            "dsp_load_mean": round(sum(loads) / max(len(loads), 1), 2),
            "dsp_load_max": round(max(loads, default=0.0), 2),
            "engine_xruns": st1["xruns"] - st0["xruns"],
            "missed_frames": st1["missed_frames"] - st0["missed_frames"],
            "server_xruns": server_xruns,
            "server_xruns_idle_per_min": round(baseline * 60 / baseline_s, 1),
            "server_xruns_per_min": round(server_xruns * 60 / seconds, 1),
            "cells_playing": playing, "takes_rerecorded": rerecord.takes,
            "gc_in_audio_thread": st1["gc"]["in_audio_thread"],
            "gc_max_pause_us": st1["gc"]["max_pause_us"],
            "callback_start_delay_p99_us": st1["callback"]["start_delay_p99_us"],
            "realtime": st1["jack"]["realtime"],
            "cpu_wakeup_baseline": wakeup_baseline,
            "cpu_wakeup_engine": st1["process"]["cpu_wakeup"],
        }
    finally:
        if feeder is not None:
            feeder.close()
        if witness is not None:
            witness.close()
        if engine is not None:
            engine.stop()
        server.stop()


def bench_live(block_sizes: tuple[int, ...], seconds: float, baseline_s: float = 10.0,
               log: Any = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ouro-bench-") as tmp:
        results = {str(bs): bench_block_size(bs, seconds, baseline_s, Path(tmp), log)
                   for bs in block_sizes}
    return {"sample_rate": SAMPLE_RATE, "driver": "dummy", "seconds": seconds,
            "load": "25 stereo cells playing, 1 re-recording, click on, status polled 4 Hz",
            "block_sizes": results}


def format_live_report(report: dict[str, Any]) -> str:
    lines = [f"ouro bench live: {report['load']}; jackd -d dummy, {report['sample_rate']} Hz, "
             f"{report['seconds']:g} s per block size",
             f"{'block':>5} {'period':>8} {'DSP load':>13} {'p50':>7} {'p99':>7} {'p99.9':>7} "
             f"{'max':>7} {'p99/per':>8} {'eng xruns':>9} {'server xruns/min':>22}",
             f"{'':>5} {'':>8} {'mean / max':>13} {'':>7} {'':>7} {'':>7} {'':>7} {'':>8} "
             f"{'':>9} {'idle -> with engine':>22}"]
    for bs, r in report["block_sizes"].items():
        lines.append(
            f"{bs:>5} {r['period_us']:>6.0f}us "
            f"{r['dsp_load_mean']:>5.1f}% / {r['dsp_load_max']:>4.1f}% "
            f"{r['p50_us']:>5}us {r['p99_us']:>5}us {r['p999_us']:>5}us {r['max_us']:>5}us "
            f"{r['p99_fraction']:>8.1%} {r['engine_xruns']:>9} "
            f"{r['server_xruns_idle_per_min']:>10} -> {r['server_xruns_per_min']:<8}")
    lines.append("eng xruns: cycles the engine missed and caught up. Server xruns include the "
                 "dummy driver's own timer misses, measured idle first.")
    for bs, r in report["block_sizes"].items():
        lines.append(f"CPU wake-up latency request at {bs} frames: idle baseline "
                     f"{_wakeup_words(r['cpu_wakeup_baseline'])}, engine "
                     f"{_wakeup_words(r['cpu_wakeup_engine'])}")
    return "\n".join(lines)


def _wakeup_words(st: dict[str, Any]) -> str:
    if not st or st.get("requested_us", -1) < 0:
        return "none asked"
    if st.get("held"):
        return f"held at {st['requested_us']} us"
    return f"not held ({st.get('error')})"

