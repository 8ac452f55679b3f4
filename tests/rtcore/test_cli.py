"""The ``ouro`` command: ``demo``, ``bench engine``, and argument handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from rtcore import cli

ROOT = Path(__file__).resolve().parents[2]


def ouro_console_script() -> Path:
    exe = Path(sys.executable).parent / ("ouro.exe" if os.name == "nt" else "ouro")
    assert exe.exists(), f"the ouro console script is not installed next to {sys.executable}"
    return exe


def ouro(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed ``ouro`` console script, as a user runs it."""
    return subprocess.run([str(ouro_console_script()), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def assert_float_wav(path: Path, channels: int) -> int:
    assert path.is_file(), path
    info = sf.info(str(path))
    assert info.subtype == "FLOAT"
    assert info.channels == channels
    assert info.frames > 0
    return info.frames


# ---------------------------------------------------------------------------- demo


def test_demo_in_process_writes_wavs_and_says_where(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    frames = assert_float_wav(out / "main.wav", 2)
    assert assert_float_wav(out / "click.wav", 1) == frames
    assert str((out / "main.wav").resolve()) in cap.out
    assert str((out / "click.wav").resolve()) in cap.out
    data, _ = sf.read(out / "main.wav", dtype="float32")
    assert abs(data).max() > 0.01, "the demo is silent"
    status = json.loads((out / "status.json").read_text())
    # the demo's rows 1-3 each hold a four-beat loop; row 2 was recorded from column beat 3
    cells = status["cells"][0]
    assert [c["beats"] for c in cells[:3]] == [4, 4, 4]
    assert cells[1]["sync_offset_frames"] == 2 * 24000
    assert status["command_errors"] == []


def test_demo_through_the_console_script(tmp_path):
    out = tmp_path / "where" / "demo-out"
    proc = ouro("demo", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_float_wav(out / "main.wav", 2)
    assert_float_wav(out / "click.wav", 1)
    assert str((out / "main.wav").resolve()) in proc.stdout


# ---------------------------------------------------------------------------- bench


@pytest.mark.slow
def test_bench_engine_json(tmp_path):
    proc = ouro("bench", "engine", "--json", "--seconds", "0.5", "--block-sizes", "128",
                timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"want one JSON object, got: {proc.stdout!r}"
    report = json.loads(lines[0])
    assert isinstance(report, dict)
    assert set(report["block_sizes"]) == {"128"}
    r = report["block_sizes"]["128"]
    for key in ("p50_us", "p99_us", "max_us", "p99_fraction"):
        assert isinstance(r[key], int | float) and r[key] > 0, (key, r)
    assert r["p50_us"] <= r["p99_us"] <= r["max_us"]
    # p99_fraction is p99 over the block period (128 frames at 48 kHz = 2666.67 us)
    assert r["p99_fraction"] == pytest.approx(r["p99_us"] / (128 / 48000 * 1e6), rel=1e-2)


@pytest.mark.parametrize(
    "args",
    [
        ["--block-sizes", "x"],
        ["--block-sizes", "128,x"],
        ["--block-sizes", ""],
        ["--seconds", "-1"],
        ["--seconds", "0"],
        ["--seconds", "abc"],
        ["--block-sizes", "0"],
        ["--block-sizes", "-64"],
        ["--seconds", "nan"],
    ],
    ids=lambda a: " ".join(a) or "empty",
)
def test_bench_bad_arguments_exit_2_with_a_message(args):
    proc = ouro("bench", "engine", "--json", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert "ouro" in proc.stderr and "error" in proc.stderr.lower(), proc.stderr
    assert proc.stdout == ""


def test_bench_too_short_to_time_one_block_does_not_crash():
    """0.0001 s is less than one 128-frame block: refuse it (2) or time at least one block."""
    proc = ouro("bench", "engine", "--json", "--seconds", "0.0001", "--block-sizes", "128")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 0:
        r = json.loads(proc.stdout)["block_sizes"]["128"]
        assert r["p50_us"] <= r["p99_us"] <= r["max_us"]
    else:
        assert "--seconds" in proc.stderr


def test_bench_arguments_are_checked_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "engine", "--block-sizes", "x"])
    assert exc.value.code == 2
    assert "--block-sizes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "engine", "--seconds", "-1"])
    assert exc.value.code == 2
    assert "--seconds" in capsys.readouterr().err


# ---------------------------------------------------------------------------- arguments


def test_no_command_is_a_usage_error():
    proc = ouro()
    assert proc.returncode == 2
    assert "usage" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["offline", "s.json", "--out", "o"], "--input"),
        (["offline", "s.json", "--input", "i.wav"], "--out"),
        (["offline", "--input", "i.wav", "--out", "o"], "script"),
        (["bench"], "engine"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_missing_or_unknown_arguments_exit_2(capsys, args, word):
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert word in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("offline", "demo", "bench"):
        assert name in out


@pytest.mark.slow
def test_bench_midi_prints_its_figures_and_meets_the_targets():
    proc = ouro("bench", "midi", "--json", "--seconds", "60", "--block-size", "128")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    master, follow, drift = report["master"], report["follower_100_bpm"], report["drift"]
    assert master["tempo_changes"] == 1 and master["ticks"] == master["expected_ticks"]
    assert master["max_error_frames"] == 0
    assert follow["tempo_error_after_2_bars_bpm"] < 0.05
    assert follow["phase_error_max_ms"] < 1.0
    assert follow["settle_bars_after_jump_to_140"] is not None
    assert follow["settle_bars_after_jump_to_140"] < 2
    assert drift["loop"] == {"state": "playing", "beats": 4}
    assert drift["drift_beats"] == 0
    assert drift["phase_error_end_ms"] < 1.0


def test_bench_midi_refuses_a_bad_block_size():
    proc = ouro("bench", "midi", "--block-size", "3")
    assert proc.returncode == 2
    assert "--block-size must be between 16 and 8192, got 3" in proc.stderr


def test_bench_consolidate_prints_its_figures():
    proc = ouro("bench", "consolidate", "--json", "--seconds", "10", "--repeat", "3")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["loop_seconds"] == 10 and report["megabytes"] == 3.8
    assert 0 < report["consolidate_ms_median"] <= report["consolidate_ms_max"]
    assert 0 < report["save_wav_ms_median"] <= report["save_wav_ms_max"]
    proc = ouro("bench", "consolidate", "--seconds", "-1")
    assert proc.returncode == 2 and "--seconds must be a positive number" in proc.stderr
