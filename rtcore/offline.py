"""``ouro offline``: run a performance script through the engine without JACK.

The script format is the spec's (``shared/spec/engine.md``, last section). Events are
delivered before the block that contains their frame; an ``xrun`` event makes the engine
miss frames at the first block boundary at or after its frame.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from rtcore.commands import Command, parse_mapping
from rtcore.config import EngineConfig
from rtcore.engine import Engine
from rtcore.errors import CommandError, ConfigError, ScriptError
from rtcore.ioside import IOSide
from rtcore.midi import MidiBuffer
from rtcore.session import write_json_atomic
from rtcore.store import save_session

MAX_DURATION_FRAMES = 384000 * 3600  # one hour at the highest sample rate


@dataclass
class Event:
    frame: int
    index: int
    command: Command | None = None
    xrun: int = 0
    midi: tuple[int, ...] = ()


@dataclass
class Script:
    config: EngineConfig
    duration_frames: int
    events: list[Event] = field(default_factory=list)


def parse_script(doc: Any, where: str = "script") -> Script:
    """Validate a script document; every problem names the key or event it is in."""
    if not isinstance(doc, Mapping):
        raise ScriptError(f"{where}: the top level must be a JSON object")
    config_keys = {f.name for f in fields(EngineConfig)}
    unknown = sorted(set(doc) - config_keys - {"duration_frames", "events"})
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    try:
        config = EngineConfig.from_mapping({k: doc[k] for k in config_keys if k in doc}, where)
    except ConfigError as exc:
        raise ScriptError(str(exc)) from None
    duration = doc.get("duration_frames")
    if isinstance(duration, bool) or not isinstance(duration, int) or not (
            0 < duration <= MAX_DURATION_FRAMES):
        raise ScriptError(f"{where}: duration_frames must be a positive integer, "
                          f"got {duration!r}")
    raw = doc.get("events", [])
    if not isinstance(raw, list):
        raise ScriptError(f"{where}: events must be a list")
    events: list[Event] = []
    last = 0
    for i, ev in enumerate(raw):
        at = f"{where}: event {i}"
        if not isinstance(ev, Mapping):
            raise ScriptError(f"{at}: must be an object")
        frame = ev.get("frame")
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise ScriptError(f"{at}: frame must be a non-negative integer, got {frame!r}")
        if frame >= duration:
            raise ScriptError(f"{at}: frame {frame} is past duration_frames {duration}")
        if frame < last:
            raise ScriptError(f"{at}: events out of order (frame {frame} after {last})")
        last = frame
        kinds = [k for k in ("cmd", "xrun", "midi") if k in ev]
        if len(kinds) != 1:
            raise ScriptError(f"{at}: needs exactly one of 'cmd', 'xrun', 'midi'")
        body = {k: v for k, v in ev.items() if k != "frame"}
        if kinds[0] == "cmd":
            try:
                cmd = parse_mapping(body, columns=config.columns, rows=config.rows)
            except CommandError as exc:
                raise ScriptError(f"{at} (frame {frame}): {exc}") from None
            events.append(Event(frame, i, command=cmd))
        elif kinds[0] == "xrun":
            n = ev["xrun"]
            if len(body) != 1 or isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise ScriptError(f"{at}: xrun must be a positive frame count alone, got {n!r}")
            events.append(Event(frame, i, xrun=n))
        else:
            msg = ev["midi"]
            if (len(body) != 1 or not isinstance(msg, list) or not 1 <= len(msg) <= 3
                    or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255
                               for b in msg) or msg[0] < 0x80):
                raise ScriptError(f"{at}: midi must be 1 to 3 bytes (0..255) starting with a "
                                  f"status byte, got {msg!r}")
            events.append(Event(frame, i, midi=tuple(msg)))
    return Script(config, duration, events)


def load_script(path: Path) -> Script:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read script: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScriptError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: "
                          f"{exc.msg}") from None
    except RecursionError:
        raise ScriptError(f"{path}: JSON nested too deeply") from None
    return parse_script(doc, str(path))


def load_input(path: Path, config: EngineConfig, frames: int) -> np.ndarray:
    """The input as (frames, channels) float32, padded with silence to ``frames``."""
    if not path.is_file():
        raise ScriptError(f"input file {path} does not exist")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise ScriptError(f"input file {path} is not readable audio: {exc}") from None
    if info.samplerate != config.sample_rate:
        raise ScriptError(f"input file {path} has sample rate {info.samplerate}, "
                          f"the script says {config.sample_rate}")
    data, _ = sf.read(str(path), dtype="float32", always_2d=True, frames=frames)
    if data.shape[1] == 1 and config.channels > 1:
        data = np.repeat(data, config.channels, axis=1)
    elif data.shape[1] != config.channels:
        raise ScriptError(f"input file {path} has {data.shape[1]} channels, "
                          f"the script says {config.channels}")
    out = np.zeros((frames, config.channels), np.float32)
    out[: data.shape[0]] = data
    return out


@dataclass
class Result:
    main: np.ndarray
    click: np.ndarray
    midi_out: list[dict[str, Any]]
    status: dict[str, Any]
    engine: Engine
    command_errors: list[str]


def perform(script: Script, inputs: np.ndarray) -> Result:
    """Run the script through a fresh engine; inputs are (duration, channels) float32."""
    cfg = script.config
    eng = Engine(cfg)
    io = IOSide(eng)
    total = script.duration_frames
    main = np.zeros((total, cfg.channels), np.float32)
    click = np.zeros(total, np.float32)
    midi_in = MidiBuffer()
    midi_out = MidiBuffer()
    midi_log: list[dict[str, Any]] = []
    errors: list[str] = []
    xruns = [ev for ev in script.events if ev.xrun]
    others = [ev for ev in script.events if not ev.xrun]
    xi = ei = 0
    b = 0
    bs = cfg.block_size
    while b < total:
        # an xrun at frame F: the frames from the first block boundary >= F are missed
        gap = 0
        while xi < len(xruns) and xruns[xi].frame <= b:
            gap += xruns[xi].xrun
            xi += 1
        if gap:
            gap = min(gap, total - b)
            eng.skip(gap)
            b += gap
            io.service()
            continue
        n = min(bs, total - b)
        midi_in.clear()
        # deliver every event whose frame lies before the end of this block
        while ei < len(others) and others[ei].frame < b + n:
            ev = others[ei]
            if ev.command is not None:
                try:
                    eng.submit(ev.command, frame=ev.frame)
                except CommandError as exc:
                    errors.append(f"event {ev.index} (frame {ev.frame}): {exc}")
            elif ev.frame >= b and not midi_in.add(ev.frame - b, ev.midi):
                errors.append(f"event {ev.index} (frame {ev.frame}): more than "
                              f"{midi_in.frames.shape[0]} MIDI events in one block; dropped")
            ei += 1
        eng.process(inputs[b : b + n], main[b : b + n], click[b : b + n], midi_in, midi_out)
        for frame, data in midi_out.events():
            midi_log.append({"frame": b + frame, "bytes": data})
        io.service()
        b += n
    status = eng.status()
    status["command_errors"] = errors
    return Result(main, click, midi_log, status, eng, errors)


def run(script_path: Path, input_path: Path, out_dir: Path, strict: bool = False) -> int:
    """The ``ouro offline`` command. Returns the process exit code."""
    try:
        script = load_script(script_path)
        inputs = load_input(input_path, script.config, script.duration_frames)
        if out_dir.exists() and not out_dir.is_dir():
            raise ScriptError(f"output directory {out_dir} exists and is not a directory")
    except ScriptError as exc:
        print(f"ouro offline: {exc}", file=sys.stderr)
        return 2
    result = perform(script, inputs)
    try:
        write_outputs(result, script.config, out_dir)
    except OSError as exc:
        print(f"ouro offline: cannot write to {out_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for err in result.command_errors:
        print(f"ouro offline: refused: {err}", file=sys.stderr)
    print(f"wrote {out_dir}/main.wav, click.wav, midi_out.json, status.json, session/")
    return 1 if strict and result.command_errors else 0


def write_outputs(result: Result, config: EngineConfig, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    sf.write(out_dir / "main.wav", result.main, config.sample_rate, subtype="FLOAT")
    sf.write(out_dir / "click.wav", result.click, config.sample_rate, subtype="FLOAT")
    write_json_atomic(out_dir / "midi_out.json", result.midi_out)
    write_json_atomic(out_dir / "status.json", result.status)
    save_session(result.engine, out_dir / "session")
