"""The catalog of effect kinds: their parameters (default, range, unit, meaning) and the check
that turns an effect as a project states it into its normalized form.

Pure data: nothing here imports an audio library, so the model checks effects without the
engine. ``companion/engine/effects.py`` builds the processors; ``docs/effects.md`` describes
them for users.

>>> check_effect({"id": "fx1", "kind": "gain", "params": {"db": -6}}, "tracks[0] effects[0]")
{'id': 'fx1', 'kind': 'gain', 'params': {'db': -6.0}, 'bypass': False}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from companion.errors import ProjectError

__all__ = ["KINDS", "EffectKind", "Param", "check_effect", "param_names"]


@dataclass(frozen=True)
class Param:
    """One parameter: a number in ``[min, max]`` (``choices`` empty), or one of ``choices``
    (a string; ``min``/``max`` unused)."""

    default: float | str
    min: float
    max: float
    unit: str
    meaning: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class EffectKind:
    """An effect kind: what it does, in one line, and its parameters in display order."""

    meaning: str
    params: Mapping[str, Param]


def _p(default: float, lo: float, hi: float, unit: str, meaning: str) -> Param:
    return Param(float(default), float(lo), float(hi), unit, meaning)


_FREQ = (20.0, 20000.0)
_Q = (0.1, 18.0)

#: Every effect kind, by name.
KINDS: Mapping[str, EffectKind] = {
    "gain": EffectKind("Exact gain: the signal times 10^(db/20).", {
        "db": _p(0, -120, 36, "dB", "gain in decibels; 0 passes the signal unchanged"),
    }),
    "eq3": EffectKind("Three-band equalizer: low shelf, peaking mid, high shelf.", {
        "low_freq_hz": _p(100, 20, 2000, "Hz", "corner of the low shelf"),
        "low_gain_db": _p(0, -24, 24, "dB", "boost or cut below the low corner"),
        "mid_freq_hz": _p(1000, 40, 16000, "Hz", "centre of the mid band"),
        "mid_gain_db": _p(0, -24, 24, "dB", "boost or cut around the mid centre"),
        "mid_q": _p(0.7071, *_Q, "", "width of the mid band: higher is narrower"),
        "high_freq_hz": _p(8000, 500, 20000, "Hz", "corner of the high shelf"),
        "high_gain_db": _p(0, -24, 24, "dB", "boost or cut above the high corner"),
    }),
    "highpass": EffectKind("Resonant 12 dB/octave high-pass filter (removes lows).", {
        "cutoff_hz": _p(80, *_FREQ, "Hz", "frequency below which the signal is cut"),
        "q": _p(0.7071, *_Q, "", "resonance at the cutoff; 0.707 is flat (Butterworth)"),
    }),
    "lowpass": EffectKind("Resonant 12 dB/octave low-pass filter (removes highs).", {
        "cutoff_hz": _p(8000, *_FREQ, "Hz", "frequency above which the signal is cut"),
        "q": _p(0.7071, *_Q, "", "resonance at the cutoff; 0.707 is flat (Butterworth)"),
    }),
    "compressor": EffectKind("Dynamic range compressor with make-up gain.", {
        "threshold_db": _p(0, -60, 0, "dB", "level above which the gain is reduced"),
        "ratio": _p(1, 1, 50, ":1", "input dB over threshold per output dB over it"),
        "attack_ms": _p(1, 0.01, 500, "ms", "how fast the gain reduction sets in"),
        "release_ms": _p(100, 1, 5000, "ms", "how fast it recovers"),
        "makeup_db": _p(0, 0, 36, "dB", "gain after compression"),
    }),
    "limiter": EffectKind("Brick-wall limiter: peaks never pass the ceiling (5 ms look-ahead).", {
        "ceiling_db": _p(-1, -60, 0, "dB", "level the output never exceeds"),
        "release_ms": _p(100, 1, 5000, "ms", "how fast the gain recovers after a peak"),
    }),
    "noise_gate": EffectKind("Noise gate: attenuates the signal while it is quiet.", {
        "threshold_db": _p(-60, -100, 0, "dB", "level under which the gate closes"),
        "ratio": _p(10, 1, 100, ":1", "how strongly it attenuates below the threshold"),
        "attack_ms": _p(1, 0.01, 500, "ms", "how fast the gate opens"),
        "release_ms": _p(100, 1, 5000, "ms", "how fast the gate closes"),
    }),
    "delay": EffectKind("Echo: a delay line with feedback, dry and wet mixed.", {
        "time_s": _p(0.5, 0, 10, "s", "time between echoes"),
        "feedback": _p(0, 0, 0.99, "", "share of each echo fed back: more repeats"),
        "mix": _p(0.5, 0, 1, "", "0 dry only, 1 echoes only"),
    }),
    "reverb": EffectKind("Algorithmic room reverb (Freeverb).", {
        "room_size": _p(0.5, 0, 1, "", "size of the room: length of the tail"),
        "damping": _p(0.5, 0, 1, "", "how quickly high frequencies die away"),
        "wet_level": _p(0.33, 0, 1, "", "level of the reverberated signal"),
        "dry_level": _p(0.4, 0, 1, "", "level of the direct signal"),
        "width": _p(1, 0, 1, "", "stereo width of the tail"),
        "freeze": _p(0, 0, 1, "", "above 0.5 holds the tail forever"),
    }),
    "chorus": EffectKind("Chorus: copies with a swept short delay, mixed in.", {
        "rate_hz": _p(1, 0, 20, "Hz", "speed of the sweep"),
        "depth": _p(0.25, 0, 1, "", "amount of the sweep"),
        "centre_delay_ms": _p(7, 1, 100, "ms", "delay the sweep centres on"),
        "feedback": _p(0, -0.95, 0.95, "", "share of the delayed signal fed back"),
        "mix": _p(0.5, 0, 1, "", "0 dry only, 1 effect only"),
    }),
    "phaser": EffectKind("Phaser: swept all-pass filters, mixed in.", {
        "rate_hz": _p(1, 0, 20, "Hz", "speed of the sweep"),
        "depth": _p(0.5, 0, 1, "", "amount of the sweep"),
        "centre_frequency_hz": _p(1300, *_FREQ, "Hz", "frequency the sweep centres on"),
        "feedback": _p(0, -0.95, 0.95, "", "resonance of the notches"),
        "mix": _p(0.5, 0, 1, "", "0 dry only, 1 effect only"),
    }),
    "distortion": EffectKind("Overdrive: gain into a tanh soft clipper.", {
        "drive_db": _p(25, 0, 60, "dB", "gain before the clipper: more is dirtier"),
    }),
    "clipping": EffectKind("Hard clipper: cuts the waveform at the threshold.", {
        "threshold_db": _p(-6, -60, 0, "dB", "level the waveform is cut at"),
    }),
    "bitcrush": EffectKind("Bit crusher: quantizes to fewer bits.", {
        "bit_depth": _p(8, 1, 32, "bits", "resolution kept: fewer is grittier"),
    }),
    "ladder": EffectKind("Moog-style ladder filter with drive.", {
        "mode": Param("lpf24", 0, 0, "", "lpf12/lpf24 low-pass, hpf12/hpf24 high-pass, "
                      "bpf12/bpf24 band-pass",
                      ("lpf12", "hpf12", "bpf12", "lpf24", "hpf24", "bpf24")),
        "cutoff_hz": _p(1000, *_FREQ, "Hz", "cutoff frequency"),
        "resonance": _p(0, 0, 1, "", "emphasis at the cutoff; near 1 it sings"),
        "drive": _p(1, 1, 10, "", "saturation before the filter"),
    }),
}

_TOP = ("id", "kind", "params", "bypass")


def param_names(kind: str) -> tuple[str, ...]:
    """The parameter names of ``kind``, in display order (KeyError for an unknown kind).

    >>> param_names("gain")
    ('db',)
    """
    return tuple(KINDS[kind].params)


def _number(value: Any, where: str, p: Param) -> float:
    # a JSON bool is an int to Python; a musician's "true" is not 1 dB
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProjectError(where, f"{value!r} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise ProjectError(where, f"{value!r} is not a finite number")
    if not p.min <= v <= p.max:
        unit = f" {p.unit}" if p.unit and p.unit != ":1" else ""
        raise ProjectError(where, f"{v:g} is out of range {p.min:g}..{p.max:g}{unit}")
    return v


def check_param(kind: str, name: str, value: Any, where: str) -> float | str:
    """Check one value of parameter ``name`` of ``kind`` (for automation and edits); returns
    it normalized (a float, or the choice's string). ``where`` names the parameter."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ProjectError(where, f"unknown effect kind {kind!r}")
    p = spec.params.get(name)
    if p is None:
        raise ProjectError(where, f"{kind} has no parameter {name!r} (it has: "
                           f"{', '.join(spec.params)})")
    if p.choices:
        if not isinstance(value, str) or value not in p.choices:
            raise ProjectError(where, f"{value!r} is not one of {', '.join(p.choices)}")
        return value
    return _number(value, where, p)


def check_effect(spec: Any, where: str) -> dict[str, Any]:
    """Check an effect as a project states it and return it normalized:
    ``{"id", "kind", "params": {every parameter, defaults filled in}, "bypass"}``.

    Raises :class:`ProjectError` whose ``where`` extends ``where`` with the field at fault
    (``... > params > ratio``) for an unknown kind, field or parameter, a wrong type, a
    non-finite number or a value out of range.
    """
    if not isinstance(spec, Mapping):
        raise ProjectError(where, f"an effect is an object, not {type(spec).__name__}")
    for key in spec:
        if key not in _TOP:
            raise ProjectError(f"{where} > {key}", f"unknown field (an effect has: "
                               f"{', '.join(_TOP)})")
    eid = spec.get("id")
    if not isinstance(eid, str) or not eid:
        raise ProjectError(f"{where} > id", f"{eid!r} is not a non-empty string")
    if "." in eid:
        # automation names a parameter as "<effect id>.<param>"
        raise ProjectError(f"{where} > id", f"{eid!r} must not contain '.'")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ProjectError(f"{where} > kind", f"unknown effect kind {kind!r} (known: "
                           f"{', '.join(KINDS)})")
    bypass = spec.get("bypass", False)
    if not isinstance(bypass, bool):
        raise ProjectError(f"{where} > bypass", f"{bypass!r} is not true or false")
    given = spec.get("params", {})
    if not isinstance(given, Mapping):
        raise ProjectError(f"{where} > params", f"params is an object, not "
                           f"{type(given).__name__}")
    for name in given:
        if name not in KINDS[kind].params:
            raise ProjectError(f"{where} > params > {name}", f"{kind} has no parameter "
                               f"{name!r} (it has: {', '.join(KINDS[kind].params)})")
    params: dict[str, float | str] = {}
    for name, p in KINDS[kind].params.items():
        params[name] = (check_param(kind, name, given[name], f"{where} > params > {name}")
                        if name in given else p.default)
    return {"id": eid, "kind": kind, "params": params, "bypass": bypass}
