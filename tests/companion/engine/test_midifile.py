"""Standard MIDI Files: exact tick <-> whole-note mapping, round trips, and bad files."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import mido
import pytest

from companion.engine.midifile import export_smf, import_smf
from companion.errors import SourceError
from companion.model.timemap import TempoMap, TempoPoint

TEMPO = [{"at": 0.0, "bpm": 133.0, "ramp": False}, {"at": 2.0, "bpm": 90.5, "ramp": False}]
METER = [{"at": 0.0, "num": 7, "den": 8}, {"at": 1.75, "num": 4, "den": 4}]


def tick_round(x: float, ppq: int = 960) -> float:
    return round(x * 4 * ppq) / (4 * ppq)


def raw_smf(track: bytes, division: int = 96, fmt: int = 0, ntracks: int = 1) -> bytes:
    """A file built byte by byte: what mido would refuse to write."""
    return (b"MThd" + struct.pack(">Lhhh", 6, fmt, ntracks, division)
            + b"MTrk" + struct.pack(">L", len(track)) + track)


EOT = b"\x00\xff\x2f\x00"


def test_round_trip_keeps_notes_ccs_tempo_and_meter(tmp_path: Path) -> None:
    a = {"id": "a", "start": 0.5, "length": 2.0,
         "notes": [{"at": 0.0, "length": 0.25, "pitch": 60, "velocity": 100},
                   {"at": 0.1, "length": 0.333333, "pitch": 64, "velocity": 1},
                   {"at": 0.25, "length": 0.25, "pitch": 60, "velocity": 127},  # repeated
                   {"at": 1.9, "length": 1.0, "pitch": 67, "velocity": 90},  # cut at the end
                   {"at": 2.5, "length": 0.1, "pitch": 69, "velocity": 90}],  # outside
         "cc": [{"at": 0.0, "controller": 7, "value": 100},
                {"at": 0.7, "controller": 64, "value": 127},
                {"at": 3.0, "controller": 64, "value": 0}]}  # outside
    b = {"id": "b", "start": 3.0, "length": 1.0,
         "notes": [{"at": 0.123456789, "length": 0.5, "pitch": 36, "velocity": 70}], "cc": []}
    bass = {"id": "z", "start": 0.0, "length": 1.0,
            "notes": [{"at": 0.0, "length": 1.0, "pitch": 28, "velocity": 80}], "cc": []}
    path = tmp_path / "song.mid"
    export_smf(path, [[a, b], bass], TEMPO, METER, names=["Keys", "Bass"])

    got = import_smf(path)
    assert mido.MidiFile(str(path)).type == 1
    assert got.tempo == TEMPO
    assert got.meter == METER
    assert [i.name for i in got.info] == ["Keys", "Bass"]
    assert [i.channel for i in got.info] == [0, 1]
    keys, low = got.clips
    assert keys["start"] == 0.0 and low["start"] == 0.0

    def ticks(x: float) -> int:
        return round(x * 3840)

    def absolute(clips: list[dict[str, Any]]) -> list[tuple[int, int, int, int]]:
        out = []
        for c in clips:
            for n in c["notes"]:
                if 0 <= n["at"] < c["length"]:
                    on = ticks(c["start"] + n["at"])
                    off = ticks(c["start"] + min(n["at"] + n["length"], c["length"]))
                    out.append((on, off, n["pitch"], n["velocity"]))
        return sorted(out)

    got_keys = sorted((ticks(n["at"]), ticks(n["at"] + n["length"]), n["pitch"],
                       n["velocity"]) for n in keys["notes"])
    assert got_keys == absolute([a, b])
    # positions come back exactly on ticks
    assert all(n["at"] == tick_round(n["at"]) for n in keys["notes"])
    assert len(got_keys) == 5
    assert [(c["at"], c["controller"], c["value"]) for c in keys["cc"]] == [
        (0.5, 7, 100), (tick_round(1.2), 64, 127)]
    assert low["notes"] == [{"at": 0.0, "length": 1.0, "pitch": 28, "velocity": 80}]


def test_ticks_are_whole_notes_whatever_the_ppq_and_tempo(tmp_path: Path) -> None:
    mf = mido.MidiFile(type=0, ticks_per_beat=96)
    tr = mido.MidiTrack()
    tr += [mido.MetaMessage("set_tempo", tempo=250000),
           mido.Message("note_on", note=60, velocity=90, time=48),
           mido.Message("note_on", note=60, velocity=0, time=24),  # a note-off
           mido.MetaMessage("set_tempo", tempo=1_000_000, time=312),
           mido.Message("note_on", note=62, velocity=90, time=0)]  # never released
    tr.append(mido.MetaMessage("end_of_track", time=384))
    mf.tracks.append(tr)
    path = tmp_path / "q.mid"
    mf.save(str(path))
    got = import_smf(path)
    notes = got.clips[0]["notes"]
    assert notes[0] == {"at": 0.125, "length": 0.0625, "pitch": 60, "velocity": 90}
    assert notes[1] == {"at": 1.0, "length": 1.0, "pitch": 62, "velocity": 90}
    assert got.tempo == [{"at": 0.0, "bpm": 240.0, "ramp": False},
                         {"at": 1.0, "bpm": 60.0, "ramp": False}]
    assert got.meter == [{"at": 0.0, "num": 4, "den": 4}]  # the SMF default
    assert got.clips[0]["length"] == 2.0


def test_a_type_0_file_splits_by_channel_and_keeps_programs(tmp_path: Path) -> None:
    mf = mido.MidiFile(type=0, ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr += [mido.MetaMessage("track_name", name="All"),
           mido.Message("program_change", channel=0, program=33),
           mido.Message("note_on", channel=0, note=40, velocity=90),
           mido.Message("note_on", channel=9, note=36, velocity=100),
           mido.Message("control_change", channel=9, control=7, value=80, time=10),
           mido.Message("note_off", channel=0, note=40, time=470),
           mido.Message("note_off", channel=9, note=36)]
    mf.tracks.append(tr)
    path = tmp_path / "t0.mid"
    mf.save(str(path))
    got = import_smf(path)
    assert [(i.name, i.channel, i.program) for i in got.info] == [("All", 0, 33),
                                                                  ("All", 9, None)]
    assert got.clips[0]["notes"][0]["pitch"] == 40 and got.clips[0]["cc"] == []
    assert got.clips[1]["cc"] == [{"at": 10 / 1920, "controller": 7, "value": 80}]
    assert got.clips[0]["id"] != got.clips[1]["id"]


def test_tempo_ramps_export_as_steps(tmp_path: Path) -> None:
    path = tmp_path / "ramp.mid"
    ramp = [{"at": 0.0, "bpm": 100.0, "ramp": True}, {"at": 1.0, "bpm": 200.0, "ramp": False}]
    export_smf(path, [], ramp, [{"at": 0.0, "num": 4, "den": 4}])
    tempo = import_smf(path).tempo
    assert len(tempo) == 65 and tempo[-1] == {"at": 1.0, "bpm": 200.0, "ramp": False}
    bpms = [p["bpm"] for p in tempo]
    assert bpms == sorted(bpms) and 100.0 < bpms[0] < 101.0 and 199.0 < bpms[-2] < 200.0


def test_smpte_files_need_a_tempo_map(tmp_path: Path) -> None:
    # 25 fps, 40 ticks per frame: 1000 ticks per second
    division = struct.unpack(">h", bytes([256 - 25, 40]))[0]
    track = (b"\x00\x90\x3c\x64" + b"\x87\x68\x80\x3c\x00" + EOT)  # on at 0, off at 1000
    path = tmp_path / "smpte.mid"
    path.write_bytes(raw_smf(track, division))
    with pytest.raises(SourceError, match=r"smpte\.mid.*tempo map"):
        import_smf(path)
    got = import_smf(path, TempoMap([TempoPoint(0.0, 120.0)], 48000))
    assert got.clips[0]["notes"] == [{"at": 0.0, "length": 0.5, "pitch": 60, "velocity": 100}]


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "not a readable"),
    (b"RIFF\x00\x00\x00\x04WAVE", "not a readable"),
    (raw_smf(b"\x00\x90\x3c\x64\x10\x80\x3c\x00" + EOT)[:-6], "truncated"),
    (raw_smf(b"\x00\x90\x3c\xff" + EOT), "not a readable"),  # a data byte over 127
    (raw_smf(b"\x00\xff\x51\x03\x00\x00\x00" + EOT), "tempo"),  # 0 µs per quarter
    (raw_smf(b"\x00\xff\x51\x03\x00\x00\x10" + EOT), "tempo"),  # 3.75 million bpm
    (raw_smf(b"\x00\xff\x58\x04\x00\x02\x18\x08" + EOT), "time signature 0/4"),
    (raw_smf(b"\x00\xff\x58\x04\x03\x09\x18\x08" + EOT), "time signature 3/512"),
    (raw_smf(b"\xff\xff\xff\x7f\x90\x3c\x64\x00\x80\x3c\x00" + EOT), "whole notes"),
    (raw_smf(EOT, division=0), "division"),
    (raw_smf(EOT, fmt=2), "type 2"),
])
def test_bad_files_are_source_errors_naming_the_file(tmp_path: Path, content: bytes,
                                                      problem: str) -> None:
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=problem) as e:
        import_smf(path)
    assert str(path) in str(e.value)


def test_a_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        import_smf(tmp_path / "nope.mid")
