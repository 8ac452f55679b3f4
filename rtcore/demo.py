"""``ouro demo``: the seed's looping scenario, played offline, with audible chords.

Row 1 of column 1 records A, Bb, B, C (one chord a beat); row 2 joins at column beat 3 with
Dm, Ebm, Em, Fm; row 2 later starts alone on Em; row 1 joins on B while row 2 plays Dm;
row 3 records a G that stops by itself after the column's four beats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 48000
TEMPO_BPM = 120.0
SPB = SAMPLE_RATE * 60 // int(TEMPO_BPM)  # 24000 frames a beat

_NOTE = {"C": 0, "Db": 1, "D": 2, "Eb": 3, "E": 4, "F": 5, "Gb": 6, "G": 7, "Ab": 8,
         "A": 9, "Bb": 10, "B": 11}


def chord_tone(name: str, frames: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A soft three-note chord (root, third, fifth) as mono float32."""
    minor = name.endswith("m")
    root = _NOTE[name[:-1] if minor else name]
    intervals = (0, 3 if minor else 4, 7)
    t = np.arange(frames) / sample_rate
    out = np.zeros(frames)
    for iv in intervals:
        freq = 220.0 * 2 ** ((root - 9 + iv) / 12)
        out += np.sin(2 * np.pi * freq * t)
    env = np.minimum(1.0, np.minimum(t / 0.01, (frames - 1 - np.arange(frames)) / 480 + 0.2))
    return (0.15 * out * env).astype(np.float32)


def scenario(channels: int = 2) -> tuple[dict[str, Any], np.ndarray]:
    """The performance script and its input: what a newcomer hears in ``ouro demo``."""
    beats = 32
    inp = np.zeros((beats * SPB, channels), np.float32)

    def play(beat: int, chord: str) -> None:
        inp[beat * SPB : (beat + 1) * SPB] = chord_tone(chord, SPB)[:, None]

    for i, chord in enumerate(("A", "Bb", "B", "C")):
        play(i, chord)  # beats 0-3: row 1's first recording
    for i, chord in enumerate(("Dm", "Ebm", "Em", "Fm")):
        play(6 + i, chord)  # beats 6-9: row 2, recording starts at column beat 3
    play(24, "G")  # row 3: starts on column beat 1, stops after 4 beats by itself
    ev: list[dict[str, Any]] = []

    def cmd(beat: float, name: str, row: int = 0, **kw: Any) -> None:
        ev.append({"frame": round(beat * SPB), "cmd": name, "column": 0, "row": row, **kw})

    cmd(0, "record")
    cmd(4, "record")  # ends row 1: 4 beats
    cmd(5.5, "record", 1)  # pressed during column beat 2, starts at column beat 3
    cmd(12.5, "stop")
    cmd(12.5, "stop", 1)
    cmd(13.5, "play", 1)  # starts alone at column beat 1: Em
    cmd(14.5, "play")  # pressed while row 2 plays Fm: joins at beat 3 on B + Dm
    cmd(20.5, "stop")
    cmd(20.5, "stop", 1)
    cmd(23.5, "record", 2)  # G, four beats, then plays by itself
    cmd(30.5, "stop", 2)
    script = {
        "sample_rate": SAMPLE_RATE, "block_size": 128, "channels": channels,
        "tempo_bpm": TEMPO_BPM, "beats_per_bar": 4, "declick_ms": 3, "smoothing_ms": 10,
        "latency_frames": 0, "monitor_input": True, "click": True,
        "duration_frames": beats * SPB, "events": ev,
    }
    return script, inp


def run_demo(out_dir: Path) -> int:
    import json

    import soundfile as sf

    from rtcore import offline

    out_dir.mkdir(parents=True, exist_ok=True)
    script, inp = scenario()
    (out_dir / "demo_script.json").write_text(json.dumps(script, indent=2) + "\n")
    sf.write(out_dir / "demo_input.wav", inp, SAMPLE_RATE, subtype="FLOAT")
    code = offline.run(out_dir / "demo_script.json", out_dir / "demo_input.wav", out_dir)
    status = json.loads((out_dir / "status.json").read_text())
    for r, cell in enumerate(status["cells"][0][:3]):
        print(f"column 1 row {r + 1}: {cell['state']}, {cell['beats']} beats, sync offset "
              f"{cell['sync_offset_frames']} frames")
    print(f"listen: {out_dir.resolve() / 'main.wav'} (loops + monitored input), "
          f"{out_dir.resolve() / 'click.wav'} (click)")
    return code
