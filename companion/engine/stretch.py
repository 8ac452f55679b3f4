"""Clips that follow the tempo (``source_bpm``): their content time-stretched with pitch kept,
rendered once into a proxy source and cached, as Ardour and Tracktion do.

A clip with ``"source_bpm": b`` plays its source's beats (at ``b`` quarter notes per minute)
on the project's beats. The clip's span in the source, in whole notes of the source's own
tempo, is ``[offset * b / 240, offset * b / 240 + length)`` (looped over the source's length
when ``loop`` is set). That span is unrolled into one buffer and stretched by Rubber Band
(pedalboard's ``time_stretch``) piece by piece: a piece runs between tempo points (and is a
beat long inside a ramp), is stretched at one factor so that its source beats fill its
exact frames, with source context on both sides, and meets the next piece in a short
crossfade. The result is cut or padded to the clip's exact frame count, so the renderer
plays it like any other clip (offset 0, no loop) and its gain, fades and ``reversed`` still
apply.

The proxy is keyed by everything it depends on (source, ``source_bpm``, offset, length,
loop, the clip's position, the tempo map, the rate); a new tempo map makes a new proxy and
the old one stays until the pool's cache is cleared. Proxies are ordinary pool sources.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from companion.errors import SourceError
from companion.model.timemap import TempoMap

MAX_PROXY_S = 30 * 60  # one stretched clip, at most 30 minutes of audio
CONTEXT = 8192  # source frames stretched beyond each piece, so its edges are not its own
XFADE = 256  # frames of crossfade where two pieces meet
RAMP_PIECE_WN = 0.25  # a ramp is stretched a beat at a time


class _Source(Protocol):
    channels: int
    frames: int

    def read(self, start: int, out: NDArray[np.float32]) -> Any: ...


class _Pool(Protocol):
    directory: Path

    def source(self, ref: str) -> Any: ...

    def add_array(self, data: NDArray[np.float32], sample_rate: int) -> str: ...


def proxy_key(clip: dict[str, Any], start_wn: float, tempo: TempoMap) -> str:
    """What a proxy depends on, hashed: the same inputs give the same proxy."""
    what = {
        "source": clip["source"], "source_bpm": clip["source_bpm"], "offset": clip["offset"],
        "length": clip["length"], "loop": clip.get("loop", False), "start": start_wn,
        "tempo": [[p.at, p.bpm, p.ramp] for p in tempo.points],
        "sample_rate": tempo.sample_rate, "version": 1,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def unrolled_source(source: _Source, first_frame: int, frames: int,
                    loop: bool) -> NDArray[np.float32]:
    """``frames`` source frames from ``first_frame`` on, looped over the source's length
    when ``loop`` is set, silence past its end otherwise; (channels, frames)."""
    out = np.zeros((source.channels, frames), np.float32)
    if not loop or source.frames == 0:
        source.read(first_frame, out)
        return out
    pos = first_frame % source.frames
    done = 0
    while done < frames:
        n = min(frames - done, source.frames - pos)
        source.read(pos, out[:, done:done + n])
        done += n
        pos = 0
    return out


def stretch_clip(source: _Source, clip: dict[str, Any], start_wn: float,
                 tempo: TempoMap) -> NDArray[np.float32]:
    """The clip's content, following the tempo map: (channels, N) where N is the clip's
    frame count at ``start_wn`` (its start in root positions)."""
    import pedalboard  # heavy: imported when a stretched clip is first rendered

    rate = tempo.sample_rate
    b = float(clip["source_bpm"])
    length = float(clip["length"])
    n_out = tempo.frame(start_wn + length) - tempo.frame(start_wn)
    if n_out <= 0:
        return np.zeros((source.channels, 0), np.float32)
    src_seconds = length * 240.0 / b
    if src_seconds > MAX_PROXY_S:
        raise SourceError(f"clip {clip.get('id', '?')!r}: {src_seconds:.0f} s of source to "
                          f"stretch, more than {MAX_PROXY_S} s")
    first = math.floor(float(clip["offset"]) * rate + 0.5)
    n_in = max(1, math.floor(src_seconds * rate + 0.5))
    data = unrolled_source(source, first, n_in, bool(clip.get("loop", False)))
    out = np.zeros((source.channels, n_out), np.float32)
    f0 = tempo.frame(start_wn)
    # Pieces of constant stretch, each placed at its exact frames. Rubber Band applies a
    # varying factor about a chunk early, so ramps are cut into pieces of a beat instead.
    cuts = _piece_bounds(tempo, start_wn, start_wn + length)
    prev_tail: NDArray[np.float32] | None = None
    for xa, xb in itertools.pairwise(cuts):
        ia = math.floor((xa - start_wn) * 240.0 / b * rate + 0.5)
        ib = min(n_in, math.floor((xb - start_wn) * 240.0 / b * rate + 0.5))
        fa, fb = tempo.frame(xa) - f0, min(n_out, tempo.frame(xb) - f0)
        if ib <= ia or fb <= fa:
            continue
        speed = (ib - ia) / (fb - fa)
        lo, hi = max(0, ia - CONTEXT), min(n_in, ib + CONTEXT)
        piece = pedalboard.time_stretch(data[:, lo:hi], rate, speed)
        skip = math.floor((ia - lo) / speed + 0.5)
        body = piece[:, skip:skip + (fb - fa)]
        out[:, fa:fa + body.shape[1]] = body
        if prev_tail is not None:  # crossfade into the previous piece's overhang
            m = min(prev_tail.shape[1], body.shape[1])
            ramp = np.linspace(0.0, 1.0, m, endpoint=False, dtype=np.float32)
            out[:, fa:fa + m] = prev_tail[:, :m] * (1 - ramp) + body[:, :m] * ramp
        prev_tail = piece[:, skip + (fb - fa):skip + (fb - fa) + XFADE]
    return out


def _piece_bounds(tempo: TempoMap, x0: float, x1: float) -> list[float]:
    """Where the stretch factor may change inside ``[x0, x1]``: the tempo points, and every
    beat inside a ramp."""
    cuts = {x0, x1}
    points = tempo.points
    for i, p in enumerate(points):
        if x0 < p.at < x1:
            cuts.add(p.at)
        if p.ramp and i + 1 < len(points):
            a, e = max(x0, p.at), min(x1, points[i + 1].at)
            k = math.floor(a / RAMP_PIECE_WN) + 1
            while k * RAMP_PIECE_WN < e:
                cuts.add(k * RAMP_PIECE_WN)
                k += 1
    return sorted(cuts)


def proxy_ref(pool: _Pool, clip: dict[str, Any], start_wn: float, tempo: TempoMap) -> str:
    """The pool reference of the clip's stretched proxy, rendered and cached on first use."""
    key = proxy_key(clip, start_wn, tempo)
    index = Path(pool.directory) / "cache" / "stretch"
    entry = index / f"{key}.ref"
    if entry.exists():
        ref = entry.read_text().strip()
        try:
            pool.source(ref)
            return ref
        except SourceError:
            pass  # the proxy went missing: render it again
    audio = stretch_clip(pool.source(clip["source"]), clip, start_wn, tempo)
    ref = pool.add_array(audio, tempo.sample_rate)
    index.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_suffix(".tmp")
    tmp.write_text(ref + "\n")
    os.replace(tmp, entry)
    return ref
