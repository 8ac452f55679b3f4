"""Effect processors: one :class:`Effect` per effect of a project's chain, built from its
normalized spec (``companion.model.effect_kinds.check_effect``).

Every effect processes stereo float32 blocks in place, keeps its state from block to block,
and gives the same samples whatever the block sizes (1 frame, odd sizes, ``max_block``): the
renderer's promise that rendering in blocks equals rendering in one go rests on it, and the
tests check it for every kind.

Who does the work:

- ``gain``: ours, exact (each sample is the float32 nearest ``x * 10^(db/20)``).
- ``eq3``, ``highpass``, ``lowpass``: RBJ-cookbook biquads, run in transposed direct form II
  (compiled with numba) in double precision with the filter state kept between blocks.
  Pedalboard's own ``HighpassFilter``/``LowpassFilter`` are first-order (6 dB/octave) with
  no resonance; a biquad in double precision is both what a mixer's filter sounds like and
  trivially block-exact.
- everything else: pedalboard (JUCE's DSP). Pedalboard re-prepares a plugin (losing its
  state) whenever a call brings a larger block or another channel count than the last
  preparation, and a ``(2, 1)`` or ``(2, 2)`` block is ambiguous to its layout detection;
  so each plugin is prepared once at creation with ``max_block`` stereo frames and its
  channel layout cached, after which any block of ``n <= max_block`` frames is processed
  with the state kept. Only the limiter has latency (its look-ahead); priming fills its
  delay line, so every call returns as many frames as it was given, ``latency_frames`` late.

An :class:`Effect` belongs to one thread (the renderer's); ``set_param`` is called between
blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numba
import numpy as np
import pedalboard as pb
from numpy.typing import NDArray

from companion.model.effect_kinds import KINDS, check_param

__all__ = ["Effect", "create_effect"]

#: The decay a tail is measured to: 80 dB below the input, well under a 24-bit mix's noise.
_TAIL_DB = 80.0
#: What a frozen reverb reports as its tail: it rings forever, but an export has to end.
FROZEN_TAIL_S = 60.0


class Effect:
    """One effect of a chain, ready to process blocks.

    ``process(block)`` works in place on ``block`` (``(2, n)`` float32, ``n <= max_block``).
    ``latency_frames``: how many frames late the effect's output is (the renderer shifts it
    back): the limiter's look-ahead (5 ms), 0 for every other kind. ``tail_s``: how long the
    effect keeps sounding after its input falls silent, for the current parameters (not
    counting the latency). ``bypass``: when true, ``process``
    leaves the block untouched; turning bypass off clears the state, so a tail held from
    before the bypass does not come back.
    """

    latency_frames: int = 0

    def __init__(self, spec: Mapping[str, Any], sample_rate: int, max_block: int):
        if not isinstance(max_block, int) or max_block < 1:
            raise ValueError(f"max_block {max_block!r}: a positive number of frames")
        self.id: str = spec["id"]
        self.kind: str = spec["kind"]
        self.sample_rate = sample_rate
        self.max_block = max_block
        self.params: dict[str, Any] = dict(spec["params"])
        self._bypass = bool(spec.get("bypass", False))

    @property
    def bypass(self) -> bool:
        """True: the effect passes its input unchanged."""
        return self._bypass

    @bypass.setter
    def bypass(self, value: bool) -> None:
        if self._bypass and not value:
            self.reset()
        self._bypass = bool(value)

    def process(self, block: NDArray[np.float32]) -> None:
        """Process ``block`` (``(2, n)`` float32) in place."""
        if block.ndim != 2 or block.shape[0] != 2 or block.dtype != np.float32:
            raise ValueError(f"block must be float32 (2, n); got {block.dtype} {block.shape}")
        if block.shape[1] > self.max_block:
            raise ValueError(f"block of {block.shape[1]} frames; max_block is "
                             f"{self.max_block}")
        if self._bypass or block.shape[1] == 0:
            return
        self._process(block)

    def set_param(self, name: str, value: float | str) -> None:
        """Change one parameter (automation): checked against the catalog's range, taking
        effect from the next block."""
        v = check_param(self.kind, name, value, f"{self.id}.{name}")
        self.params[name] = v
        self._apply(name)

    def reset(self) -> None:
        """Forget the signal so far (tails, envelopes, filter state), as a new effect."""

    @property
    def tail_s(self) -> float:
        """Seconds the effect keeps sounding once its input is silent."""
        return 0.0

    def _process(self, block: NDArray[np.float32]) -> None:
        raise NotImplementedError

    def _apply(self, name: str) -> None:
        """Bring the processor in line with ``self.params[name]``."""


class _Gain(Effect):
    def __init__(self, spec: Mapping[str, Any], sample_rate: int, max_block: int):
        super().__init__(spec, sample_rate, max_block)
        self._g = np.float64(1.0)
        self._apply("db")

    def _apply(self, name: str) -> None:
        self._g = np.float64(10.0 ** (float(self.params["db"]) / 20.0))

    def _process(self, block: NDArray[np.float32]) -> None:
        if self._g != 1.0:
            # a float64 factor makes numpy multiply in double and round once to float32
            np.multiply(block, self._g, out=block, casting="same_kind")


def _rbj(kind: str, f0: float, gain_db: float, q: float, sr: int) -> NDArray[np.float64]:
    """One RBJ-cookbook biquad as an SOS row ``[b0, b1, b2, 1, a1, a2]``."""
    # keep the corner under Nyquist for low project rates (e.g. a 20 kHz shelf at 22.05 kHz)
    f0 = min(f0, 0.45 * sr)
    w0 = 2.0 * math.pi * f0 / sr
    cw, sw = math.cos(w0), math.sin(w0)
    alpha = sw / (2.0 * q)
    a = 10.0 ** (gain_db / 40.0)
    if kind == "peak":
        b = (1 + alpha * a, -2 * cw, 1 - alpha * a)
        den = (1 + alpha / a, -2 * cw, 1 - alpha / a)
    elif kind == "lowshelf":
        s = 2.0 * math.sqrt(a) * alpha
        b = (a * ((a + 1) - (a - 1) * cw + s), 2 * a * ((a - 1) - (a + 1) * cw),
             a * ((a + 1) - (a - 1) * cw - s))
        den = ((a + 1) + (a - 1) * cw + s, -2 * ((a - 1) + (a + 1) * cw),
               (a + 1) + (a - 1) * cw - s)
    elif kind == "highshelf":
        s = 2.0 * math.sqrt(a) * alpha
        b = (a * ((a + 1) + (a - 1) * cw + s), -2 * a * ((a - 1) + (a + 1) * cw),
             a * ((a + 1) + (a - 1) * cw - s))
        den = ((a + 1) - (a - 1) * cw + s, 2 * ((a - 1) - (a + 1) * cw),
               (a + 1) - (a - 1) * cw - s)
    elif kind == "highpass":
        b = ((1 + cw) / 2, -(1 + cw), (1 + cw) / 2)
        den = (1 + alpha, -2 * cw, 1 - alpha)
    elif kind == "lowpass":
        b = ((1 - cw) / 2, 1 - cw, (1 - cw) / 2)
        den = (1 + alpha, -2 * cw, 1 - alpha)
    else:  # pragma: no cover - the callers name only the kinds above
        raise ValueError(kind)
    a0 = den[0]
    return np.array([b[0] / a0, b[1] / a0, b[2] / a0, 1.0, den[1] / a0, den[2] / a0])


_SHELF_Q = 1.0 / math.sqrt(2.0)  # shelf slope S = 1: the steepest without a bump


@numba.njit(cache=True, nogil=True)
def _run_biquads(sos: NDArray[np.float64], zi: NDArray[np.float64],
                 block: NDArray[np.float32]) -> None:  # pragma: no cover - compiled
    """The cascade in transposed direct form II, in double precision, in place: what
    ``scipy.signal.sosfilt`` computes, without its per-call checks (they cost more than the
    filtering of a 256-frame block). ``zi`` is (sections, channels, 2); at most 3 sections.
    Sample by sample through all sections, with every coefficient and state in a local
    (a register): the sections of consecutive samples then overlap in the CPU."""
    k = sos.shape[0]
    p0 = sos[0]
    p1 = sos[1] if k > 1 else sos[0]
    p2 = sos[2] if k > 2 else sos[0]
    for c in range(block.shape[0]):
        u0, u1 = zi[0, c, 0], zi[0, c, 1]
        v0 = v1 = w0 = w1 = 0.0
        if k > 1:
            v0, v1 = zi[1, c, 0], zi[1, c, 1]
        if k > 2:
            w0, w1 = zi[2, c, 0], zi[2, c, 1]
        for i in range(block.shape[1]):
            x = np.float64(block[c, i])
            y = p0[0] * x + u0
            u0 = p0[1] * x - p0[4] * y + u1
            u1 = p0[2] * x - p0[5] * y
            if k > 1:
                x = y
                y = p1[0] * x + v0
                v0 = p1[1] * x - p1[4] * y + v1
                v1 = p1[2] * x - p1[5] * y
            if k > 2:
                x = y
                y = p2[0] * x + w0
                w0 = p2[1] * x - p2[4] * y + w1
                w1 = p2[2] * x - p2[5] * y
            block[c, i] = np.float32(y)
        zi[0, c, 0], zi[0, c, 1] = u0, u1
        if k > 1:
            zi[1, c, 0], zi[1, c, 1] = v0, v1
        if k > 2:
            zi[2, c, 0], zi[2, c, 1] = w0, w1


class _Biquads(Effect):
    """A cascade of biquads in double precision, state kept across blocks."""

    def __init__(self, spec: Mapping[str, Any], sample_rate: int, max_block: int):
        super().__init__(spec, sample_rate, max_block)
        n = 3 if self.kind == "eq3" else 1
        self._sos = np.zeros((n, 6))
        self._sos[:, 3] = 1.0
        self._zi = np.zeros((n, 2, 2))
        self._design()

    def _design(self) -> None:
        p, sr = self.params, self.sample_rate
        if self.kind == "eq3":
            self._sos[0] = _rbj("lowshelf", p["low_freq_hz"], p["low_gain_db"], _SHELF_Q, sr)
            self._sos[1] = _rbj("peak", p["mid_freq_hz"], p["mid_gain_db"], p["mid_q"], sr)
            self._sos[2] = _rbj("highshelf", p["high_freq_hz"], p["high_gain_db"], _SHELF_Q,
                                sr)
        else:
            self._sos[0] = _rbj(self.kind, p["cutoff_hz"], 0.0, p["q"], sr)

    def _apply(self, name: str) -> None:
        self._design()

    def reset(self) -> None:
        self._zi[:] = 0.0

    def _process(self, block: NDArray[np.float32]) -> None:
        _run_biquads(self._sos, self._zi, block)

    @property
    def tail_s(self) -> float:
        # the slowest pole's decay to -80 dB: |p|^n = 10^(-80/20)
        r = 0.0
        for row in self._sos:
            r = max(r, float(np.max(np.abs(np.roots(row[3:])))))
        if r <= 0.0:
            return 0.0
        if r >= 1.0:
            return FROZEN_TAIL_S
        return math.log(10.0 ** (-_TAIL_DB / 20.0)) / math.log(r) / self.sample_rate


# kind -> (pedalboard class, {our param: (its attribute, conversion)})
_Conv = Callable[[Any, int], Any]


def _same(v: Any, sr: int) -> Any:
    return float(v)


def _delay_seconds(v: Any, sr: int) -> float:
    # pedalboard truncates delay_seconds * rate to whole frames (0.01 s at 48 kHz would be
    # 479 frames); rounding to a frame and adding half a frame makes the echo land on the
    # nearest frame
    frames = math.floor(float(v) * sr + 0.5)
    return 0.0 if frames == 0 else (frames + 0.5) / sr


_LADDER_MODES = {"lpf12": "LPF12", "hpf12": "HPF12", "bpf12": "BPF12", "lpf24": "LPF24",
                 "hpf24": "HPF24", "bpf24": "BPF24"}


def _ladder_mode(v: Any, sr: int) -> Any:
    return getattr(pb.LadderFilter.Mode, _LADDER_MODES[str(v)])


_PEDALBOARD: dict[str, tuple[Callable[[], Any], dict[str, tuple[str, _Conv]]]] = {
    "compressor": (pb.Compressor, {"threshold_db": ("threshold_db", _same),
                                   "ratio": ("ratio", _same),
                                   "attack_ms": ("attack_ms", _same),
                                   "release_ms": ("release_ms", _same)}),
    # JUCE's dsp::Limiter (pedalboard's Limiter) compresses everything above -10 dB at 4:1
    # whatever its threshold, colouring quiet material; the brick-wall limiter is transparent
    # under its ceiling and pays for it with a fixed 5 ms look-ahead
    "limiter": (pb.BrickwallLimiter, {"ceiling_db": ("ceiling_db", _same),
                                      "release_ms": ("release_ms", _same)}),
    "noise_gate": (pb.NoiseGate, {"threshold_db": ("threshold_db", _same),
                                  "ratio": ("ratio", _same),
                                  "attack_ms": ("attack_ms", _same),
                                  "release_ms": ("release_ms", _same)}),
    "delay": (pb.Delay, {"time_s": ("delay_seconds", _delay_seconds),
                         "feedback": ("feedback", _same), "mix": ("mix", _same)}),
    "reverb": (pb.Reverb, {"room_size": ("room_size", _same), "damping": ("damping", _same),
                           "wet_level": ("wet_level", _same),
                           "dry_level": ("dry_level", _same), "width": ("width", _same),
                           "freeze": ("freeze_mode", _same)}),
    "chorus": (pb.Chorus, {"rate_hz": ("rate_hz", _same), "depth": ("depth", _same),
                           "centre_delay_ms": ("centre_delay_ms", _same),
                           "feedback": ("feedback", _same), "mix": ("mix", _same)}),
    "phaser": (pb.Phaser, {"rate_hz": ("rate_hz", _same), "depth": ("depth", _same),
                           "centre_frequency_hz": ("centre_frequency_hz", _same),
                           "feedback": ("feedback", _same), "mix": ("mix", _same)}),
    "distortion": (pb.Distortion, {"drive_db": ("drive_db", _same)}),
    "clipping": (pb.Clipping, {"threshold_db": ("threshold_db", _same)}),
    "bitcrush": (pb.Bitcrush, {"bit_depth": ("bit_depth", _same)}),
    "ladder": (pb.LadderFilter, {"mode": ("mode", _ladder_mode),
                                 "cutoff_hz": ("cutoff_hz", _same),
                                 "resonance": ("resonance", _same),
                                 "drive": ("drive", _same)}),
}


_LOOKAHEAD = frozenset({"limiter"})


class _Pedalboard(Effect):
    """A pedalboard plugin, prepared once so that any block size keeps its state."""

    def __init__(self, spec: Mapping[str, Any], sample_rate: int, max_block: int):
        super().__init__(spec, sample_rate, max_block)
        make, self._map = _PEDALBOARD[self.kind]
        self._plugin = make()
        # processed through a one-plugin Chain: a plugin that prepares itself its own way
        # (the brick-wall limiter) never records the channel count pedalboard uses to read a
        # (2, 1) block as stereo; the Chain records it for whatever it holds
        self._chain = pb.Chain([self._plugin])
        for name in self._map:
            if name in self.params:
                self._apply(name)
        # makeup gain of the compressor: ours, exact like ``gain``
        self._makeup = np.float64(1.0)
        if "makeup_db" in self.params:
            self._apply("makeup_db")
        # pedalboard prepares for the largest block and the channel count it has seen;
        # three frames at least, so that the (2, n) layout is never ambiguous
        self._prime = np.zeros((2, max(max_block, 3)), dtype=np.float32)
        self._tiny = np.zeros((2, 3), dtype=np.float32)
        self.reset()
        if self.kind in _LOOKAHEAD:
            self.latency_frames = self._measure_latency()
            self.reset()

    def _measure_latency(self) -> int:
        """The look-ahead delay, as the plugin really applies it: where a small impulse
        (far under any ceiling) comes out. Pedalboard does not expose the plugin's own
        latency figure."""
        # 100 ms covers the plugin's longest look-ahead at any rate we accept
        n = self.sample_rate // 10
        probe = np.zeros((2, n), dtype=np.float32)
        probe[:, 0] = 1e-4
        got = np.zeros_like(probe)
        step = self._prime.shape[1]
        for i in range(0, n, step):
            got[:, i : i + step] = self._chain.process(
                probe[:, i : i + step], float(self.sample_rate), buffer_size=step,
                reset=False)
        return int(np.argmax(np.abs(got[0])))

    def _apply(self, name: str) -> None:
        if name == "makeup_db":
            self._makeup = np.float64(10.0 ** (float(self.params[name]) / 20.0))
            return
        attr, conv = self._map[name]
        setattr(self._plugin, attr, conv(self.params[name], self.sample_rate))

    def reset(self) -> None:
        # reset=True clears the DSP state without forgetting the preparation or the layout
        # (Plugin.reset() from Python forgets both). The priming call prepares for max_block
        # frames; the tiny one then resets again so that at most 3 silent frames have run
        # through the plugin (an LFO starts 3 frames on, the same after every reset).
        sr = float(self.sample_rate)
        step = self._prime.shape[1]
        self._chain.process(self._prime, sr, buffer_size=step, reset=True)
        self._chain.process(self._tiny, sr, buffer_size=step, reset=True)
        if self.kind in _LOOKAHEAD:
            # a look-ahead plugin returns nothing until it holds a look-ahead's worth of
            # input; fill it with silence now, so that each later call returns as many
            # frames as it is given (the latency shows as a delay, reported and compensated)
            for _ in range(1000):
                if self._chain.process(self._prime, sr, buffer_size=step,
                                        reset=False).shape == self._prime.shape:
                    break
            else:  # pragma: no cover - a look-ahead longer than 1000 blocks
                raise RuntimeError(f"{self.kind}: the plugin never returned full blocks")

    def _process(self, block: NDArray[np.float32]) -> None:
        y = self._chain.process(block, float(self.sample_rate),
                                 buffer_size=self._prime.shape[1], reset=False)
        if y.shape != block.shape:
            raise RuntimeError(f"{self.kind}: pedalboard returned {y.shape} for "
                               f"{block.shape}: a plugin with latency needs a FIFO")
        if self._makeup != 1.0:
            np.multiply(y, self._makeup, out=block, casting="same_kind")
        else:
            block[:] = y

    @property
    def tail_s(self) -> float:
        p, sr = self.params, self.sample_rate
        floor = 10.0 ** (-_TAIL_DB / 20.0)
        if self.kind == "delay":
            t = math.floor(float(p["time_s"]) * sr + 0.5) / sr
            if t == 0.0 or p["mix"] == 0.0:
                return 0.0
            fb = float(p["feedback"])
            repeats = 1 if fb <= 0.0 else 1 + math.ceil(math.log(floor) / math.log(fb))
            return t * repeats
        if self.kind == "reverb":
            if p["freeze"] >= 0.5:
                return FROZEN_TAIL_S
            # Freeverb: comb feedback 0.7 + 0.28 * room size, the longest comb 1617 frames
            # at 44.1 kHz (scaled with the rate)
            g = 0.7 + 0.28 * float(p["room_size"])
            comb_s = 1617.0 / 44100.0
            return comb_s * math.log(floor) / math.log(g) + 0.05
        if self.kind == "chorus":
            fb = abs(float(p["feedback"]))
            d = (float(p["centre_delay_ms"]) * (1.0 + float(p["depth"]))) / 1000.0
            repeats = 1 if fb == 0.0 else 1 + math.ceil(math.log(floor) / math.log(fb))
            return d * repeats
        if self.kind == "phaser":
            fb = abs(float(p["feedback"]))
            return 0.05 if fb == 0.0 else 0.05 * (1 + math.log(floor) / math.log(fb))
        if self.kind == "ladder":
            # resonance near 1 rings for long; a generous estimate
            return 0.05 + 2.0 * float(p["resonance"]) ** 4
        return 0.0


def create_effect(spec: Mapping[str, Any], sample_rate: int, max_block: int) -> Effect:
    """Build the processor for a normalized effect spec (``check_effect``'s result), for
    blocks of at most ``max_block`` frames at ``sample_rate``.

    >>> fx = create_effect({"id": "g", "kind": "gain", "params": {"db": -20.0},
    ...                     "bypass": False}, 48000, 256)
    >>> block = np.ones((2, 4), np.float32)
    >>> fx.process(block)
    >>> float(block[0, 0])
    0.10000000149011612
    """
    kind = spec["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown effect kind {kind!r}")
    if kind == "gain":
        return _Gain(spec, sample_rate, max_block)
    if kind in ("eq3", "highpass", "lowpass"):
        return _Biquads(spec, sample_rate, max_block)
    return _Pedalboard(spec, sample_rate, max_block)
