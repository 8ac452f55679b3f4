"""Automation lanes evaluated at frames, as ``spec/companion.md`` defines them.

A lane's points are mapped to frames once, when the plan is compiled; a value is then a
closed-form function of the absolute frame (never accumulated), so any block split gives
the same values.

>>> lane = Lane([{"at": 0.0, "value": 0.0, "curve": "linear"},
...              {"at": 1.0, "value": 1.0, "curve": "linear"}], lambda x: round(x * 4), 8)
>>> out = np.zeros(6)
>>> lane.fill(1, out)
>>> out.tolist()
[0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

_LINEAR, _EXP, _SCURVE, _STEP = range(4)
_CURVE = {"linear": _LINEAR, "exp": _EXP, "scurve": _SCURVE, "step": _STEP}


class Lane:
    """One lane (``points`` normalized: ``at`` in the track's own positions, in order) with
    ``to_frame`` mapping those positions to absolute frames. ``fill`` writes at most
    ``max_block`` values per call into preallocated arrays."""

    def __init__(self, points: list[dict[str, Any]], to_frame: Callable[[float], int],
                 max_block: int):
        self.frames = [int(to_frame(float(p["at"]))) for p in points]
        self.values = [float(p["value"]) for p in points]
        self.curves = [_CURVE[p.get("curve", "linear")] for p in points]
        self._ramp = np.arange(max(1, max_block), dtype=np.float64)
        self._t = np.zeros(max(1, max_block), dtype=np.float64)

    @property
    def constant(self) -> bool:
        """True when every point has the same value (the lane is a static value)."""
        return all(v == self.values[0] for v in self.values)

    def value_at(self, frame: int) -> float:
        """The lane's value at one frame (the same number :meth:`fill` gives there)."""
        frames, values = self.frames, self.values
        k = bisect.bisect_right(frames, frame) - 1
        if k < 0:
            return values[0]
        if k == len(frames) - 1:
            return values[-1]
        fa, fb = frames[k], frames[k + 1]
        va, vb = values[k], values[k + 1]
        curve = self.curves[k]
        if curve == _STEP or va == vb:
            return va
        t = (float(frame - fa) + 0.0) / float(fb - fa)
        if curve == _EXP and va > 0 and vb > 0:
            return float(va * (vb / va) ** t)
        if curve == _SCURVE:
            t = t * t * (3.0 - 2.0 * t)
        return va + t * (vb - va)

    def fill(self, start_frame: int, out: NDArray[np.float64]) -> None:
        """``out[k]`` = the value at frame ``start_frame + k``."""
        n = len(out)
        frames, values = self.frames, self.values
        end = start_frame + n
        pos = start_frame
        # the last point at or before the first frame (-1: before every point)
        k = bisect.bisect_right(frames, pos) - 1
        while pos < end:
            if k < 0:
                stop = min(end, frames[0])
                out[pos - start_frame:stop - start_frame] = values[0]
            elif k == len(frames) - 1:
                stop = end
                out[pos - start_frame:] = values[-1]
            else:
                stop = min(end, frames[k + 1])
                if stop > pos:
                    self._segment(k, pos, stop, out[pos - start_frame:stop - start_frame])
            pos = max(pos, stop)
            k += 1

    def _segment(self, k: int, a: int, b: int, out: NDArray[np.float64]) -> None:
        fa, fb = self.frames[k], self.frames[k + 1]
        va, vb = self.values[k], self.values[k + 1]
        curve = self.curves[k]
        m = b - a
        if curve == _STEP or va == vb:
            out[:] = va
            return
        t = self._t[:m]
        # t = (f - fa) / (fb - fa): integers added exactly, one division, per frame
        np.add(self._ramp[:m], float(a - fa), out=t)
        t /= float(fb - fa)
        if curve == _EXP and va > 0 and vb > 0:
            np.power(vb / va, t, out=out)
            out *= va
            return
        if curve == _SCURVE:
            # 3t^2 - 2t^3 = t * t * (3 - 2t)
            np.multiply(t, -2.0, out=out)
            out += 3.0
            out *= t
            out *= t
            t[:] = out
        np.multiply(t, vb - va, out=out)
        out += va
