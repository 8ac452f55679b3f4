"""Standard MIDI Files in and out, as the contract's MIDI clips, tempo and meter points.

Ticks are musical time: with ``ppq`` ticks per quarter note, tick ``t`` is at
``t / (4 * ppq)`` whole notes, whatever the tempo; the file's tempo and time-signature meta
events become the project's tempo and meter points. Only files timed in SMPTE frames need a
tempo map (their ticks are seconds).

>>> import tempfile, pathlib
>>> clip = {"id": "a", "start": 0.0, "length": 1.0, "cc": [],
...         "notes": [{"at": 0.25, "length": 0.25, "pitch": 60, "velocity": 100}]}
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.mid"
>>> export_smf(path, [clip], [{"at": 0.0, "bpm": 90.0, "ramp": False}],
...            [{"at": 0.0, "num": 3, "den": 4}])
>>> got = import_smf(path)
>>> got.clips[0]["notes"]
[{'at': 0.25, 'length': 0.25, 'pitch': 60, 'velocity': 100}]
>>> got.tempo[0]["bpm"], got.meter
(90.0, [{'at': 0.0, 'num': 3, 'den': 4}])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import mido

from companion.errors import SourceError
from companion.model.timemap import TempoMap

#: Positions past this many whole notes (about 55 hours at 120 bpm) are taken for garbage.
MAX_POSITION_WN = 100_000.0
#: Tempi are rounded to this many decimals on import: a file stores microseconds per
#: quarter, so 133 bpm comes back as 133.00004 without it.
BPM_DECIMALS = 3
#: A tempo ramp is exported as steps this far apart (wn): SMF tempo is piecewise constant.
RAMP_STEP_WN = 1 / 64


@dataclass(frozen=True)
class TrackInfo:
    """What an imported clip came from: the SMF track's name, its MIDI channel (0-15) and
    its first program change (``None`` if it had none), for choosing an instrument."""

    name: str
    channel: int
    program: int | None


class SmfImport(NamedTuple):
    """An imported file: one clip per (track, channel) that has notes or controllers, each at
    ``start`` 0 with ``at`` positions from the file's start; ``info[i]`` describes
    ``clips[i]``. ``tempo`` and ``meter`` are interchange points, a first one at 0 always
    (120 bpm and 4/4, the SMF defaults, when the file says nothing there)."""

    clips: list[dict[str, Any]]
    tempo: list[dict[str, Any]]
    meter: list[dict[str, Any]]
    info: list[TrackInfo]


def _bad(path: Path, problem: str) -> SourceError:
    return SourceError(f"{path}: {problem}")


def import_smf(path: Path | str, tempo_map: TempoMap | None = None) -> SmfImport:
    """Reads a type 0 or 1 Standard MIDI File. ``tempo_map`` is needed only for a file timed
    in SMPTE frames, to turn its seconds into whole notes. Note-ons pair with the next
    note-off (or velocity-0 note-on) of the same channel and pitch, first in first out; a
    note left on ends at its track's end. Program changes go to :class:`TrackInfo`; pitch
    bend, aftertouch and SysEx are not part of a clip and are dropped. A file that cannot be
    read, or whose values make no sense, raises :class:`SourceError` naming it."""
    path = Path(path)
    try:
        mf = mido.MidiFile(str(path))
    except FileNotFoundError as e:
        raise _bad(path, "no such file") from e
    except Exception as e:  # mido raises OSError, EOFError, ValueError, KeyError, ...
        problem = str(e) or type(e).__name__
        if isinstance(e, EOFError):
            problem = "truncated (the file ends inside a chunk)"
        raise _bad(path, f"not a readable Standard MIDI File: {problem}") from e
    if mf.type not in (0, 1):
        raise _bad(path, f"SMF type {mf.type} (independent sequences) is not supported")
    to_wn = _tick_converter(path, mf.ticks_per_beat, tempo_map)

    tempo: dict[int, float] = {}
    meter: dict[int, tuple[int, int]] = {}
    clips: list[dict[str, Any]] = []
    info: list[TrackInfo] = []
    for ti, track in enumerate(mf.tracks):
        name = ""
        tick = 0
        # per channel: notes, ccs, first program; open notes per (channel, pitch)
        notes: dict[int, list[tuple[int, int, int, int]]] = {}
        ccs: dict[int, list[tuple[int, int, int]]] = {}
        programs: dict[int, int] = {}
        open_notes: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for msg in track:
            tick += msg.time
            t = msg.type
            if t == "track_name" and not name:
                name = msg.name
            elif t == "set_tempo":
                if msg.tempo <= 0:
                    raise _bad(path, f"track {ti}: tempo of {msg.tempo} µs per quarter")
                bpm = round(60_000_000 / msg.tempo, BPM_DECIMALS)
                if not 1.0 <= bpm <= 1000.0:
                    raise _bad(path, f"track {ti}: tempo {bpm:g} bpm at tick {tick} is "
                               f"outside 1 to 1000")
                tempo[tick] = bpm
            elif t == "time_signature":
                num, den = msg.numerator, msg.denominator
                if not (1 <= num <= 64 and den in (1, 2, 4, 8, 16, 32, 64)):
                    raise _bad(path, f"track {ti}: time signature {num}/{den} at tick "
                               f"{tick}")
                meter[tick] = (num, den)
            elif t == "note_on" and msg.velocity > 0:
                open_notes.setdefault((msg.channel, msg.note), []).append(
                    (tick, msg.velocity))
            elif t == "note_off" or (t == "note_on" and msg.velocity == 0):
                started = open_notes.get((msg.channel, msg.note))
                if started:
                    on, vel = started.pop(0)
                    notes.setdefault(msg.channel, []).append((on, tick, msg.note, vel))
            elif t == "control_change":
                ccs.setdefault(msg.channel, []).append((tick, msg.control, msg.value))
            elif t == "program_change":
                programs.setdefault(msg.channel, msg.program)
        for (ch, pitch), left in open_notes.items():
            notes.setdefault(ch, []).extend((on, tick, pitch, vel) for on, vel in left)
        for ch in sorted(set(notes) | set(ccs)):
            clip = _clip(path, f"midi-{ti + 1}-{ch + 1}", notes.get(ch, []), ccs.get(ch, []),
                         tick, to_wn)
            clips.append(clip)
            info.append(TrackInfo(name, ch, programs.get(ch)))

    tempo.setdefault(0, 120.0)
    meter.setdefault(0, (4, 4))
    for k in (*tempo, *meter):
        if to_wn(k) > MAX_POSITION_WN:
            raise _bad(path, f"a tempo or meter change at tick {k}, past "
                       f"{MAX_POSITION_WN:g} whole notes")
    return SmfImport(
        clips,
        [{"at": to_wn(k), "bpm": tempo[k], "ramp": False} for k in sorted(tempo)],
        [{"at": to_wn(k), "num": meter[k][0], "den": meter[k][1]} for k in sorted(meter)],
        info)


def _tick_converter(path: Path, division: int,
                    tempo_map: TempoMap | None) -> Callable[[int], float]:
    """Tick to whole notes, from the header's division."""
    if division > 0:
        ppq = division

        def metrical(tick: int) -> float:
            return tick / (4 * ppq)
        return metrical
    if division == 0:
        raise _bad(path, "division of 0 ticks per quarter note")
    # SMPTE: the high byte is minus the frame rate, the low byte ticks per frame
    raw = division & 0xFFFF
    fps, per_frame = 256 - (raw >> 8), raw & 0xFF
    if fps not in (24, 25, 29, 30) or per_frame == 0:
        raise _bad(path, f"SMPTE division of {fps} fps, {per_frame} ticks per frame")
    if tempo_map is None:
        raise _bad(path, "timed in SMPTE frames (seconds): importing it needs a tempo map")
    rate = (29.97 if fps == 29 else fps) * per_frame
    tm = tempo_map

    def smpte(tick: int) -> float:
        return tm.position(tick / rate)
    return smpte


def _clip(path: Path, clip_id: str, notes: list[tuple[int, int, int, int]],
          ccs: list[tuple[int, int, int]], end_tick: int,
          to_wn: Callable[[int], float]) -> dict[str, Any]:
    last = max([end_tick] + [off for _, off, _, _ in notes] + [t + 1 for t, _, _ in ccs])
    length = to_wn(last)
    if not (math.isfinite(length) and length <= MAX_POSITION_WN):
        raise _bad(path, f"{clip_id}: events reach {length:g} whole notes (tick {last})")
    out_notes = [{"at": to_wn(on), "length": to_wn(off) - to_wn(on), "pitch": p,
                  "velocity": v}
                 for on, off, p, v in sorted(notes) if off > on]
    out_cc = [{"at": to_wn(t), "controller": c, "value": v} for t, c, v in ccs]
    return {"id": clip_id, "start": 0.0, "length": length, "notes": out_notes, "cc": out_cc}


def export_smf(path: Path | str, clips: Sequence[dict[str, Any] | Sequence[dict[str, Any]]],
               tempo_points: Sequence[dict[str, Any]], meter_points: Sequence[dict[str, Any]],
               ppq: int = 960, names: Sequence[str] | None = None) -> None:
    """Writes a type 1 file: a conductor track (tempo and meter), then one track per entry
    of ``clips``, which is one clip or a list of clips (one MIDI track's). Track ``k`` plays
    on channel ``k % 16``. The clips follow the contract: notes outside a clip's length are
    left out, notes longer than it end at its end, a clip's ``start`` is added to its
    positions; every position is rounded to the nearest tick (a note keeps at least one).
    Tempo ramps become steps every :data:`RAMP_STEP_WN`."""
    if not 1 <= ppq <= 0x7FFF:
        raise ValueError(f"ppq must be 1 to 32767, got {ppq}")

    def tick(x: float) -> int:
        return math.floor(x * 4 * ppq + 0.5)

    mf = mido.MidiFile(type=1, ticks_per_beat=ppq)
    conductor: list[tuple[int, int, mido.MetaMessage]] = []
    for p in meter_points:
        conductor.append((tick(float(p["at"])), 0, mido.MetaMessage(
            "time_signature", numerator=int(p["num"]), denominator=int(p["den"]),
            clocks_per_click=24, notated_32nd_notes_per_beat=8)))
    for x, bpm in _tempo_steps(tempo_points):
        conductor.append((tick(x), 1, mido.MetaMessage(
            "set_tempo", tempo=max(1, min(0xFFFFFF, round(60_000_000 / bpm))))))
    mf.tracks.append(_track(conductor))
    for k, entry in enumerate(clips):
        group = [entry] if isinstance(entry, dict) else list(entry)
        ch = k % 16
        events: list[tuple[int, int, Any]] = []
        if names is not None and k < len(names):
            events.append((0, -1, mido.MetaMessage("track_name", name=names[k])))
        for clip in group:
            start, length = float(clip["start"]), float(clip["length"])
            end = tick(start + length)
            for c in clip.get("cc", []):
                at = float(c["at"])
                if 0.0 <= at < length and start + at >= 0:
                    events.append((tick(start + at), 1, mido.Message(
                        "control_change", channel=ch, control=int(c["controller"]),
                        value=int(c["value"]))))
            for n in clip.get("notes", []):
                at, nlen = float(n["at"]), float(n["length"])
                if not 0.0 <= at < length or start + at < 0 or nlen <= 0:
                    continue
                on = tick(start + at)
                off = max(on + 1, min(tick(start + at + nlen), end))
                pitch = int(n["pitch"])
                # offs sort before ons at a tick, so a repeated note is not cut short
                events.append((on, 2, mido.Message("note_on", channel=ch, note=pitch,
                                                   velocity=int(n["velocity"]))))
                events.append((off, 0, mido.Message("note_off", channel=ch, note=pitch,
                                                    velocity=0)))
        mf.tracks.append(_track(events))
    mf.save(str(path))


def _tempo_steps(points: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for i, p in enumerate(points):
        x0, b0 = float(p["at"]), float(p["bpm"])
        if not (p.get("ramp") and i + 1 < len(points)):
            out.append((x0, b0))
            continue
        x1, b1 = float(points[i + 1]["at"]), float(points[i + 1]["bpm"])
        steps = max(1, math.ceil((x1 - x0) / RAMP_STEP_WN))
        # each step holds the ramp's tempo at the step's middle
        for s in range(steps):
            xs = x0 + (x1 - x0) * s / steps
            out.append((xs, b0 + (b1 - b0) * (s + 0.5) / steps))
    return out


def _track(events: list[tuple[int, int, Any]]) -> mido.MidiTrack:
    track = mido.MidiTrack()
    now = 0
    for t, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(msg.copy(time=t - now))
        now = t
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track
