"""MIDI tracks' instruments: exact frames, clip edges, block-size independence, locates, the
metatrack mapping, and FluidSynth really sounding."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from companion.engine.instruments import (
    FLUID_BLOCK,
    MAX_VOICES,
    VOICE_GAIN,
    MidiContent,
    resolve_source,
)
from companion.errors import ProjectError, SourceError
from companion.model.timemap import TempoMap, TempoPoint

SR = 48000
SF2 = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
needs_sf2 = pytest.mark.skipif(not SF2.is_file(), reason="TimGM6mb.sf2 is not installed")


def synth(wave: str = "square", attack: float = 0.0, decay: float = 0.0,
          sustain: float = 1.0, release: float = 0.0) -> dict[str, Any]:
    return {"kind": "synth", "wave": wave, "attack": attack, "decay": decay,
            "sustain": sustain, "release": release}


def piano(program: int = 0) -> dict[str, Any]:
    return {"kind": "soundfont", "source": {"file": str(SF2)}, "program": program, "bank": 0}


def clip(notes: list[tuple[float, float, int, int]], start: float = 0.0, length: float = 4.0,
         cc: list[tuple[float, int, int]] | None = None) -> dict[str, Any]:
    return {"id": "c", "start": start, "length": length,
            "notes": [{"at": a, "length": n, "pitch": p, "velocity": v}
                      for a, n, p, v in notes],
            "cc": [{"at": a, "controller": c, "value": v} for a, c, v in cc or []]}


def tempo_frame(bpm: float = 120.0, offset_frames: int = 0) -> Callable[[float], int]:
    tm = TempoMap([TempoPoint(0.0, bpm)], SR)
    return lambda x: tm.frame(x) + offset_frames


def render(content: MidiContent, start: int, frames: int, block: int) -> NDArray[np.float32]:
    out = np.full((2, frames), np.nan, dtype=np.float32)  # NaN shows frames left unwritten
    for s in range(0, frames, block):
        content.render(start + s, out[:, s:min(frames, s + block)])
    return out


def sounding(x: NDArray[np.float32]) -> bool:
    """Every frame of ``x`` is part of a sounding note: a band-limited square passes exactly
    0 at an edge that falls on a sample, so allow a few zeros, never two in a row."""
    zero = x == 0.0
    return bool(x.size) and not np.any(zero[..., 1:] & zero[..., :-1])


def peak_hz(x: NDArray[np.float32]) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * SR / len(x)


# --- the built-in synth ---------------------------------------------------------------------

@pytest.mark.parametrize("block", [1, 37, 509, 4096])
@pytest.mark.parametrize("at", [0.0, 0.1234567, 0.3333, 0.41])
def test_square_attack_0_first_non_zero_sample_is_the_note_on_frame(block: int, at: float):
    to_frame = tempo_frame(offset_frames=4321)  # odd frames, odd blocks
    content = MidiContent([clip([(at, 0.5, 57, 100)])], synth("square"), to_frame, SR, block,
                          None)
    on = to_frame(at)
    start = on - 3 * block - 5 if block < 4096 else 0
    out = render(content, start, on - start + 2000, block)
    i = on - start
    assert np.all(out[:, :i] == 0.0)
    assert np.all(out[:, i] != 0.0)
    # square at full sustain, velocity 100: the first sample is the full level
    assert out[0, i] == np.float32(VOICE_GAIN * 100 / 127)


def test_odd_note_on_frames_are_hit() -> None:
    to_frame = tempo_frame(offset_frames=4321)
    frames = [to_frame(a) for a in (0.0, 0.1234567, 0.3333, 0.41)]
    assert any(f % 2 for f in frames)


@pytest.mark.parametrize("release", [0.0, 0.01])
def test_note_sounding_at_clip_end_is_released_there(release: float):
    to_frame = tempo_frame()
    c = clip([(0.25, 10.0, 60, 127)], start=1.0, length=0.5)
    content = MidiContent([c], synth("square", release=release), to_frame, SR, 509, None)
    end = to_frame(1.5)
    out = render(content, 0, end + 2 * SR // 10, 509)
    assert sounding(out[:, to_frame(1.25):end])
    r = math.floor(release * SR + 0.5)
    if r:
        # the release ramps down from the sustain level over r frames
        assert sounding(out[:, end:end + r - 1])
        assert abs(out[0, end + r - 1]) < 2 * VOICE_GAIN / r
    assert np.all(out[:, end + r:] == 0.0)
    assert content.tail_s == pytest.approx(release)


def test_note_off_is_exclusive_and_exact() -> None:
    to_frame = tempo_frame(offset_frames=77)
    content = MidiContent([clip([(0.1, 0.2, 60, 127)])], synth("square"), to_frame, SR, 37,
                          None)
    out = render(content, 0, SR, 37)
    on, off = to_frame(0.1), to_frame(0.3)
    assert sounding(out[:, on:off]) and np.all(out[:, on] != 0.0)
    assert np.all(out[:, :on] == 0.0) and np.all(out[:, off:] == 0.0)


def test_notes_outside_the_clip_length_are_silent() -> None:
    c = clip([(-0.1, 0.5, 60, 127), (0.5, 0.25, 64, 127), (0.75, 0.1, 67, 127)],
             start=0.5, length=0.5)
    c["cc"] = [{"at": 0.6, "controller": 7, "value": 0}]  # outside too: must not mute
    content = MidiContent([c], synth("saw", release=0.1), tempo_frame(), SR, 4096, None)
    out = render(content, 0, 3 * SR, 4096)
    assert np.all(out == 0.0)
    assert content.events.count == 0


@pytest.mark.parametrize("wave", ["sine", "saw", "square", "triangle"])
def test_builtin_synth_block_size_independence(wave: str):
    notes = [(0.0, 0.5, 60, 100), (0.1, 0.3, 64, 90), (0.1, 0.3, 67, 80), (0.45, 0.2, 72, 127),
             (0.6, 0.01, 48, 60), (0.6, 0.3, 48, 70)]
    cc = [(0.2, 7, 90), (0.3, 64, 127), (0.5, 10, 20), (0.7, 64, 0)]
    inst = synth(wave, attack=0.005, decay=0.05, sustain=0.6, release=0.08)

    def make(block: int) -> MidiContent:
        return MidiContent([clip(notes, start=0.05, length=1.0, cc=cc)], inst,
                           tempo_frame(150.0, 3), SR, block, None)

    frames = SR * 2
    whole = render(make(frames), 0, frames, frames)
    assert np.abs(whole).max() > 0.1
    for block in (37, 509, 4096):
        assert np.array_equal(render(make(block), 0, frames, block), whole), block
    part = SR // 3  # blocks of 1 frame: a shorter stretch keeps it quick
    assert np.array_equal(render(make(1), 0, part, 1), whole[:, :part])


def test_locate_resets_voices_and_chases_controllers() -> None:
    notes = [(0.0, 0.45, 60, 100), (0.5, 0.25, 64, 100)]
    cc = [(0.25, 7, 64)]
    make = lambda: MidiContent([clip(notes, cc=cc)], synth("sine"), tempo_frame(), SR,  # noqa: E731
                               4096, None)
    to_frame = tempo_frame()
    located = make()
    render(located, 0, 3000, 1000)  # note 60 sounding
    locate = to_frame(0.4)
    after = render(located, locate, SR, 4096)
    # the note that began before the locate does not sound; the later one does, at the
    # volume CC7 64 set before the locate
    fresh = render(make(), locate, SR, 4096)
    assert np.array_equal(after, fresh)
    assert np.all(after[:, :to_frame(0.5) - locate] == 0.0)
    contiguous = render(make(), 0, locate + SR, 4096)[:, locate:]
    on = to_frame(0.5) - locate
    assert np.array_equal(after[:, on:], contiguous[:, on:])
    assert np.abs(after).max() < 0.5 * VOICE_GAIN


def test_cc7_volume_scales_by_its_square_law() -> None:
    base = clip([(0.0, 0.5, 69, 127)])
    loud = MidiContent([base], synth("square"), tempo_frame(), SR, 4096, None)
    quiet = MidiContent([clip([(0.0, 0.5, 69, 127)], cc=[(0.0, 7, 64)])], synth("square"),
                        tempo_frame(), SR, 4096, None)
    a, b = render(loud, 0, 4096, 4096), render(quiet, 0, 4096, 4096)
    np.testing.assert_allclose(b, a * (64 / 127) ** 2, rtol=1e-6)


def test_cc10_pan_follows_the_balance_law() -> None:
    content = MidiContent([clip([(0.0, 0.5, 69, 127)], cc=[(0.0, 10, 0)])], synth("square"),
                          tempo_frame(), SR, 4096, None)
    out = render(content, 0, 4096, 4096)
    assert np.all(out[1] == 0.0) and np.abs(out[0]).max() > 0.2


def test_sustain_pedal_holds_released_notes_until_it_lifts() -> None:
    to_frame = tempo_frame()
    c = clip([(0.0, 0.1, 69, 127)], cc=[(0.0, 64, 127), (0.5, 64, 0)])
    out = render(MidiContent([c], synth("square"), to_frame, SR, 509, None), 0, 2 * SR, 509)
    assert sounding(out[:, :to_frame(0.5)])
    assert np.all(out[:, to_frame(0.5):] == 0.0)


def test_pedal_down_at_clip_end_still_releases_there() -> None:
    to_frame = tempo_frame()
    c = clip([(0.0, 0.1, 69, 127)], length=0.3, cc=[(0.0, 64, 127)])
    out = render(MidiContent([c], synth("square"), to_frame, SR, 509, None), 0, 2 * SR, 509)
    assert sounding(out[:, :to_frame(0.3)])
    assert np.all(out[:, to_frame(0.3):] == 0.0)


def test_voices_are_bounded_and_the_oldest_is_stolen() -> None:
    to_frame = tempo_frame()
    first = [(0.0, 2.0, 20, 127)]
    rest = [(0.01 + i * 0.001, 1.0, 30 + i, 1) for i in range(MAX_VOICES)]
    content = MidiContent([clip(first + rest)], synth("square"), to_frame, SR, 4096, None)
    out = render(content, 0, SR, 4096)
    solo = render(MidiContent([clip(first)], synth("square"), to_frame, SR, 4096, None), 0,
                  SR, 4096)
    # the loud first note goes when the 65th note comes: what remains is 64 quiet ones
    after = to_frame(0.01 + (MAX_VOICES - 1) * 0.001) + 1
    assert np.abs(out[0, after:]).max() < 0.75 * np.abs(solo[0, after:]).max()
    assert np.abs(out[0, after:]).max() <= MAX_VOICES * VOICE_GAIN / 127 + 1e-6


def test_metatrack_offset_and_speed_move_events_but_not_pitch() -> None:
    tm = TempoMap([TempoPoint(0.0, 100.0)], SR)
    offset, speed = 1.5, 2.0

    def child_to_frame(c: float) -> int:  # a child position inside the metatrack
        return tm.frame(offset + c / speed)

    c = clip([(0.5, 1.0, 69, 127)], start=0.25)
    content = MidiContent([c], synth("sine"), child_to_frame, SR, 4096, None)
    frames = tm.frame(offset + 3.0)
    out = render(content, 0, frames, 4096)
    on, off = tm.frame(offset + 0.75 / speed), tm.frame(offset + 1.75 / speed)
    nz = np.nonzero(out[0])[0]
    # a sine starts at phase 0, so its first non-zero sample is the one after note-on
    assert nz[0] == on + 1 and nz[-1] == off - 1
    assert off - on == pytest.approx(tm.frame(0.5), abs=1)  # half the length at speed 1
    assert peak_hz(out[0, on:off]) == pytest.approx(440.0, abs=SR / (off - on))


def test_tempo_changes_move_events_without_accumulating() -> None:
    tm = TempoMap([TempoPoint(0.0, 90.0, True), TempoPoint(8.0, 180.0)], SR)
    notes = [(i * 0.25, 0.1, 60, 100) for i in range(40)]
    content = MidiContent([clip(notes, length=11.0)], synth("square"), tm.frame, SR, 1000,
                          None)
    ons = content.events.frame[content.events.kind == 3]
    assert list(ons) == [tm.frame(i * 0.25) for i in range(40)]


def test_bad_instruments_are_refused() -> None:
    c = [clip([(0.0, 0.5, 60, 100)])]
    with pytest.raises(ProjectError, match="kind"):
        MidiContent(c, {"kind": "theremin"}, tempo_frame(), SR, 64, None)
    with pytest.raises(ProjectError, match="wave"):
        MidiContent(c, synth("noise"), tempo_frame(), SR, 64, None)
    with pytest.raises(ProjectError, match="attack"):
        MidiContent(c, synth(attack=-1.0), tempo_frame(), SR, 64, None)
    with pytest.raises(ProjectError, match="velocity"):
        MidiContent([clip([(0.0, 0.5, 60, 0)])], synth(), tempo_frame(), SR, 64, None)
    content = MidiContent(c, synth(), tempo_frame(), SR, 64, None)
    with pytest.raises(ValueError, match="max_block"):
        content.render(0, np.zeros((2, 65), dtype=np.float32))


# --- SoundFonts through FluidSynth --------------------------------------------------------

@needs_sf2
def test_soundfont_piano_sounds_at_the_right_pitch() -> None:
    content = MidiContent([clip([(0.0, 1.0, 69, 110)])], piano(), tempo_frame(), SR, 4096,
                          None)
    out = render(content, 0, SR, 4096)
    assert np.abs(out).max() > 0.01
    assert peak_hz(out[0]) == pytest.approx(440.0, abs=2.0)
    content.close()


@needs_sf2
def test_soundfont_events_land_on_the_64_frame_grid() -> None:
    to_frame = tempo_frame(offset_frames=1001)
    content = MidiContent([clip([(0.0, 0.5, 69, 110)])], piano(), to_frame, SR, 509, None)
    out = render(content, 0, SR, 509)
    grid = -(-to_frame(0.0) // FLUID_BLOCK) * FLUID_BLOCK
    assert np.all(out[:, :grid] == 0.0)
    assert np.abs(out[:, grid:grid + 2000]).max() > 0.0
    content.close()


@needs_sf2
def test_soundfont_block_size_independence() -> None:
    notes = [(0.0, 0.5, 60, 100), (0.1, 0.3, 64, 90), (0.13, 0.3, 67, 80),
             (0.45, 0.2, 72, 127), (0.62, 0.2, 48, 70)]
    cc = [(0.2, 7, 90), (0.3, 64, 127), (0.4, 10, 20), (0.5, 1, 100), (0.7, 64, 0)]

    def make(block: int) -> MidiContent:
        return MidiContent([clip(notes, start=0.05, length=1.0, cc=cc)], piano(),
                           tempo_frame(150.0, 3), SR, block, None)

    frames = SR * 2
    whole = render(make(frames), 0, frames, frames)
    assert np.abs(whole).max() > 0.01
    for block in (37, 509, 4096):
        assert np.array_equal(render(make(block), 0, frames, block), whole), block
    part = SR // 2
    assert np.array_equal(render(make(1), 0, part, 1), whole[:, :part])


@needs_sf2
def test_soundfont_locate_starts_clean() -> None:
    to_frame = tempo_frame()
    notes = [(0.0, 1.0, 60, 100), (0.625, 0.25, 64, 100)]
    make = lambda: MidiContent([clip(notes, cc=[(0.25, 7, 64)])], piano(), to_frame, SR,  # noqa: E731
                               4096, None)
    located = make()
    render(located, 0, 5000, 1000)
    start = to_frame(0.5)
    after = render(located, start, SR, 4096)
    fresh = render(make(), start, SR, 4096)
    on = to_frame(0.625) - start
    assert np.all(after[:, :on] == 0.0)  # note 60 began before the locate: not heard
    assert np.abs(after).max() > 0.005
    # FluidSynth's reused voice slot differs from a fresh one by a trace in its first block
    np.testing.assert_allclose(after, fresh, atol=1e-4)


@needs_sf2
def test_soundfont_has_no_reverb_tail() -> None:
    to_frame = tempo_frame()
    content = MidiContent([clip([(0.0, 0.125, 76, 127)], length=0.125)], piano(), to_frame,
                          SR, 4096, None)
    out = render(content, 0, 4 * SR, 4096)
    # once the voice's own release is over, nothing rings on (reverb and chorus are off)
    assert np.all(out[:, to_frame(0.125) + int(content.tail_s * SR):] == 0.0)


def test_soundfont_sources_resolve_through_the_pool(tmp_path: Path) -> None:
    font = tmp_path / "x.sf2"
    font.write_bytes(b"RIFF")

    class FakePool:
        def path(self, ref: str) -> Path:
            if ref != "sha256:ab":
                raise KeyError(ref)
            return font

    assert resolve_source("sha256:ab", FakePool()) == font
    assert resolve_source({"file": str(font)}, None) == font
    with pytest.raises(SourceError, match="not in the pool"):
        resolve_source("sha256:cd", FakePool())
    with pytest.raises(SourceError, match="no such file"):
        resolve_source({"file": str(tmp_path / "missing.sf2")}, None)


def test_a_file_that_is_not_a_soundfont_is_a_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"not a soundfont at all")
    inst = {"kind": "soundfont", "source": {"file": str(bad)}, "program": 0}
    with pytest.raises(SourceError, match=r"bad\.sf2"):
        MidiContent([clip([])], inst, tempo_frame(), SR, 64, None)


@needs_sf2
def test_a_missing_preset_is_a_project_error_naming_the_track() -> None:
    inst = {**piano(), "bank": 5}
    with pytest.raises(ProjectError, match=r'tracks\[2\] "Keys" > instrument > program'):
        MidiContent([clip([])], inst, tempo_frame(), SR, 64, None, 'tracks[2] "Keys"')


def test_bad_notes_name_the_clip() -> None:
    bad = clip([(0.0, -1.0, 60, 100)])
    with pytest.raises(ProjectError, match=r'tracks\[0\] "Lead" > clips\[0\] "c" > notes'):
        MidiContent([bad], synth(), tempo_frame(), SR, 64, None, 'tracks[0] "Lead"')
