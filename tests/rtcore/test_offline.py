"""``ouro offline SCRIPT.json --input IN.wav --out DIR``: real scripts, real WAVs, real files.

The contract is the last section of ``shared/spec/engine.md``. Most runs go through
``rtcore.cli.main`` in-process (fast); the spec's own example runs as a subprocess through
the installed ``ouro`` console script, and one run goes through ``python -m rtcore.cli``.

The input is a ramp (input frame ``i`` is ``i + 1`` on channel 0 and ``-(i + 1)`` on channel
1), so every sample says which engine frame it was recorded at. Declicking and smoothing are
off (``declick_ms = smoothing_ms = 0``), so outputs can be checked sample for sample.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from rtcore import cli
from rtcore.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
SR = 8000
TEMPO = 120.0
SPB = SR * 60 // 120  # 4000 frames a beat
BS = 64
L = 4 * SPB  # a four-beat loop

CELL_KEYS = {"state", "next_state", "volume", "beats", "length_frames", "sync_offset_frames",
             "consolidated"}
COLUMN_KEYS = {"beats", "position", "running"}


# ---------------------------------------------------------------------------- helpers


def ramp(frames: int, channels: int = 2) -> np.ndarray:
    """Input frame ``i`` is ``i + 1`` (channel 0), ``-(i + 1)`` (channel 1), ..."""
    x = np.arange(1, frames + 1, dtype=np.float32)
    sign = np.where(np.arange(channels) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return np.ascontiguousarray(x[:, None] * sign)


def script(duration: int, events: list[dict[str, Any]] | tuple = (), **over: Any
           ) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "sample_rate": SR, "block_size": BS, "channels": 2, "tempo_bpm": TEMPO,
        "beats_per_bar": 4, "declick_ms": 0, "smoothing_ms": 0, "latency_frames": 0,
        "monitor_input": False, "click": False, "duration_frames": duration,
        "events": list(events),
    }
    doc.update(over)
    return doc


def cmd(frame: int, name: str, column: int = 0, row: int = 0, **kw: Any) -> dict[str, Any]:
    return {"frame": frame, "cmd": name, "column": column, "row": row, **kw}


def rec(frame: int, column: int = 0, row: int = 0) -> dict[str, Any]:
    return cmd(frame, "record", column, row)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    out: Path

    def wav(self, name: str) -> np.ndarray:
        data, _ = sf.read(self.out / name, dtype="float32", always_2d=name != "click.wav")
        return data

    def json(self, name: str) -> Any:
        return json.loads((self.out / name).read_text())

    @property
    def status(self) -> dict[str, Any]:
        return self.json("status.json")

    @property
    def manifest(self) -> dict[str, Any]:
        return self.json("session/session.json")

    def loop_file(self, column: int, row: int) -> np.ndarray:
        entry = manifest_entry(self.manifest, column, row)
        data, _ = sf.read(self.out / "session" / entry["file"], dtype="float32",
                             always_2d=True)
        return data


def manifest_entry(manifest: dict[str, Any], column: int, row: int) -> dict[str, Any]:
    found = [c for c in manifest["cells"] if c["column"] == column and c["row"] == row]
    assert len(found) == 1, f"manifest names cell ({column}, {row}) {len(found)} times"
    return found[0]


def write_inputs(d: Path, doc: dict[str, Any] | str, inp: np.ndarray,
                 rate: int | None = None) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    script_path = d / "script.json"
    script_path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=1))
    wav = d / "in.wav"
    if rate is None:
        rate = doc["sample_rate"] if isinstance(doc, dict) else SR
    sf.write(wav, inp, rate, subtype="FLOAT")
    return script_path, wav


def run_inproc(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any],
               inp: np.ndarray, *extra: str, name: str = "run") -> Run:
    script_path, wav = write_inputs(tmp_path / name, doc, inp)
    out = tmp_path / name / "out"
    capsys.readouterr()
    rc = cli.main(["offline", str(script_path), "--input", str(wav), "--out", str(out), *extra])
    cap = capsys.readouterr()
    return Run(rc, cap.out, cap.err, out)


def ouro_console_script() -> Path:
    exe = Path(sys.executable).parent / ("ouro.exe" if os.name == "nt" else "ouro")
    assert exe.exists(), f"the ouro console script is not installed next to {sys.executable}"
    return exe


def run_proc(args: list[str], tmp_path: Path, console_script: bool = False
             ) -> subprocess.CompletedProcess[str]:
    head = [str(ouro_console_script())] if console_script else [sys.executable, "-m",
                                                                "rtcore.cli"]
    return subprocess.run([*head, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def assert_float_wav(path: Path, frames: int, channels: int, rate: int) -> None:
    info = sf.info(str(path))
    assert info.subtype == "FLOAT", f"{path.name} is {info.subtype}, not float32"
    assert info.frames == frames, f"{path.name} has {info.frames} frames, want {frames}"
    assert info.channels == channels
    assert info.samplerate == rate


def assert_status_shape(status: dict[str, Any], columns: int, rows: int) -> None:
    for key in ("tempo", "sample_rate", "block_size", "cells", "columns"):
        assert key in status, f"status.json has no {key!r}"
    assert isinstance(status["cells"], list) and len(status["cells"]) == columns
    for c, col_cells in enumerate(status["cells"]):
        assert isinstance(col_cells, list) and len(col_cells) == rows, f"cells[{c}]"
        for r, cell in enumerate(col_cells):
            missing = CELL_KEYS - set(cell)
            assert not missing, f"cells[{c}][{r}] lacks {sorted(missing)}"
    assert isinstance(status["columns"], list) and len(status["columns"]) == columns
    for c, col in enumerate(status["columns"]):
        missing = COLUMN_KEYS - set(col)
        assert not missing, f"columns[{c}] lacks {sorted(missing)}"


# The scenario most tests use: column 0 row 0 records beats 0..4 (a five-beat loop that
# plays from beat 5, where the column wraps to position 0); row 1 starts recording at beat 7,
# which is column beat 3 (position 2 * SPB), and records one loop length, to beat 12.
# (Five beats, not four: an offset of half the loop would hide a rotation the wrong way.)
SC_BEATS = 5
SC_L = SC_BEATS * SPB
ROW0_END = 5 * SPB
ROW1_START = 7 * SPB
ROW1_END = ROW1_START + SC_L  # 12 * SPB
ROW1_OFFSET = 2 * SPB
SCENARIO_EVENTS = [rec(0), rec(ROW0_END), rec(ROW1_START, row=1)]


def expected_loops(inp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row 0's file, row 1's file) as the spec says they are saved: consolidated."""
    row0 = inp[0:SC_L]
    recorded = inp[ROW1_START:ROW1_END]  # buffer index 0 = column position 2 * SPB
    row1 = np.roll(recorded, ROW1_OFFSET, axis=0)  # C[p] = B[(p - o) mod L]
    return row0, row1


def expected_mix(duration: int, row0: np.ndarray, row1: np.ndarray) -> np.ndarray:
    out = np.zeros((duration, row0.shape[1]), np.float32)
    f = np.arange(ROW0_END, duration)
    pos = (f - ROW0_END) % SC_L
    out[f] = row0[pos]
    late = f >= ROW1_END
    out[f[late]] += row1[pos[late]]
    return out


# ---------------------------------------------------------------------------- outputs


def test_outputs_exist_with_the_engine_timeline_and_formats(tmp_path, capsys):
    duration = 15 * SPB + 37  # not a multiple of the block size
    inp = ramp(duration)
    run = run_inproc(tmp_path, capsys, script(duration, SCENARIO_EVENTS, click=True), inp)
    assert run.rc == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert_float_wav(run.out / "main.wav", duration, 2, SR)
    assert_float_wav(run.out / "click.wav", duration, 1, SR)
    midi = run.json("midi_out.json")
    assert isinstance(midi, list)
    for ev in midi:
        assert set(ev) == {"frame", "bytes"}
        assert isinstance(ev["frame"], int) and 0 <= ev["frame"] < duration
        assert isinstance(ev["bytes"], list) and all(0 <= b <= 255 for b in ev["bytes"])
    status = run.status
    assert_status_shape(status, 5, 5)
    assert status["tempo"] == TEMPO
    assert status["sample_rate"] == SR
    assert status["block_size"] == BS


def test_status_cells_are_indexed_column_then_row(tmp_path, capsys):
    """A 3x2 matrix: ``cells[column][row]``; a loop in column 1 row 0 shows up there."""
    duration = 9 * SPB + 100
    inp = ramp(duration)
    doc = script(duration, [rec(0, column=1), rec(4 * SPB, column=1)], columns=3, rows=2)
    run = run_inproc(tmp_path, capsys, doc, inp)
    assert run.rc == 0, run.stderr
    status = run.status
    assert_status_shape(status, 3, 2)
    cell = status["cells"][1][0]
    assert cell["state"] == "playing"
    assert cell["next_state"] == "playing"
    assert cell["beats"] == 4
    assert cell["length_frames"] == L
    assert cell["sync_offset_frames"] == 0
    assert cell["consolidated"] is True
    assert cell["volume"] == 1.0
    assert status["columns"][1]["beats"] == 4
    assert status["columns"][1]["running"] is True
    assert status["columns"][1]["position"] == (duration - 4 * SPB) % L
    for c, r in [(0, 0), (0, 1), (1, 1), (2, 0), (2, 1)]:
        assert status["cells"][c][r]["state"] == "empty", (c, r)
        assert status["cells"][c][r]["beats"] == 0
    for c in (0, 2):
        assert status["columns"][c]["beats"] == 0
        assert status["columns"][c]["running"] is False
        assert status["columns"][c]["position"] == 0
    assert manifest_entry(run.manifest, 1, 0)["beats"] == 4


def test_status_next_state_shows_a_pending_command(tmp_path, capsys):
    """A record pressed in the last block, with no beat boundary left: pending."""
    duration = 4 * SPB + 100
    inp = ramp(duration)
    run = run_inproc(tmp_path, capsys, script(duration, [rec(4 * SPB + 70)]), inp)
    assert run.rc == 0, run.stderr
    cell = run.status["cells"][0][0]
    assert cell["state"] == "empty"
    assert cell["next_state"] == "recording"


def test_loop_files_are_consolidated_to_column_beat_one(tmp_path, capsys):
    """Row 1 starts at column beat 3: its file starts with what was recorded at beat 1."""
    duration = 14 * SPB
    inp = ramp(duration)
    run = run_inproc(tmp_path, capsys, script(duration, SCENARIO_EVENTS), inp)
    assert run.rc == 0, run.stderr
    row0, row1 = expected_loops(inp)

    status = run.status
    c1 = status["cells"][0][1]
    assert (c1["state"], c1["beats"], c1["length_frames"]) == ("playing", SC_BEATS, SC_L)
    assert c1["sync_offset_frames"] == ROW1_OFFSET
    assert c1["consolidated"] is True
    c0 = status["cells"][0][0]
    assert (c0["state"], c0["beats"], c0["sync_offset_frames"]) == ("playing", SC_BEATS, 0)

    manifest = run.manifest
    for row in (0, 1):
        entry = manifest_entry(manifest, 0, row)
        assert not Path(entry["file"]).is_absolute(), entry["file"]
        path = run.out / "session" / entry["file"]
        assert path.is_file(), path
        info = sf.info(str(path))
        assert (info.frames, info.channels, info.samplerate) == (SC_L, 2, SR)
        assert info.subtype == "FLOAT"
    got0 = run.loop_file(0, 0)
    got1 = run.loop_file(0, 1)
    np.testing.assert_array_equal(got0, row0)
    # index 0 is column beat 1: the audio recorded at frame 10 * SPB (value 10 * SPB + 1),
    # when the column wrapped after row 1 had recorded its first three beats
    assert got1[0, 0] == 10 * SPB + 1
    assert got1[0, 1] == -(10 * SPB + 1)
    # ... and the column position 2 * SPB (beat 3) holds what was recorded at frame 7 * SPB
    assert got1[ROW1_OFFSET, 0] == ROW1_START + 1
    np.testing.assert_array_equal(got1, row1)


def test_main_out_is_the_exact_mix_of_the_loops(tmp_path, capsys):
    duration = 15 * SPB + 11
    inp = ramp(duration)
    run = run_inproc(tmp_path, capsys, script(duration, SCENARIO_EVENTS), inp)
    assert run.rc == 0, run.stderr
    row0, row1 = expected_loops(inp)
    np.testing.assert_array_equal(run.wav("main.wav"), expected_mix(duration, row0, row1))
    assert not run.wav("click.wav").any(), "click is off, click.wav must be silent"


def test_monitor_passes_input_frame_i_at_engine_frame_i(tmp_path, capsys):
    duration = 3000
    inp = ramp(duration)
    run = run_inproc(tmp_path, capsys, script(duration, monitor_input=True), inp)
    assert run.rc == 0, run.stderr
    np.testing.assert_array_equal(run.wav("main.wav"), inp)


def test_a_mono_input_is_used_on_every_channel(tmp_path, capsys):
    """docs/engine.md: "A mono input is used on every channel"."""
    duration = 9 * SPB
    mono = ramp(duration, 1)
    run = run_inproc(tmp_path, capsys, script(duration, [rec(0), rec(4 * SPB)],
                                              monitor_input=True), mono)
    assert run.rc == 0, run.stderr
    both = np.repeat(mono, 2, axis=1)
    np.testing.assert_array_equal(run.loop_file(0, 0), both[:L])
    main = run.wav("main.wav")
    assert main.shape == (duration, 2)
    np.testing.assert_array_equal(main[: 4 * SPB], both[: 4 * SPB])


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_channels(tmp_path, capsys, channels):
    duration = 9 * SPB
    inp = ramp(duration, channels)
    run = run_inproc(tmp_path, capsys,
                     script(duration, [rec(0), rec(4 * SPB)], channels=channels), inp)
    assert run.rc == 0, run.stderr
    assert_float_wav(run.out / "main.wav", duration, channels, SR)
    assert_float_wav(run.out / "click.wav", duration, 1, SR)
    np.testing.assert_array_equal(run.loop_file(0, 0), inp[:L])
    main = run.wav("main.wav")
    np.testing.assert_array_equal(main[4 * SPB : 8 * SPB], inp[:L])


@pytest.mark.parametrize("bpb", [4, 3])
def test_click_marks_every_beat_with_an_accent_on_beat_one(tmp_path, capsys, bpb):
    duration = 8 * SPB + 500
    run = run_inproc(tmp_path, capsys, script(duration, click=True, beats_per_bar=bpb),
                     ramp(duration))
    assert run.rc == 0, run.stderr
    click = run.wav("click.wav")
    assert click.ndim == 1 and click.shape[0] == duration
    peaks = []
    for k in range(9):
        f = k * SPB
        assert np.abs(click[f : f + SPB // 4]).max() > 0.01, f"no click at beat {k}"
        if k:
            assert not click[f - SPB // 4 : f].any(), f"click sounds just before beat {k}"
        peaks.append(np.abs(click[f : f + SPB // 4]).max())
    accent = max(peaks)
    for k, peak in enumerate(peaks):
        if k % bpb == 0:
            assert peak == pytest.approx(accent), f"beat {k} should be accented"
        else:
            assert peak < 0.9 * accent, f"beat {k} should not be accented"


def test_tempo_with_a_fractional_beat_length_rounds_beat_frames(tmp_path, capsys):
    """97 BPM at 8 kHz: 4948.45... frames a beat; beat k starts at round(k * spb)."""
    tempo = 97.0
    spb = SR * 60 / tempo
    b3 = round(3 * spb)  # 14845
    duration = b3 * 2 + 500
    inp = ramp(duration)
    doc = script(duration, [rec(0), rec(b3 - 10)], tempo_bpm=tempo)
    run = run_inproc(tmp_path, capsys, doc, inp)
    assert run.rc == 0, run.stderr
    cell = run.status["cells"][0][0]
    assert (cell["beats"], cell["length_frames"]) == (3, b3)
    assert run.status["tempo"] == tempo
    np.testing.assert_array_equal(run.loop_file(0, 0), inp[:b3])
    main = run.wav("main.wav")
    np.testing.assert_array_equal(main[b3 : 2 * b3], inp[:b3])


def test_latency_compensation_shifts_the_recording(tmp_path, capsys):
    """latency_frames = 100: buffer index 0 of a recording is the input 100 frames after it
    started, so the overdub lines up with what the player heard."""
    lat = 100
    duration = 9 * SPB
    inp = ramp(duration)
    run = run_inproc(tmp_path, capsys, script(duration, [rec(0), rec(4 * SPB)],
                                              latency_frames=lat), inp)
    assert run.rc == 0, run.stderr
    np.testing.assert_array_equal(run.loop_file(0, 0), inp[lat : lat + L])
    main = run.wav("main.wav")
    np.testing.assert_array_equal(main[4 * SPB : 8 * SPB], inp[lat : lat + L])


# ---------------------------------------------------------------------------- event timing


def test_command_inside_a_block_applies_at_the_first_boundary_from_the_block_start(
        tmp_path, capsys):
    """Beat 1 (frame 4000) lies inside the block [3968, 4032): a record at 4001 is
    delivered before that block, so it takes effect at 4000; likewise at beat 3 (12000,
    block [11968, 12032)). A record at 4032 (the next block) would wait for beat 2."""
    duration = 4 * SPB
    inp = ramp(duration)
    doc = script(duration, [rec(SPB + 1), rec(3 * SPB + 31)])
    run = run_inproc(tmp_path, capsys, doc, inp)
    assert run.rc == 0, run.stderr
    cell = run.status["cells"][0][0]
    assert cell["beats"] == 2
    np.testing.assert_array_equal(run.loop_file(0, 0), inp[SPB : 3 * SPB])

    doc = script(duration, [rec(SPB + 32), rec(3 * SPB + 31)])  # 4032 starts the next block
    run = run_inproc(tmp_path, capsys, doc, inp, name="late")
    assert run.rc == 0, run.stderr
    assert run.status["cells"][0][0]["beats"] == 1
    np.testing.assert_array_equal(run.loop_file(0, 0), inp[2 * SPB : 3 * SPB])


@pytest.fixture
def spy(monkeypatch):
    """Log, from the engine's side, every block processed, every submit and every MIDI
    input event (absolute frame), whichever way ``ouro offline`` drives the engine."""
    log: dict[str, list[Any]] = {"blocks": [], "submits": [], "midi": [], "skips": []}
    process, submit, skip = Engine.process, Engine.submit, Engine.skip

    def spy_process(self, inputs, main_out, click_out, midi_in=None, midi_out=None):
        start = self.frame
        log["blocks"].append((start, inputs.shape[0]))
        if midi_in is not None:
            for off, data in midi_in.events():
                log["midi"].append((start + off, data))
        return process(self, inputs, main_out, click_out, midi_in, midi_out)

    def spy_submit(self, command, frame=None):
        log["submits"].append((self.frame, frame, command.name))
        return submit(self, command, frame)

    def spy_skip(self, missed):
        log["skips"].append((self.frame, missed))
        return skip(self, missed)

    monkeypatch.setattr(Engine, "process", spy_process)
    monkeypatch.setattr(Engine, "submit", spy_submit)
    monkeypatch.setattr(Engine, "skip", spy_skip)
    return log


def _block_containing(blocks: list[tuple[int, int]], frame: int) -> int:
    starts = [s for s, n in blocks if s <= frame < s + n]
    assert len(starts) == 1, f"frame {frame} is in {len(starts)} processed blocks"
    return starts[0]


def test_events_are_delivered_just_before_the_block_containing_their_frame(
        tmp_path, capsys, spy):
    """Including after an xrun, which shifts the block grid: the first block after the gap
    [1024, 1324) starts at 1324, so blocks then start at 1324 + 64 k."""
    duration = 3 * SPB
    frames = [0, 63, 64, 65, 127, 500, 1023, 1400, 3947, 3948, 4011, 4012, 4075, 8000,
              duration - 1]
    events: list[dict[str, Any]] = []
    for f in frames:
        events.append(cmd(f, "volume", value=0.5))
        if f == 500:
            events.append({"frame": 1000, "xrun": 300})
    events.sort(key=lambda e: e["frame"])
    run = run_inproc(tmp_path, capsys, script(duration, events), ramp(duration))
    assert run.rc == 0, run.stderr
    assert spy["skips"] == [(1024, 300)]
    blocks = spy["blocks"]
    submits = {f: eng_frame for eng_frame, f, name in spy["submits"]}
    assert sorted(submits) == sorted(frames), "every command is submitted once"
    for f in frames:
        start = _block_containing(blocks, f)
        assert submits[f] == start, (
            f"event at frame {f} was submitted with the engine at frame {submits[f]}, "
            f"not just before the block starting at {start}")
    # the grid after the gap
    assert _block_containing(blocks, 4000) == 3948
    assert _block_containing(blocks, 4012) == 4012


def test_record_after_an_xrun_follows_the_shifted_block_grid(tmp_path, capsys):
    """After the gap [1024, 1324) blocks start at 1324 + 64 k: 4012 starts a block, so a
    record at 4012 waits for beat 2 (8000); a record at 4011 is in the block [3948, 4012),
    which contains beat 1 (4000)."""
    duration = 4 * SPB
    inp = ramp(duration)
    for name, first, beats, start in (("in_block", 4011, 2, SPB), ("next", 4012, 1, 2 * SPB)):
        events = [{"frame": 1000, "xrun": 300}, rec(first), rec(3 * SPB + 1)]
        run = run_inproc(tmp_path, capsys, script(duration, events), inp, name=name)
        assert run.rc == 0, run.stderr
        assert run.status["cells"][0][0]["beats"] == beats, name
        np.testing.assert_array_equal(run.loop_file(0, 0), inp[start : 3 * SPB])


def test_midi_events_reach_the_engine_at_their_exact_frame(tmp_path, capsys, spy):
    duration = 2 * SPB
    midi = [(0, [0xF8]), (63, [144, 60, 100]), (64, [128, 60, 0]), (64, [0xB0, 7, 99]),
            (777, [0xC0, 5]), (duration - 1, [0xFC])]
    events = [{"frame": f, "midi": m} for f, m in midi]
    run = run_inproc(tmp_path, capsys, script(duration, events), ramp(duration))
    assert run.rc == 0, run.stderr
    assert sorted(spy["midi"]) == sorted((f, m) for f, m in midi)
    assert run.status["midi_in_events"] == len(midi)


# ---------------------------------------------------------------------------- xruns


@pytest.mark.parametrize(
    ("frame", "missed", "gap_start"),
    [(1000, 300, 1024), (2048, 64, 2048), (0, 100, 0), (2049, 1, 2112), (4990, 1000, 4992)],
    ids=["inside-block", "on-boundary", "at-zero", "one-frame", "past-the-end"],
)
def test_xrun_misses_frames_from_the_first_block_boundary_at_or_after_its_frame(
        tmp_path, capsys, frame, missed, gap_start):
    duration = 5000
    inp = ramp(duration)
    doc = script(duration, [{"frame": frame, "xrun": missed}], monitor_input=True, click=True)
    run = run_inproc(tmp_path, capsys, doc, inp)
    assert run.rc == 0, run.stderr
    assert_float_wav(run.out / "main.wav", duration, 2, SR)
    assert_float_wav(run.out / "click.wav", duration, 1, SR)
    main = run.wav("main.wav")
    gap_end = min(gap_start + missed, duration)
    expected = inp.copy()
    expected[gap_start:gap_end] = 0.0  # never seen, nothing produced: written as zeros
    np.testing.assert_array_equal(main, expected)
    assert not run.wav("click.wav")[gap_start:gap_end].any()
    status = run.status
    assert status["xruns"] == 1
    if gap_end - gap_start == missed:
        assert status["missed_frames"] == missed


def test_after_an_xrun_the_output_is_what_it_would_have_been(tmp_path, capsys):
    """Two loops play, the click is on, the input is monitored; the gap [60160, 65160)
    crosses beat 16 (the bar's beat 1). Outside the gap the output is sample for sample the
    output of the same script without the xrun."""
    duration = 18 * SPB
    inp = ramp(duration)
    over = {"monitor_input": True, "click": True}
    ref = run_inproc(tmp_path, capsys, script(duration, SCENARIO_EVENTS, **over), inp,
                     name="ref")
    events = [*SCENARIO_EVENTS, {"frame": 15 * SPB + 100, "xrun": 5000}]
    got = run_inproc(tmp_path, capsys, script(duration, events, **over), inp, name="xrun")
    assert ref.rc == 0 and got.rc == 0, got.stderr
    g0, g1 = 60160, 65160  # 60100 rounded up to the block grid
    for name in ("main.wav", "click.wav"):
        a, b = ref.wav(name), got.wav(name)
        assert a.shape == b.shape == ((duration, 2) if name == "main.wav" else (duration,))
        np.testing.assert_array_equal(b[:g0], a[:g0], err_msg=name)
        assert not b[g0:g1].any(), name
        np.testing.assert_array_equal(b[g1:], a[g1:], err_msg=name)
    sr, sg = ref.status, got.status
    for key in ("frame", "beat", "beat_in_bar", "next_beat_frame"):
        assert sg[key] == sr[key], key
    assert sg["columns"] == sr["columns"]
    assert sg["cells"] == sr["cells"]
    np.testing.assert_array_equal(got.loop_file(0, 1), ref.loop_file(0, 1))


def test_a_recording_that_ends_in_an_xrun_gap_ends_at_the_right_length(tmp_path, capsys):
    """Row 1 records beats 7..12; the gap [44544, 50544) swallows its end (48000). It
    records silence for the missed frames, turns playing at 48000 and the output after the
    gap is the mix it would have been, with the gap's audio as silence in row 1's loop."""
    duration = 16 * SPB
    inp = ramp(duration)
    g0, g1 = 44544, 50544  # 44500 rounded up to the block grid
    events = [*SCENARIO_EVENTS, {"frame": 11 * SPB + 500, "xrun": g1 - g0}]
    run = run_inproc(tmp_path, capsys, script(duration, events), inp)
    assert run.rc == 0, run.stderr
    row0, _ = expected_loops(inp)
    recorded = inp[ROW1_START:ROW1_END].copy()
    recorded[g0 - ROW1_START :] = 0.0  # recorded during the gap: silence
    row1 = np.roll(recorded, ROW1_OFFSET, axis=0)
    c1 = run.status["cells"][0][1]
    assert (c1["state"], c1["beats"], c1["length_frames"]) == ("playing", SC_BEATS, SC_L)
    assert c1["sync_offset_frames"] == ROW1_OFFSET
    np.testing.assert_array_equal(run.loop_file(0, 1), row1)
    expected = expected_mix(duration, row0, row1)
    expected[g0:g1] = 0.0
    np.testing.assert_array_equal(run.wav("main.wav"), expected)
    assert run.status["missed_frames"] == g1 - g0


# ---------------------------------------------------------------------------- refusals


REFUSED = [rec(0), rec(4 * SPB), cmd(5 * SPB + 10, "play", row=3)]


def test_a_command_the_engine_refuses_is_reported_and_the_run_completes(tmp_path, capsys):
    duration = 6 * SPB
    run = run_inproc(tmp_path, capsys, script(duration, REFUSED), ramp(duration))
    assert run.rc == 0, run.stderr
    assert "Traceback" not in run.stderr
    errors = run.status["command_errors"]
    assert isinstance(errors, list) and len(errors) == 1
    assert "play" in errors[0]
    assert "play" in run.stderr and str(5 * SPB + 10) in run.stderr
    assert_float_wav(run.out / "main.wav", duration, 2, SR)
    assert run.status["cells"][0][0]["state"] == "playing"  # the rest of the script ran
    assert run.status["cells"][0][3]["state"] == "empty"


def test_strict_exits_1_when_a_command_was_refused(tmp_path, capsys):
    duration = 6 * SPB
    run = run_inproc(tmp_path, capsys, script(duration, REFUSED), ramp(duration), "--strict")
    assert run.rc == 1
    assert "play" in run.stderr
    assert "Traceback" not in run.stderr
    assert (run.out / "status.json").is_file(), "--strict still completes the run"
    assert len(run.status["command_errors"]) == 1


def test_strict_exits_0_when_nothing_was_refused(tmp_path, capsys):
    duration = 6 * SPB
    run = run_inproc(tmp_path, capsys, script(duration, REFUSED[:2]), ramp(duration),
                     "--strict")
    assert run.rc == 0, run.stderr
    assert run.status["command_errors"] == []


# ---------------------------------------------------------------------------- subprocesses


SPEC_EXAMPLE = """{
  "sample_rate": 48000, "block_size": 128, "channels": 2,
  "tempo_bpm": 120, "beats_per_bar": 4,
  "declick_ms": 0, "smoothing_ms": 0, "latency_frames": 0,
  "monitor_input": false, "click": true,
  "duration_frames": 480000,
  "events": [
    {"frame": 0,      "cmd": "record", "column": 0, "row": 0},
    {"frame": 96000,  "cmd": "record", "column": 0, "row": 0},
    {"frame": 150000, "cmd": "volume", "column": 0, "row": 0, "value": 0.5},
    {"frame": 200000, "xrun": 5000},
    {"frame": 250000, "midi": [144, 60, 100]}
  ]
}
"""


def test_spec_example_through_the_ouro_console_script(tmp_path):
    rate, duration, loop = 48000, 480000, 96000
    inp = ramp(duration)
    script_path, wav = write_inputs(tmp_path, SPEC_EXAMPLE, inp, rate=rate)
    out = tmp_path / "out"
    proc = run_proc(["offline", str(script_path), "--input", str(wav), "--out", str(out)],
                    tmp_path, console_script=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    run = Run(proc.returncode, proc.stdout, proc.stderr, out)
    assert_float_wav(out / "main.wav", duration, 2, rate)
    assert_float_wav(out / "click.wav", duration, 1, rate)
    assert isinstance(run.json("midi_out.json"), list)

    status = run.status
    assert_status_shape(status, 5, 5)
    assert (status["tempo"], status["sample_rate"], status["block_size"]) == (120, rate, 128)
    cell = status["cells"][0][0]
    assert (cell["state"], cell["beats"], cell["length_frames"]) == ("playing", 4, loop)
    assert cell["volume"] == 0.5
    assert cell["consolidated"] is True
    assert status["xruns"] == 1 and status["missed_frames"] == 5000
    assert status["midi_in_events"] == 1
    assert status["command_errors"] == []

    np.testing.assert_array_equal(run.loop_file(0, 0), inp[:loop])
    main = run.wav("main.wav")
    g0, g1 = 200064, 205064  # the first block boundary >= 200000
    v0, v1 = 149888, 150016  # the block holding the volume event
    f = np.arange(duration)
    expected = inp[(f - loop) % loop].copy()
    expected[:loop] = 0.0
    expected[v1:] *= 0.5
    expected[g0:g1] = 0.0
    np.testing.assert_array_equal(main[:v0], expected[:v0])
    np.testing.assert_array_equal(main[v1:], expected[v1:])
    click = run.wav("click.wav")
    assert not click[g0:g1].any()
    for k in range(duration // 24000):
        b = k * 24000
        if not g0 - 2000 <= b <= g1:
            assert np.abs(click[b : b + 1440]).max() > 0.01, f"no click at beat {k}"


def test_offline_as_python_module_writes_everything(tmp_path):
    duration = 9 * SPB
    inp = ramp(duration)
    script_path, wav = write_inputs(tmp_path, script(duration, [rec(0), rec(4 * SPB)]), inp)
    out = tmp_path / "nested" / "out"
    proc = run_proc(["offline", str(script_path), "--input", str(wav), "--out", str(out)],
                    tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("main.wav", "click.wav", "midi_out.json", "status.json",
                 "session/session.json"):
        assert (out / name).is_file(), name
    assert str(out) in proc.stdout
    assert not list(out.rglob("*.tmp")), "temporary files left behind"
