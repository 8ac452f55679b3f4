"""``ouro bench render`` runs end to end and prints its figures (the figures themselves are
judged when the bench is run on a quiet machine, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

OURO = str(Path(sys.executable).parent / "ouro")


@pytest.mark.slow
def test_the_render_bench_prints_its_figures(tmp_path: Path) -> None:
    proc = subprocess.run([OURO, "bench", "render", "--only", "play,drift,edit",
                           "--play-seconds", "0.5", "--hours", "0.002", "--clips", "40",
                           "--edits", "50", "--work", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["play"]["tracks"] == 32 and report["play"]["p99_us"] > 0
    assert report["drift"]["differing_samples_last_block"] == 0
    assert report["edit"]["clips"] == 40 and report["edit"]["bytes_after_close"] > 0


def test_bad_bench_arguments_are_named(tmp_path: Path) -> None:
    proc = subprocess.run([OURO, "bench", "render", "--only", "mix,nothing"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown part(s) ['nothing']" in proc.stderr
