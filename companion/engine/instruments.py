"""MIDI tracks' content: a track's MIDI clips played by its instrument, block by block.

:class:`MidiContent` compiles the clips once, at construction, into a sorted array of events
at absolute output frames (every position goes through the caller's ``to_frame``, which
already knows the tempo map and the enclosing metatracks' offset and speed, so nothing here
converts time or accumulates it). :meth:`MidiContent.render` then plays the events into the
caller's buffer, splitting each block at event frames.

Two instruments:

- the built-in ``synth`` (:class:`BuiltinSynth`): polyphonic (64 voices, the oldest stolen),
  sine / saw / square / triangle with PolyBLEP on saw and square, a linear ADSR, rendered by
  a numba kernel. Every sample is a closed-form function of the absolute frame and the
  voice's note-on and release frames, so any block split gives the same samples.
- ``soundfont`` (:class:`SoundFontSynth`): FluidSynth on a SoundFont from the pool, with its
  own reverb and chorus off (effects are the track chain's job) and float output.

>>> import numpy as np
>>> clip = {"id": "c", "start": 0.0, "length": 1.0, "cc": [],
...         "notes": [{"at": 0.0, "length": 0.5, "pitch": 69, "velocity": 127}]}
>>> inst = {"kind": "synth", "wave": "square", "attack": 0.0, "decay": 0.0,
...         "sustain": 1.0, "release": 0.0}
>>> content = MidiContent([clip], inst, lambda x: round(x * 8000), 8000, 256, pool=None)
>>> out = np.zeros((2, 256), dtype=np.float32)
>>> content.render(0, out)
>>> float(out[0, 0])
0.25
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numba
import numpy as np
from numpy.typing import NDArray

from companion.errors import ProjectError, SourceError

#: Peak amplitude of one built-in synth voice at velocity 127, sustain level 1 and CC7 127:
#: four such notes together still peak at 1.0.
VOICE_GAIN = 0.25
#: How many notes the built-in synth plays at once; a 65th steals the oldest voice.
MAX_VOICES = 64
#: FluidSynth's ``synth.gain`` (its default is 0.2): TimGM6mb's piano at velocity 127 then
#: peaks near -20 dBFS (0.1), which leaves headroom for chords of ten notes.
FLUIDSYNTH_GAIN = 0.5
#: FluidSynth renders in blocks of this many frames and applies events at block starts.
FLUID_BLOCK = 64

WAVES = {"sine": 0, "saw": 1, "square": 2, "triangle": 3}

# Event kinds, in the order they apply when several share a frame: releases first (so a note
# repeated at the frame another ends is a new note, not a cut one), then the clip-end pedal
# release, then controllers, then new notes (which therefore see the controllers).
_OFF, _PEDAL_UP, _CC, _ON = 0, 1, 2, 3
_SUSTAIN, _VOLUME, _PAN, _MOD = 64, 7, 10, 1
_NEVER = np.iinfo(np.int64).max


class SourcePaths(Protocol):
    """What :class:`MidiContent` needs from the project's pool: the file a reference names
    (``path(ref)`` is accepted in its place, see :func:`resolve_source`)."""

    def source_path(self, ref: str) -> Path: ...


def resolve_source(ref: Any, pool: Any) -> Path:
    """The file a ``soundfont`` instrument's ``source`` names. ``{"file": "/abs/x.sf2"}`` is a
    file as is (tests, and files not yet imported); anything else asks the pool, through its
    ``source_path(ref)`` or ``path(ref)``. Raises :class:`SourceError` when there is none."""
    if isinstance(ref, dict) and "file" in ref:
        path = Path(ref["file"])
    else:
        lookup = getattr(pool, "source_path", None) or getattr(pool, "path", None)
        if lookup is None:
            raise SourceError(f"soundfont {ref!r}: no pool to find it in")
        try:
            path = Path(lookup(ref))
        except (KeyError, ValueError, OSError) as e:
            raise SourceError(f"soundfont {ref!r}: not in the pool ({e})") from e
    if not path.is_file():
        raise SourceError(f"soundfont {ref!r}: no such file {path}")
    return path


# --- compiling clips to events ------------------------------------------------------------

class Events:
    """A track's events at absolute frames, sorted, computed once.

    Columns: ``frame``, ``kind`` (``_OFF``, ``_PEDAL_UP``, ``_CC``, ``_ON``), ``a`` (pitch or
    controller), ``b`` (velocity or value), ``note`` (a note's id, pairing its on and off).
    ``chase[i, c]`` is controller ``CHASED[c]``'s value before event ``i`` (-1: never set),
    which a locate restores without scanning.
    """

    CHASED = (_VOLUME, _PAN, _SUSTAIN, _MOD, 11)

    def __init__(self, clips: Sequence[dict[str, Any]], to_frame: Callable[[float], int],
                 where: str = "track"):
        rows: list[tuple[int, int, int, int, int, int]] = []  # frame, kind, seq, a, b, note
        note_id = 0
        for ci, clip in enumerate(clips):
            here = f'{where} > clips[{ci}] "{clip.get("id", "")}"'
            start = float(clip["start"])
            length = float(clip["length"])
            if not (math.isfinite(start) and math.isfinite(length)) or length < 0:
                raise ProjectError(f"{here} > length", f"must be a finite non-negative number, "
                                   f"got {length}")
            end_frame = int(to_frame(start + length))
            sustain_down = False
            for cc in sorted(clip.get("cc", []), key=lambda c: float(c["at"])):
                at = float(cc["at"])
                if not 0.0 <= at < length:
                    continue  # outside the clip: not played, like notes
                ctl, val = int(cc["controller"]), int(cc["value"])
                if not (0 <= ctl <= 127 and 0 <= val <= 127):
                    raise ProjectError(f"{here} > cc", f"controller and value must be 0-127, "
                                       f"got {ctl}, {val}")
                f = int(to_frame(start + at))
                if f >= end_frame:
                    continue
                rows.append((f, _CC, len(rows), ctl, val, -1))
                if ctl == _SUSTAIN:
                    sustain_down = val >= 64
            if sustain_down:
                # the contract releases what still sounds at the clip's end, pedal or not
                rows.append((end_frame, _PEDAL_UP, len(rows), _SUSTAIN, 0, -1))
            for note in clip.get("notes", []):
                at, nlen = float(note["at"]), float(note["length"])
                pitch, vel = int(note["pitch"]), int(note["velocity"])
                if not (0 <= pitch <= 127 and 1 <= vel <= 127):
                    raise ProjectError(f"{here} > notes", f"pitch must be 0-127 and velocity "
                                       f"1-127, got {pitch}, {vel}")
                if not (math.isfinite(at) and math.isfinite(nlen)) or nlen < 0:
                    raise ProjectError(f"{here} > notes", f"at and length must be finite, "
                                       f"length non-negative, got {at}, {nlen}")
                if not 0.0 <= at < length:
                    continue
                on = int(to_frame(start + at))
                off = min(int(to_frame(start + min(at + nlen, length))), end_frame)
                if off <= on:
                    continue  # covers no frame: [on, off) is empty
                rows.append((on, _ON, len(rows), pitch, vel, note_id))
                rows.append((off, _OFF, len(rows), pitch, 0, note_id))
                note_id += 1
        rows.sort()
        n = len(rows)
        table = np.array(rows, dtype=np.int64).reshape(n, 6)
        self.frame: NDArray[np.int64] = np.ascontiguousarray(table[:, 0])
        self.kind: NDArray[np.int64] = np.ascontiguousarray(table[:, 1])
        self.a: NDArray[np.int64] = np.ascontiguousarray(table[:, 3])
        self.b: NDArray[np.int64] = np.ascontiguousarray(table[:, 4])
        self.note: NDArray[np.int64] = np.ascontiguousarray(table[:, 5])
        self.count = n
        self.chase = np.full((n + 1, len(self.CHASED)), -1, dtype=np.int64)
        state = [-1] * len(self.CHASED)
        for i in range(n):
            self.chase[i] = state
            if self.kind[i] in (_CC, _PEDAL_UP) and int(self.a[i]) in self.CHASED:
                state[self.CHASED.index(int(self.a[i]))] = int(self.b[i])
        self.chase[n] = state


# --- the built-in synth --------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _poly_blep(t: float, dt: float) -> float:
    # the band-limited step's residual around a discontinuity at phase 0 (t in [0, 1))
    if t < dt:
        x = t / dt
        return x + x - x * x - 1.0
    if t > 1.0 - dt:
        x = (t - 1.0) / dt
        return x * x + x + x + 1.0
    return 0.0


@numba.njit(cache=True, nogil=True)
def _render_voices(mono: np.ndarray, n: int, start: int, active: np.ndarray,
                   on: np.ndarray, off: np.ndarray, inc: np.ndarray, amp: np.ndarray,
                   wave: int, attack: int, decay: int, sustain: float,
                   release: int) -> None:
    """Adds every active voice into ``mono[:n]`` (frames ``start`` ..), voice by voice in
    slot order, so the per-frame sum has the same order whatever the block split. Envelope
    and phase are closed-form in the voice's age: nothing is carried from block to block."""
    for i in range(n):
        mono[i] = 0.0
    for v in range(active.shape[0]):
        if not active[v]:
            continue
        von, voff, dt, g = on[v], off[v], inc[v], amp[v]
        # the level reached at the release, which the release ramps down from
        rel_level = 0.0
        if voff != _NEVER:
            rel_level = _adsr(voff - von, attack, decay, sustain)
        for i in range(n):
            f = start + i
            age = f - von
            if f >= voff:
                r = f - voff
                if r >= release:
                    active[v] = False
                    break
                env = rel_level * (1.0 - r / release)
            else:
                env = _adsr(age, attack, decay, sustain)
            x = age * dt
            t = x - math.floor(x)
            if wave == 0:
                s = math.sin(2.0 * math.pi * t)
            elif wave == 1:
                s = 2.0 * t - 1.0
                # no correction for the note's own start (x < 1): the contract wants the
                # first frame non-zero, and silence before it is not a periodic edge
                if x >= 1.0 or t > 0.5:
                    s -= _poly_blep(t, dt)
            elif wave == 2:
                s = 1.0 if t < 0.5 else -1.0
                if x >= 1.0 or t > 0.5:
                    s += _poly_blep(t, dt)
                t2 = t + 0.5
                s -= _poly_blep(t2 - math.floor(t2), dt)
            else:
                t2 = t + 0.25
                s = 1.0 - 4.0 * abs(t2 - math.floor(t2) - 0.5)
            mono[i] += s * env * g


@numba.njit(cache=True, nogil=True)
def _adsr(age: int, attack: int, decay: int, sustain: float) -> float:
    if age < attack:
        return age / attack
    age -= attack
    if age < decay:
        return 1.0 - (1.0 - sustain) * (age / decay)
    return sustain


class BuiltinSynth:
    """The built-in polyphonic synth: one oscillator per voice through a linear ADSR.

    Per voice: ``VOICE_GAIN * velocity / 127`` times the envelope. The channel's CC7
    (volume, ``(value / 127) ** 2``, starting at 127) and CC10 (pan, the tracks' balance law
    with ``(value - 64) / 63``, starting centred) scale the mix; CC64 holds released notes
    while down. Other controllers are ignored.
    """

    def __init__(self, instrument: dict[str, Any], sample_rate: int, max_block: int,
                 where: str = "instrument"):
        wave = instrument.get("wave", "sine")
        if wave not in WAVES:
            raise ProjectError(f"{where} > wave", f"must be one of {sorted(WAVES)}, got {wave!r}")
        times = {}
        for k in ("attack", "decay", "release"):
            v = float(instrument.get(k, 0.0))
            if not (math.isfinite(v) and 0.0 <= v <= 60.0):
                raise ProjectError(f"{where} > {k}", f"must be 0 to 60 seconds, got {v}")
            times[k] = math.floor(v * sample_rate + 0.5)
        sustain = float(instrument.get("sustain", 1.0))
        if not (math.isfinite(sustain) and 0.0 <= sustain <= 1.0):
            raise ProjectError(f"{where} > sustain", f"must be 0 to 1, got {sustain}")
        self.wave = WAVES[wave]
        self.attack, self.decay, self.release = times["attack"], times["decay"], times["release"]
        self.sustain = sustain
        self.sample_rate = sample_rate
        self.tail_s = times["release"] / sample_rate
        self.active = np.zeros(MAX_VOICES, dtype=np.bool_)
        self.on = np.zeros(MAX_VOICES, dtype=np.int64)
        self.off = np.full(MAX_VOICES, _NEVER, dtype=np.int64)
        self.inc = np.zeros(MAX_VOICES, dtype=np.float64)
        self.amp = np.zeros(MAX_VOICES, dtype=np.float64)
        self.note = np.full(MAX_VOICES, -1, dtype=np.int64)
        self.held = np.zeros(MAX_VOICES, dtype=np.bool_)  # released while the pedal is down
        self.mono = np.zeros(max_block, dtype=np.float64)
        self.freq_inc = np.array([440.0 * 2.0 ** ((p - 69) / 12) / sample_rate
                                  for p in range(128)], dtype=np.float64)
        self.reset()
        # compile (or load from numba's cache) now, not in the first real-time block
        _render_voices(self.mono, 0, 0, self.active, self.on, self.off, self.inc, self.amp,
                       self.wave, self.attack, self.decay, self.sustain, self.release)

    def reset(self) -> None:
        """Silence every voice and return the controllers to their starting values."""
        self.active[:] = False
        self.held[:] = False
        self.off[:] = _NEVER
        self.volume = 1.0
        self.gain_l = self.gain_r = 1.0
        self.pedal = False

    def control(self, controller: int, value: int, frame: int) -> None:
        if controller == _VOLUME:
            self.volume = (value / 127.0) ** 2
        elif controller == _PAN:
            pan = max(-1.0, (value - 64) / 63.0)
            self.gain_l, self.gain_r = min(1.0, 1.0 - pan), min(1.0, 1.0 + pan)
        elif controller == _SUSTAIN:
            down = value >= 64
            if self.pedal and not down:
                for v in range(MAX_VOICES):
                    if self.held[v]:
                        self.held[v] = False
                        self.off[v] = frame
            self.pedal = down

    def note_on(self, pitch: int, velocity: int, note: int, frame: int) -> None:
        free = -1
        oldest = -1
        for v in range(MAX_VOICES):
            # a voice whose release ended by ``frame`` is free even if no block has rendered
            # past its end yet: slot choice must not depend on where blocks were split
            if not self.active[v] or (self.off[v] != _NEVER
                                      and frame >= self.off[v] + self.release):
                free = v
                break
            # steal a releasing voice before a sounding one, the oldest of either
            if oldest < 0 or (self.off[v] != _NEVER, -self.on[v]) > (
                    self.off[oldest] != _NEVER, -self.on[oldest]):
                oldest = v
        v = free if free >= 0 else oldest
        self.active[v] = True
        self.held[v] = False
        self.on[v] = frame
        self.off[v] = _NEVER
        self.inc[v] = self.freq_inc[pitch]
        self.amp[v] = VOICE_GAIN * velocity / 127.0
        self.note[v] = note

    def note_off(self, note: int, pitch: int, frame: int) -> None:
        # each note-off finds its own note's voice, even under a same-pitch overlap
        for v in range(MAX_VOICES):
            if self.active[v] and self.note[v] == note and self.off[v] == _NEVER:
                if self.pedal:
                    self.held[v] = True
                else:
                    self.off[v] = frame

    def render(self, start: int, out: NDArray[np.float32]) -> None:
        n = out.shape[1]
        _render_voices(self.mono, n, start, self.active, self.on, self.off, self.inc,
                       self.amp, self.wave, self.attack, self.decay, self.sustain,
                       self.release)
        g = self.volume
        np.multiply(self.mono[:n], g * self.gain_l, out=out[0], casting="unsafe")
        np.multiply(self.mono[:n], g * self.gain_r, out=out[1], casting="unsafe")


# --- FluidSynth ----------------------------------------------------------------------------

_write_float: Any = None


def _fluid() -> Any:
    """pyfluidsynth, imported on first use (it loads libfluidsynth), and the C function for
    float output, which pyfluidsynth does not wrap (its ``get_samples`` is int16)."""
    global _write_float
    import fluidsynth

    if _write_float is None:
        fn = fluidsynth._fl.fluid_synth_write_float
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                       ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        _write_float = fn
    return fluidsynth


class SoundFontSynth:
    """A SoundFont played by FluidSynth on MIDI channel 0.

    Settings: ``synth.reverb.active`` and ``synth.chorus.active`` 0, ``synth.gain``
    :data:`FLUIDSYNTH_GAIN`, ``synth.min-note-length`` 0 (notes as long as written),
    ``synth.threadsafe-api`` 0 (one thread drives it: no mutex in the render path), no audio
    driver. Output is FluidSynth's float mix, written straight into the caller's buffer.

    FluidSynth computes 64 frames at a time and applies an event at the start of its next
    64-frame block. The synth's block grid is kept on absolute frames (multiples of 64), so an
    event at frame ``f`` sounds from ``ceil(f / 64) * 64``, whatever the block sizes or
    locates: at most 63 frames (1.3 ms at 48 kHz) late, and always the same samples.
    Controllers are passed through as is (FluidSynth's General MIDI defaults: CC7 100, CC10
    64, CC64 and CC1 0 at start), so 7, 10, 64, 1, 11 and the rest act as the SoundFont's
    modulators say.
    """

    def __init__(self, instrument: dict[str, Any], pool: Any, sample_rate: int,
                 max_block: int, where: str = "instrument"):
        fl = _fluid()
        program = int(instrument.get("program", 0))
        bank = int(instrument.get("bank", 0))
        if not 0 <= program <= 127:
            raise ProjectError(f"{where} > program", f"must be 0-127, got {program}")
        if not 0 <= bank <= 16383:
            raise ProjectError(f"{where} > bank", f"must be 0-16383, got {bank}")
        path = resolve_source(instrument.get("source"), pool)
        settings = {"synth.reverb.active": 0, "synth.chorus.active": 0,
                    "synth.min-note-length": 0, "synth.threadsafe-api": 0,
                    "synth.cpu-cores": 1}
        self._synth = fl.Synth(gain=FLUIDSYNTH_GAIN, samplerate=float(sample_rate),
                               channels=16, **settings)
        self._ptr = self._synth.synth
        sfid = self._synth.sfload(str(path))
        if sfid < 0:
            self.close()
            raise SourceError(f"{path}: FluidSynth cannot load it as a SoundFont")
        if self._synth.program_select(0, sfid, bank, program) != 0:
            self.close()
            raise ProjectError(f"{where} > program", f"{path.name} has no preset {program} in "
                               f"bank {bank}")
        self._sfid, self._bank, self._program = sfid, bank, program
        self.sample_rate = sample_rate
        # the longest release in General MIDI banks is a few seconds
        self.tail_s = 3.0
        self._scratch = np.zeros((2, FLUID_BLOCK), dtype=np.float32)
        self._written = 0  # frames FluidSynth has handed out, modulo its block

    def close(self) -> None:
        """Frees FluidSynth's synth and settings."""
        if getattr(self, "_synth", None) is not None:
            self._synth.delete()
            self._synth = None

    def __del__(self) -> None:
        # at interpreter exit pyfluidsynth's module may be gone before this object
        with contextlib.suppress(Exception):
            self.close()

    def _write(self, out: NDArray[np.float32], a: int, b: int) -> None:
        n = b - a
        if n <= 0:
            return
        if out.strides[1] == 4 and out.dtype == np.float32:
            base = out.ctypes.data
            _write_float(self._ptr, n, base + a * 4, 0, 1, base + out.strides[0] + a * 4, 0, 1)
        else:
            done = a
            while done < b:
                m = min(FLUID_BLOCK, b - done)
                s = self._scratch
                _write_float(self._ptr, m, s.ctypes.data, 0, 1, s.ctypes.data + s.strides[0],
                             0, 1)
                out[:, done:done + m] = s[:, :m]
                done += m
        self._written = (self._written + n) % FLUID_BLOCK

    def _discard(self, n: int) -> None:
        while n > 0:
            m = min(n, FLUID_BLOCK)
            self._write(self._scratch, 0, m)
            n -= m

    def reset(self, start: int) -> None:
        """Silence, return the channel to its program and defaults, and put FluidSynth's block
        grid on absolute frames for a render starting at ``start``."""
        # (``system_reset`` leaves sounding voices alone in FluidSynth 2.3.1, see FluidSynth
        # issue #964: cut them here)
        synth = self._synth
        synth.all_sounds_off(0)
        synth.cc(0, 121, 0)  # reset all controllers: pedal, modulation, expression, bend
        synth.cc(0, _VOLUME, 100)  # which 121 leaves, as General MIDI says: set the defaults
        synth.cc(0, _PAN, 64)
        synth.program_select(0, self._sfid, self._bank, self._program)
        # frames FluidSynth rendered before the reset are still buffered: hand them out, so
        # the reset takes effect at the next block, then align the grid with ``start``
        self._discard((-self._written) % FLUID_BLOCK)
        self._discard(start % FLUID_BLOCK)

    def control(self, controller: int, value: int, frame: int) -> None:
        self._synth.cc(0, controller, value)

    def note_on(self, pitch: int, velocity: int, note: int, frame: int) -> None:
        self._synth.noteon(0, pitch, velocity)

    def note_off(self, note: int, pitch: int, frame: int) -> None:
        self._synth.noteoff(0, pitch)

    def render(self, start: int, out: NDArray[np.float32]) -> None:
        self._write(out, 0, out.shape[1])


# --- the track's content -------------------------------------------------------------------

class MidiContent:
    """A MIDI track's content: its clips played by its instrument.

    ``clips`` are the contract's MIDI clips, positions in the track's own whole notes;
    ``to_frame`` maps such a position to an absolute output frame (tempo map and enclosing
    metatracks included). ``instrument`` is ``{"kind": "synth", ...}`` or ``{"kind":
    "soundfont", "source", "program", "bank"}``; a SoundFont's file comes from ``pool`` (see
    :func:`resolve_source`).

    :meth:`render` fills blocks of at most ``max_block`` frames. Consecutive calls
    (``start_frame`` where the last block ended) continue exactly, so any block split gives
    the same samples. Any other ``start_frame`` is a locate: every voice stops, the
    controllers take the values the clips gave them before ``start_frame`` (chased), and
    notes that began before ``start_frame`` do not sound. ``tail_s`` is how long the
    instrument may sound after its last note ends (its release).
    """

    def __init__(self, clips: list[dict[str, Any]], instrument: dict[str, Any],
                 to_frame: Callable[[float], int], sample_rate: int, max_block: int,
                 pool: Any, where: str = "track"):
        self.sample_rate = int(sample_rate)
        self.max_block = int(max_block)
        self.events = Events(clips, to_frame, where)
        kind = instrument.get("kind")
        self.instrument: BuiltinSynth | SoundFontSynth
        if kind == "synth":
            self.instrument = BuiltinSynth(instrument, self.sample_rate, self.max_block,
                                           f"{where} > instrument")
        elif kind == "soundfont":
            self.instrument = SoundFontSynth(instrument, pool, self.sample_rate,
                                             self.max_block, f"{where} > instrument")
        else:
            raise ProjectError(f"{where} > instrument > kind",
                               f"must be 'synth' or 'soundfont', got {kind!r}")
        self.tail_s = self.instrument.tail_s
        self._next = -1  # the frame a contiguous call starts at; -1: none yet
        self._cursor = 0

    @property
    def end_frame(self) -> int:
        """The frame of the last event (where the last note's release starts); the
        instrument may sound ``tail_s`` longer."""
        return int(self.events.frame[-1]) if self.events.count else 0

    def close(self) -> None:
        """Frees the instrument's native resources (FluidSynth)."""
        if isinstance(self.instrument, SoundFontSynth):
            self.instrument.close()

    def _locate(self, start: int) -> None:
        ev = self.events
        self._cursor = int(np.searchsorted(ev.frame, start, side="left"))
        if isinstance(self.instrument, SoundFontSynth):
            self.instrument.reset(start)
        else:
            self.instrument.reset()
        for c, ctl in enumerate(ev.CHASED):
            value = int(ev.chase[self._cursor, c])
            if value >= 0:
                self.instrument.control(ctl, value, start)

    def _apply(self, i: int) -> None:
        ev = self.events
        kind, f = int(ev.kind[i]), int(ev.frame[i])
        if kind == _ON:
            self.instrument.note_on(int(ev.a[i]), int(ev.b[i]), int(ev.note[i]), f)
        elif kind == _OFF:
            self.instrument.note_off(int(ev.note[i]), int(ev.a[i]), f)
        else:
            self.instrument.control(int(ev.a[i]), int(ev.b[i]), f)

    def render(self, start_frame: int, out: NDArray[np.float32]) -> None:
        """Overwrites ``out`` (float32, shape ``(2, n)``, ``n <= max_block``) with the track's
        audio for frames ``[start_frame, start_frame + n)``. Real-time safe for the built-in
        synth (no allocation beyond views, no I/O, no locks)."""
        n = out.shape[1]
        if n > self.max_block:
            raise ValueError(f"block of {n} frames exceeds max_block {self.max_block}")
        if start_frame != self._next:
            self._locate(start_frame)
        ev = self.events
        pos, end = start_frame, start_frame + n
        inst = self.instrument
        while pos < end:
            # every event due at ``pos`` applies before the frame at ``pos`` is rendered
            while self._cursor < ev.count and ev.frame[self._cursor] <= pos:
                self._apply(self._cursor)
                self._cursor += 1
            nxt = int(ev.frame[self._cursor]) if self._cursor < ev.count else end
            seg = min(nxt, end)
            inst.render(pos, out[:, pos - start_frame:seg - start_frame])
            pos = seg
        self._next = end
