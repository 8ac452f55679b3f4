"""``ouro bench midi``: how exactly the engine sends MIDI clock and how well it follows one.

Everything runs the real engine block by block, as ``ouro offline`` does, with the clock's
ticks delivered at their frames; the figures are in frames and beats, so they do not depend
on how busy the machine is.

- Master: the clock out over the run, with the tempo changed every 30 s (no loops, so the
  tempo may change). Each tick is compared with where the beat grid puts it, worked out here
  from the tempo changes alone: the tick ``j`` beats after a change at frame ``F`` to tempo
  ``T`` belongs at ``F + round(j * rate * 60 / T / 24)``.
- Follower, an external clock at 100 BPM with uniform jitter of +/-1 ms on every tick:
  - tempo error two bars after Start;
  - beat-phase error: the engine's beats (the click's onsets) against the clock's true
    beats, from two bars on;
  - settle time after the clock jumps to 140 BPM: from the jump until the tempo stays within
    0.05 BPM and the phase within 1 ms;
  - drift over the run with a loop playing, the clock's tempo creeping from 100 to 100.5
    BPM: the engine keeps the loop's tempo and plays faster to stay in phase; drift is
    the difference between the beats the engine counted and the clock's, and the phase
    error at the end.
- Varispeed: a 440 Hz sine loop recorded at 100 BPM, then a clock 0.5 % faster: the energy
  of everything but the tone in the main out, against the tone (spectrum with a
  Blackman-Harris window), while following, and at the loop's own speed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rtcore.commands import parse_args
from rtcore.config import EngineConfig
from rtcore.engine import Engine
from rtcore.ioside import IOSide
from rtcore.loops import Audio
from rtcore.midi import MidiBuffer
from rtcore.sync import CLOCK, START, TICKS_PER_BEAT

SAMPLE_RATE = 48000
JITTER_MS = 1.0
TEMPO_TOLERANCE_BPM = 0.05
PHASE_TOLERANCE_MS = 1.0


def _engine(block_size: int, **settings: Any) -> tuple[Engine, IOSide]:
    cfg = EngineConfig(sample_rate=SAMPLE_RATE, block_size=block_size, declick_ms=0,
                       smoothing_ms=0, midi_map="none", **settings)
    eng = Engine(cfg)
    return eng, IOSide(eng)


def bench_master(seconds: float, block_size: int) -> dict[str, Any]:
    """Tick placement error of the clock out, with a tempo change every 30 s."""
    eng, io = _engine(block_size, clock_out=True)
    total = round(seconds * SAMPLE_RATE)
    tempos = [120.0, 97.3, 143.0, 88.8, 171.5, 60.25, 133.0]
    silence = np.zeros((block_size, eng.channels), np.float32)
    out = np.zeros((block_size, eng.channels), np.float32)
    click = np.zeros(block_size, np.float32)
    midi_out = MidiBuffer(1024)
    ticks: list[int] = []
    changes: list[tuple[int, float]] = [(0, 120.0)]  # (frame, tempo)
    next_change = 30 * SAMPLE_RATE
    i = 1
    b = 0
    while b < total:
        if b >= next_change:
            eng.submit(parse_args("tempo", [tempos[i % len(tempos)]], columns=5, rows=5))
            i += 1
            next_change += 30 * SAMPLE_RATE
        n = min(block_size, total - b)
        tempo_before = eng.tempo_bpm
        eng.process(silence[:n], out[:n], click[:n], None, midi_out)
        if eng.tempo_bpm != tempo_before:
            changes.append((eng.anchor_frame, eng.tempo_bpm))
        ticks.extend(b + f for f, data in midi_out.events() if data == [CLOCK])
        io.service()
        b += n
    expected: list[int] = []
    for c, (frame, tempo) in enumerate(changes):
        end = changes[c + 1][0] if c + 1 < len(changes) else total
        per_tick = SAMPLE_RATE * 60.0 / tempo / TICKS_PER_BEAT
        j = 0
        while (f := frame + round(j * per_tick)) < end:
            expected.append(f)
            j += 1
    n = min(len(ticks), len(expected))
    errors = np.abs(np.array(ticks[:n]) - np.array(expected[:n]))
    return {"seconds": seconds, "ticks": len(ticks), "expected_ticks": len(expected),
            "tempo_changes": len(changes) - 1,
            "max_error_frames": int(errors.max()) if n else None,
            "mean_error_frames": float(errors.mean()) if n else None}


class _Clock:
    """An external clock: tick times from a tempo curve, with uniform jitter."""

    def __init__(self, tempo_at: Callable[[float], float], start: float, seed: int,
                 jitter_ms: float = JITTER_MS):
        self.tempo_at = tempo_at
        self.rng = np.random.default_rng(seed)
        self.jitter = jitter_ms * SAMPLE_RATE / 1000.0
        self.next_true = start
        self.index = 0
        self.beats: list[float] = []  # true frames of the clock's beats
        self.next_sent = self._jittered()

    def _jittered(self) -> float:
        return self.next_true + self.rng.uniform(-self.jitter, self.jitter)

    def due(self, end: int) -> list[int]:
        """Frames (rounded) of the ticks sent before ``end``."""
        out = []
        while self.next_sent < end:
            out.append(max(0, round(self.next_sent)))
            if self.index % TICKS_PER_BEAT == 0:
                self.beats.append(self.next_true)
            self.index += 1
            tempo = self.tempo_at(self.next_true / SAMPLE_RATE)
            self.next_true += SAMPLE_RATE * 60.0 / tempo / TICKS_PER_BEAT
            self.next_sent = self._jittered()
        return sorted(out)


def _follow(seconds: float, block_size: int, tempo_at: Callable[[float], float],
            seed: int, record_at_beat: int = -1, jitter_ms: float = JITTER_MS,
            source: Audio | None = None, capture: Audio | None = None) -> dict[str, Any]:
    """Run the engine on an external clock; returns the clock's true beats and the engine's
    beats (host frames) and its tempo at each of them. While recording, the input is
    ``source`` at the host's frames (a constant level without one); ``capture`` receives
    the main out."""
    eng, io = _engine(block_size, sync="midi", click=True)
    total = round(seconds * SAMPLE_RATE)
    start = 0.25 * SAMPLE_RATE
    clock = _Clock(tempo_at, start, seed, jitter_ms)
    silence = np.zeros((block_size, eng.channels), np.float32)
    ins = np.full((block_size, eng.channels), 0.25, np.float32)
    out = np.zeros((block_size, eng.channels), np.float32)
    click = np.zeros(block_size, np.float32)
    midi_in = MidiBuffer(64)
    midi_out = MidiBuffer(64)
    beats: list[int] = []
    tempo: list[float] = []
    started = False
    b = 0
    last_beat = eng.beat
    while b < total:
        n = min(block_size, total - b)
        midi_in.clear()
        if not started and b + n > start:
            midi_in.add(max(0, int(start) - b), (START,))
            started = True
        for f in clock.due(b + n):
            midi_in.add(f - b, (CLOCK,))
        if record_at_beat >= 0 and len(clock.beats) == record_at_beat:
            eng.submit(parse_args("record", [0, 0], columns=5, rows=5))
            record_at_beat = -(record_at_beat + 4)  # the end: 4 beats later
        elif record_at_beat < -1 and len(clock.beats) == -record_at_beat:
            eng.submit(parse_args("record", [0, 0], columns=5, rows=5))
            record_at_beat = -1
        if source is not None and (record_at_beat != -1 or eng.recording_count):
            feed = source[b:b + n]  # from before the recording: its pre-roll is signal too
        elif eng.recording_count:
            feed = ins[:n]
        else:
            feed = silence[:n]
        eng.process(feed, out[:n], click[:n], midi_in, midi_out)
        if capture is not None:
            capture[b:b + n] = out[:n]
        if eng.beat != last_beat:
            # the click's tone starts at the beat frame (its first sample is 0)
            onset = np.flatnonzero(click[:n])
            if onset.size and eng.ext_locked:
                beats.append(b + int(onset[0]) - 1)
                tempo.append(eng.tempo_bpm)
            last_beat = eng.beat
        io.service()
        b += n
    st = eng.status()
    return {"clock_beats": clock.beats, "engine_beats": beats, "tempo": tempo,
            "status": st, "engine": eng}


def _phase_errors_ms(engine_beats: list[int], clock_beats: list[float]) -> np.ndarray:
    """For each engine beat, the distance to the nearest true beat of the clock (ms)."""
    cb = np.array(clock_beats)
    eb = np.array(engine_beats, dtype=np.float64)
    idx = np.clip(np.searchsorted(cb, eb), 1, len(cb) - 1)
    near = np.minimum(np.abs(cb[idx] - eb), np.abs(cb[idx - 1] - eb))
    return near * 1000.0 / SAMPLE_RATE


def bench_follower(block_size: int, seed: int) -> dict[str, Any]:
    """Tempo and phase errors at 100 BPM, and the settle time after a jump to 140 BPM."""
    jump_s = 16.0
    run = _follow(32.0, block_size, lambda t: 100.0 if t < jump_s else 140.0, seed)
    beats, tempo, clock_beats = run["engine_beats"], run["tempo"], run["clock_beats"]
    start = clock_beats[0]
    two_bars = start + 8 * SAMPLE_RATE * 60.0 / 100.0
    jump = jump_s * SAMPLE_RATE
    steady = [i for i, f in enumerate(beats) if two_bars <= f < jump - SAMPLE_RATE]
    at_two_bars = steady[0]
    phase = _phase_errors_ms(beats, clock_beats)
    tempo_err = [abs(tempo[i] - 100.0) for i in steady]
    # settle: the first beat after the jump from which every later beat is within tolerance
    after = [i for i, f in enumerate(beats) if f >= jump]
    settled_at = None
    for i in after:
        rest = range(i, len(beats))
        if all(abs(tempo[j] - 140.0) < TEMPO_TOLERANCE_BPM
               and phase[j] < PHASE_TOLERANCE_MS for j in rest):
            settled_at = beats[i]
            break
    bar_140 = 4 * SAMPLE_RATE * 60.0 / 140.0
    return {
        "tempo_error_after_2_bars_bpm": round(abs(tempo[at_two_bars] - 100.0), 5),
        "tempo_error_max_after_2_bars_bpm": round(max(tempo_err), 5),
        "phase_error_max_ms": round(float(phase[steady].max()), 4),
        "phase_error_rms_ms": round(float(np.sqrt(np.mean(phase[steady] ** 2))), 4),
        "settle_bars_after_jump_to_140": (round((settled_at - jump) / bar_140, 3)
                                          if settled_at is not None else None),
        "tempo_restarts": run["status"]["midi"]["clock_in"]["tempo_restarts"],
    }


def bench_drift(seconds: float, block_size: int, seed: int) -> dict[str, Any]:
    """A loop recorded at 100 BPM, the clock creeping to 100.5 BPM over the run."""
    def tempo_at(t: float) -> float:
        return 100.0 + 0.5 * t / seconds

    run = _follow(seconds, block_size, tempo_at, seed, record_at_beat=12)
    beats, clock_beats = run["engine_beats"], run["clock_beats"]
    eng: Engine = run["engine"]
    phase = _phase_errors_ms(beats, clock_beats)
    # beats counted by each side from song position 0 to the end of the run
    end = (len(clock_beats) - 1) if clock_beats else 0
    engine_count = eng.beat - eng.ext_origin_beat
    cell = run["status"]["cells"][0][0]
    late = phase[len(phase) // 2:]
    return {
        "seconds": seconds,
        "loop": {"state": cell["state"], "beats": cell["beats"]},
        "clock_tempo_end_bpm": round(tempo_at(seconds), 3),
        "engine_tempo_bpm": round(eng.tempo_bpm, 4),
        "drift_beats": engine_count - end,
        "phase_error_max_ms_second_half": round(float(late.max()), 4) if late.size else None,
        "phase_error_end_ms": round(float(phase[-1]), 4) if phase.size else None,
        "varispeed_end": run["status"]["midi"]["clock_in"]["varispeed"],
    }


def spurious_db(x: NDArray[np.float64]) -> float:
    """How far below a tone everything else in ``x`` is (dB): the energy outside the
    spectral peak's main lobe against the peak's, with a Blackman-Harris window (side lobes
    below -92 dB, main lobe 4 bins either side)."""
    n = x.shape[0]
    k = np.arange(n) * (2.0 * np.pi / n)
    w = 0.35875 - 0.48829 * np.cos(k) + 0.14128 * np.cos(2 * k) - 0.01168 * np.cos(3 * k)
    power = np.abs(np.fft.rfft(x * w)) ** 2
    peak = int(np.argmax(power))
    lobe = power[max(peak - 5, 0):peak + 6].sum()
    rest = power.sum() - lobe
    return round(float(10.0 * np.log10(max(rest, 1e-30) / lobe)), 1)


def bench_varispeed(block_size: int) -> dict[str, Any]:
    """The sound of following: a 440 Hz sine loop recorded at 100 BPM, then the clock runs
    0.5 % fast (100.5 BPM), so the loop is played 0.5 % fast to stay on the clock's beats.
    Reports the spurious energy in 8 s of the main out against the played tone, and the
    same measure for the loop itself as recorded (the floor of the measure)."""
    seconds, change_s = 24.0, 12.0
    total = round(seconds * SAMPLE_RATE)
    t = np.arange(total) / SAMPLE_RATE
    tone = (0.5 * np.sin(2.0 * np.pi * 440.0 * t)).astype(np.float32)
    source = np.repeat(tone[:, None], 2, axis=1)
    capture = np.zeros_like(source)
    run = _follow(seconds, block_size, lambda s: 100.0 if s < change_s else 100.5, 0,
                  record_at_beat=4, jitter_ms=0.0, source=source, capture=capture)
    cell = run["status"]["cells"][0][0]
    window = 2 ** 18  # 5.5 s
    late = capture[total - window:, 0].astype(np.float64)
    steady = capture[round(change_s * SAMPLE_RATE) - window:round(change_s * SAMPLE_RATE), 0]
    return {
        "loop": {"state": cell["state"], "beats": cell["beats"]},
        "spurious_db_following": spurious_db(late),
        "spurious_db_steady": spurious_db(steady.astype(np.float64)),
        "varispeed_end": run["status"]["midi"]["clock_in"]["varispeed"],
    }


def bench_midi(seconds: float, block_size: int, seed: int = 1) -> dict[str, Any]:
    return {
        "sample_rate": SAMPLE_RATE, "block_size": block_size, "jitter_ms": JITTER_MS,
        "master": bench_master(seconds, block_size),
        "follower_100_bpm": bench_follower(block_size, seed),
        "drift": bench_drift(seconds, block_size, seed),
        "varispeed": bench_varispeed(block_size),
    }


def format_midi_report(report: dict[str, Any]) -> str:
    m, f, d = report["master"], report["follower_100_bpm"], report["drift"]
    v = report["varispeed"]
    lines = [
        f"MIDI clock, {report['sample_rate']} Hz, {report['block_size']}-frame blocks",
        f"master: {m['ticks']} ticks over {m['seconds']:g} s with {m['tempo_changes']} tempo "
        f"changes: placement error max {m['max_error_frames']} frames "
        f"(mean {m['mean_error_frames']:.3f})",
        f"follower at 100 BPM, +/-{report['jitter_ms']:g} ms jitter: tempo error after 2 bars "
        f"{f['tempo_error_after_2_bars_bpm']} BPM (max later "
        f"{f['tempo_error_max_after_2_bars_bpm']}); beat phase error max "
        f"{f['phase_error_max_ms']} ms, rms {f['phase_error_rms_ms']} ms",
        f"jump to 140 BPM: settled (tempo within {TEMPO_TOLERANCE_BPM} BPM, phase within "
        f"{PHASE_TOLERANCE_MS:g} ms) after {f['settle_bars_after_jump_to_140']} bars",
        f"drift over {d['seconds']:g} s with a loop playing, clock 100 -> 100.5 BPM: "
        f"{d['drift_beats']} beats; phase error at the end {d['phase_error_end_ms']} ms, max "
        f"over the second half {d['phase_error_max_ms_second_half']} ms "
        f"(playing {d['varispeed_end']} times as fast at the end)",
        f"varispeed, a 440 Hz loop following a clock 0.5 % fast: everything but the tone "
        f"{v['spurious_db_following']} dB below it (the loop at its own speed: "
        f"{v['spurious_db_steady']} dB)",
    ]
    return "\n".join(lines)

