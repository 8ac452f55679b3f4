"""``ouro offline`` on bad scripts and bad inputs: a non-zero exit and a message on stderr
that names the problem, never a Python traceback.

Every case runs in-process through ``rtcore.cli.main`` (an exception escaping it is what a
user would see as a traceback); a representative subset also runs the real command in a
subprocess (``python -m rtcore.cli offline ...``) and looks for "Traceback" on its stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from rtcore import cli

ROOT = Path(__file__).resolve().parents[2]
SR = 8000
DURATION = 4000


def good_script(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "sample_rate": SR, "block_size": 64, "channels": 2, "tempo_bpm": 120,
        "beats_per_bar": 4, "declick_ms": 0, "smoothing_ms": 0, "latency_frames": 0,
        "monitor_input": False, "click": True, "duration_frames": DURATION,
        "events": [
            {"frame": 0, "cmd": "record", "column": 0, "row": 0},
            {"frame": 2000, "cmd": "volume", "column": 0, "row": 0, "value": 0.5},
        ],
    }
    doc.update(over)
    return doc


def with_event(event: dict[str, Any], **over: Any) -> dict[str, Any]:
    """The good script plus ``event``, in frame order."""
    doc = good_script(**over)
    doc["events"] = sorted([*doc["events"], event], key=lambda e: e.get("frame", 0))
    return doc


def without(key: str) -> dict[str, Any]:
    doc = good_script()
    del doc[key]
    return doc


def write_wav(path: Path, frames: int = DURATION, channels: int = 2, rate: int = SR) -> None:
    rng = np.random.default_rng(1)
    sf.write(path, (rng.standard_normal((frames, channels)) * 0.1).astype(np.float32), rate,
             subtype="FLOAT")


@dataclass
class Outcome:
    returncode: int
    stderr: str


def run_offline(tmp_path: Path, script_text: str | bytes,
                prepare_input: Callable[[Path], Path] | None = None,
                out: Path | None = None, *extra: str, inproc: Any = None) -> Any:
    """Run ``ouro offline``; in-process when ``inproc`` is pytest's capsys fixture."""
    script_path = tmp_path / "script.json"
    if isinstance(script_text, bytes):
        script_path.write_bytes(script_text)
    else:
        script_path.write_text(script_text)
    if prepare_input is None:
        wav = tmp_path / "in.wav"
        write_wav(wav)
    else:
        wav = prepare_input(tmp_path)
    out = out or tmp_path / "out"
    args = ["offline", str(script_path), "--input", str(wav), "--out", str(out), *extra]
    if inproc is None:
        return subprocess.run([sys.executable, "-m", "rtcore.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    inproc.readouterr()
    try:
        rc = cli.main(args)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        # what a user would see: the command dies with a traceback
        cap = inproc.readouterr()
        return Outcome(1, cap.err + traceback.format_exc())
    return Outcome(rc, inproc.readouterr().err)


def assert_refused(proc: subprocess.CompletedProcess[str], *needles: str | tuple[str, ...]
                   ) -> None:
    """Exit 2, no traceback, and each needle (or one of each tuple) in stderr."""
    err = proc.stderr
    assert "Traceback" not in err, f"traceback on bad input:\n{err}"
    # the spec asks for a non-zero exit; docs/engine.md says 2
    assert proc.returncode == 2, f"exit {proc.returncode} on a bad input; stderr: {err!r}"
    assert err.strip(), "no message on stderr"
    low = err.lower()
    for needle in needles:
        options = needle if isinstance(needle, tuple) else (needle,)
        assert any(o.lower() in low for o in options), (
            f"stderr does not name the problem ({' or '.join(options)!r}): {err!r}")


# ---------------------------------------------------------------------------- bad scripts

CMD = {"frame": 100, "cmd": "record", "column": 0, "row": 0}

# (id, script document or raw text, words the message must contain)
BAD_SCRIPTS: list[tuple[str, Any, tuple[Any, ...]]] = [
    ("json-missing-value", '{"duration_frames": 4000,\n  "events": [\n    {"frame": }\n  ]\n}',
     ("line 3", "column")),
    ("json-trailing-comma", '{"duration_frames": 4000,}', ("line 1", "column")),
    ("json-empty-file", "", ("line", "column")),
    ("json-truncated", json.dumps(good_script())[:-5], ("line", "column")),
    ("top-level-list", "[]", (("object", "top level"),)),
    ("top-level-string", '"hello"', (("object", "top level"),)),
    ("top-level-null", "null", (("object", "top level"),)),
    ("unknown-key", good_script(bogus_key=1), ("bogus_key",)),
    ("unknown-key-typo", good_script(tempo=100), ("'tempo'",)),
    ("unknown-command", with_event({**CMD, "cmd": "jump"}), ("jump",)),
    ("command-name-not-string", with_event({**CMD, "cmd": 7}), ("command",)),
    ("missing-row", with_event({"frame": 100, "cmd": "record", "column": 0}),
     ("missing", "row")),
    ("missing-value", with_event({"frame": 100, "cmd": "volume", "column": 0, "row": 0}),
     ("missing", "value")),
    ("unexpected-argument", with_event({**CMD, "value": 1}), ("value",)),
    ("column-out-of-range", with_event({**CMD, "column": 5}), ("column", "5")),
    ("row-out-of-range", with_event({**CMD, "row": 9}), ("row", "9")),
    ("row-negative", with_event({**CMD, "row": -1}), ("row", "-1")),
    ("column-not-int", with_event({**CMD, "column": 1.5}), ("column", "1.5")),
    ("column-of-smaller-matrix", with_event({**CMD, "column": 2}, columns=2),
     ("column", "2")),
    ("volume-negative",
     with_event({"frame": 100, "cmd": "volume", "column": 0, "row": 0, "value": -0.5}),
     ("volume", ("negative", "-0.5"))),
    ("volume-too-large",
     with_event({"frame": 100, "cmd": "volume", "column": 0, "row": 0, "value": 4.5}),
     ("volume", "4.5")),
    ("volume-not-number",
     with_event({"frame": 100, "cmd": "volume", "column": 0, "row": 0, "value": "loud"}),
     ("volume", "loud")),
    ("master-volume-huge", with_event({"frame": 100, "cmd": "master_volume", "value": 1e9}),
     ("master_volume",)),
    ("volume-nan-literal",  # not JSON, but Python's parser takes it: refuse either way
     json.dumps(good_script())[:-2] + ', {"frame": 100, "cmd": "volume", "column": 0, '
     '"row": 0, "value": NaN}]}', (("nan", "line"),)),
    ("tempo-header-too-slow", good_script(tempo_bpm=10), ("tempo", "10")),
    ("tempo-header-too-fast", good_script(tempo_bpm=301), ("tempo", "301")),
    ("tempo-header-infinite", '{"duration_frames": 4000, "tempo_bpm": Infinity}',
     (("tempo", "line"),)),
    ("tempo-command", with_event({"frame": 100, "cmd": "tempo", "value": 1000}),
     ("tempo", "1000")),
    ("header-bad-type", good_script(click="yes"), ("click",)),
    ("block-size-zero", good_script(block_size=0), ("block_size",)),
    ("sample-rate-string", good_script(sample_rate="8000"), ("sample_rate",)),
    ("events-out-of-order",
     good_script(events=[{**CMD, "frame": 300}, {**CMD, "frame": 200}]), ("order",)),
    ("event-past-duration", with_event({**CMD, "frame": DURATION}),
     ("duration", str(DURATION))),
    ("event-far-past-duration", with_event({**CMD, "frame": 10**9}), ("duration",)),
    ("event-frame-negative", good_script(events=[{**CMD, "frame": -1}]), ("frame",)),
    ("event-frame-missing", good_script(events=[{"cmd": "record", "column": 0, "row": 0}]),
     ("frame",)),
    ("event-frame-float", good_script(events=[{**CMD, "frame": 10.5}]), ("frame",)),
    ("event-cmd-and-xrun", with_event({**CMD, "xrun": 100}), ("xrun", "cmd")),
    ("event-midi-and-xrun", with_event({"frame": 100, "xrun": 10, "midi": [248]}),
     ("xrun", "midi")),
    ("event-nothing", with_event({"frame": 100}), (("cmd", "xrun", "midi"),)),
    ("event-not-object", good_script(events=[5]), ("event",)),
    ("events-not-list", good_script(events={"frame": 0}), ("events",)),
    ("xrun-zero", with_event({"frame": 100, "xrun": 0}), ("xrun",)),
    ("xrun-negative", with_event({"frame": 100, "xrun": -5}), ("xrun",)),
    ("xrun-float", with_event({"frame": 100, "xrun": 2.5}), ("xrun",)),
    ("xrun-string", with_event({"frame": 100, "xrun": "100"}), ("xrun",)),
    ("xrun-bool", with_event({"frame": 100, "xrun": True}), ("xrun",)),
    ("midi-byte-too-big", with_event({"frame": 100, "midi": [144, 300, 100]}), ("midi",)),
    ("midi-byte-negative", with_event({"frame": 100, "midi": [144, -1, 100]}), ("midi",)),
    ("midi-no-status-byte", with_event({"frame": 100, "midi": [60, 100]}), ("midi",)),
    ("midi-empty", with_event({"frame": 100, "midi": []}), ("midi",)),
    ("midi-too-long", with_event({"frame": 100, "midi": [144, 60, 100, 1]}), ("midi",)),
    ("midi-not-list", with_event({"frame": 100, "midi": "144 60 100"}), ("midi",)),
    ("midi-float-byte", with_event({"frame": 100, "midi": [144, 60.5, 100]}), ("midi",)),
    ("duration-missing", without("duration_frames"), ("duration_frames",)),
    ("duration-zero", good_script(duration_frames=0, events=[]), ("duration_frames",)),
    ("duration-negative", good_script(duration_frames=-480, events=[]), ("duration_frames",)),
    ("duration-float", good_script(duration_frames=4000.5), ("duration_frames",)),
    ("duration-string", good_script(duration_frames="4000"), ("duration_frames",)),
]


# the cases that also run as a real subprocess
SUBPROCESS_SCRIPTS = {"json-missing-value", "top-level-list", "unknown-key", "unknown-command",
                      "missing-row", "column-out-of-range", "volume-negative",
                      "tempo-header-too-fast", "events-out-of-order", "event-cmd-and-xrun",
                      "xrun-zero", "midi-byte-too-big", "duration-missing"}


def _text(doc: Any) -> str:
    return doc if isinstance(doc, str) else json.dumps(doc, indent=1)


@pytest.mark.parametrize(("doc", "needles"), [pytest.param(d, n, id=i) for i, d, n in BAD_SCRIPTS])
def test_bad_script_is_refused_with_a_message(tmp_path, capsys, doc, needles):
    assert_refused(run_offline(tmp_path, _text(doc), inproc=capsys), *needles)


@pytest.mark.parametrize(("doc", "needles"), [pytest.param(d, n, id=i) for i, d, n in BAD_SCRIPTS
                                              if i in SUBPROCESS_SCRIPTS])
def test_bad_script_is_refused_by_the_real_command(tmp_path, doc, needles):
    assert_refused(run_offline(tmp_path, _text(doc)), *needles)


def test_malformed_json_message_has_line_and_column(tmp_path):
    text = '{\n  "duration_frames": 4000,\n  "events": [\n    {"frame": 0 "cmd": "record"}\n]}'
    proc = run_offline(tmp_path, text)
    assert_refused(proc, "line 4", "column")
    assert "script.json" in proc.stderr, "the message names the script file"


def test_bad_event_message_names_the_event(tmp_path):
    doc = good_script(events=[CMD, {**CMD, "frame": 200}, {**CMD, "frame": 300, "column": 77}])
    proc = run_offline(tmp_path, json.dumps(doc))
    assert_refused(proc, "77", ("event 2", "frame 300"))


def test_script_that_is_not_text_is_refused(tmp_path):
    """Random bytes as the script: not UTF-8, so not JSON."""
    proc = run_offline(tmp_path, np.random.default_rng(3).bytes(2000))
    assert_refused(proc, "script.json")


def test_absurdly_nested_json_is_refused(tmp_path):
    proc = run_offline(tmp_path, "[" * 100_000 + "]" * 100_000)
    assert_refused(proc, "script.json")


def test_missing_script_file(tmp_path):
    wav = tmp_path / "in.wav"
    write_wav(wav)
    proc = subprocess.run(
        [sys.executable, "-m", "rtcore.cli", "offline", str(tmp_path / "nope.json"),
         "--input", str(wav), "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert_refused(proc, "nope.json")


# ---------------------------------------------------------------------------- bad inputs


def _missing(tmp: Path) -> Path:
    return tmp / "nope.wav"


def _random_bytes(tmp: Path) -> Path:
    p = tmp / "noise.wav"
    p.write_bytes(np.random.default_rng(5).bytes(4096))
    return p


def _text_file(tmp: Path) -> Path:
    p = tmp / "notes.wav"
    p.write_text("this is not audio\n")
    return p


def _empty_file(tmp: Path) -> Path:
    p = tmp / "empty.wav"
    p.write_bytes(b"")
    return p


def _directory(tmp: Path) -> Path:
    p = tmp / "adir.wav"
    p.mkdir()
    return p


def _other_rate(tmp: Path) -> Path:
    p = tmp / "cd.wav"
    write_wav(p, rate=44100)
    return p


def _three_channels(tmp: Path) -> Path:
    p = tmp / "three.wav"
    write_wav(p, channels=3)
    return p


BAD_INPUTS = [
    ("missing", _missing, ("nope.wav",)),
    ("random-bytes", _random_bytes, ("noise.wav",)),
    ("text", _text_file, ("notes.wav",)),
    ("empty", _empty_file, ("empty.wav",)),
    ("directory", _directory, ("adir.wav",)),
    ("other-sample-rate", _other_rate, ("cd.wav", "44100")),
    ("channel-mismatch", _three_channels, ("three.wav", "channel")),
]


@pytest.mark.parametrize("subprocess_run", [False, True], ids=["inproc", "subprocess"])
@pytest.mark.parametrize(("prepare", "needles"),
                         [pytest.param(p, n, id=i) for i, p, n in BAD_INPUTS])
def test_bad_input_file_is_refused_with_a_message(tmp_path, capsys, prepare, needles,
                                                  subprocess_run):
    proc = run_offline(tmp_path, json.dumps(good_script()), prepare,
                       inproc=None if subprocess_run else capsys)
    assert_refused(proc, *needles)


def test_stereo_input_for_a_mono_script_is_refused(tmp_path, capsys):
    proc = run_offline(tmp_path, json.dumps(good_script(channels=1)), inproc=capsys)
    assert_refused(proc, "channel")


def test_out_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a directory\n")
    proc = run_offline(tmp_path, json.dumps(good_script()), out=out)
    assert_refused(proc, "taken")


# ---------------------------------------------------------------------------- runtime refusal


def test_refused_command_completes_exit_0_and_strict_exit_1(tmp_path):
    """Play on an empty cell: the engine refuses it at run time; the run still completes."""
    doc = with_event({"frame": 1000, "cmd": "play", "column": 2, "row": 3})
    proc = run_offline(tmp_path, json.dumps(doc))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "play" in proc.stderr
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert len(status["command_errors"]) == 1 and "play" in status["command_errors"][0]

    script_path = tmp_path / "script.json"
    strict = subprocess.run(
        [sys.executable, "-m", "rtcore.cli", "offline", str(script_path), "--input",
         str(tmp_path / "in.wav"), "--out", str(tmp_path / "strict"), "--strict"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert strict.returncode == 1, strict.stderr
    assert "Traceback" not in strict.stderr
    assert "play" in strict.stderr
    assert (tmp_path / "strict" / "status.json").is_file()
