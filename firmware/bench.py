"""``ouro bench pedal``: footswitch edge to engine acknowledgement, and OLED frame time.

The latency path is the real one end to end: a private ``jackd -d dummy`` runs the engine
(``ouro engine``, its own process); in this process gpiozero's mock pin of FS4 is pulled
low, gpiozero calls the button's callback, the gesture detector sees a tap, the gesture map
says ``select next_row``, the pedal sends ``/ouro/select`` and ``/ouro/ack`` over UDP, the
engine's OSC thread queues the command, the audio thread takes it at the start of its next
cycle, and the OSC thread answers the ack, which the pedal's link thread receives. The
clock runs from just before the pin moves until the ack is in. A press holds the switch
down 30 ms and the next comes 25 to 45 ms after the release, at random, so presses fall
anywhere in the JACK cycle (and every other one is a double, which selects the next
column instead: the same path).

The render time is :func:`firmware.screen.bench_render`: a busy performance screen drawn
and pushed to luma's dummy device.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from firmware.controls import Controls, mock_factory
from firmware.display import dummy_display
from firmware.keymap import default_keymap
from firmware.link import EngineLink
from firmware.pedal import Pedal
from firmware.pinmap import builtin_pinmap
from firmware.screen import bench_render
from rtcore.client import EngineProcess
from rtcore.jackd import JackServer, unique_server_name

__all__ = ["bench_pedal", "format_pedal_report"]


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3), "count": len(ms)}


def bench_pedal(presses: int = 500, period_frames: int = 64, frames: int = 1000,
                seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    report: dict[str, Any] = {"period_frames": period_frames, "sample_rate": 48000}
    with tempfile.TemporaryDirectory(prefix="ouro-bench-pedal-") as tmp, \
            JackServer(unique_server_name("bench-pedal"), period_frames=period_frames) as srv, \
            EngineProcess(srv.name, Path(tmp) / "data") as engine:
        km = default_keymap()
        with EngineLink("127.0.0.1", engine.osc_port) as link:
            if not link.wait_reachable(10):
                raise RuntimeError("the engine sent no status within 10 s")
            pedal = Pedal(link, km)
            controls = Controls(builtin_pinmap("rpi4"), pedal.on_gesture,
                                hold_time_s=km.hold_time_s, double_tap_s=km.double_tap_s,
                                pin_factory=mock_factory())
            latencies: list[float] = []
            unsent = unanswered = 0
            try:
                for _ in range(presses):
                    before = pedal.last_token
                    t0 = time.monotonic()
                    controls.drive("fs4", True)
                    token = pedal.last_token
                    if token == before:
                        unsent += 1
                    elif (acked := link.wait_ack(token, 1.0)) is None:
                        unanswered += 1
                    else:
                        latencies.append((acked - t0) * 1000.0)
                    # a foot: down for a while, up for a while, both past the debounce time
                    time.sleep(0.03)
                    controls.drive("fs4", False)
                    time.sleep(rng.uniform(0.025, 0.045))
            finally:
                controls.close()
            report["edge_to_ack"] = _stats(latencies)
            report["edge_to_ack"]["unsent"] = unsent
            report["edge_to_ack"]["unanswered"] = unanswered
            report["engine_errors"] = list(link.errors)[-3:]
    report["render"] = bench_render(frames, dummy_display())
    return report


def format_pedal_report(r: dict[str, Any]) -> str:
    e, f = r["edge_to_ack"], r["render"]
    period_ms = r["period_frames"] / r["sample_rate"] * 1000
    return "\n".join([
        f"ouro bench pedal: jackd -d dummy at {r['period_frames']} frames "
        f"({period_ms:.2f} ms a cycle)",
        f"  footswitch edge -> engine ack: p50 {e['p50_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms, "
        f"max {e['max_ms']:.2f} ms over {e['count']} presses ({e['unsent']} sent nothing, "
        f"{e['unanswered']} unanswered); "
        f"target p99 < 5 ms",
        f"  OLED frame (render + luma dummy device): p50 {f['p50_ms']:.2f} ms, "
        f"p99 {f['p99_ms']:.2f} ms, max {f['max_ms']:.2f} ms over {f['frames']} frames; "
        f"target p99 < 10 ms",
    ])
