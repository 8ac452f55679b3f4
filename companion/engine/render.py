"""The render plan: a project snapshot compiled into nodes, rendered block by block.

:func:`compile_plan` checks a project (:func:`companion.model.schema.normalize_project`)
and turns it into a :class:`Plan`: one node per track (clip player or MIDI instrument,
effect chain, volume and pan, sends) plus the master, in topological order (children and
senders before whatever they feed), every buffer made at compile time for blocks of at most
``max_block`` frames. :meth:`Plan.render` then writes any frames ``[start, start + n)`` of
the arrangement, the same samples whatever the block size (``spec/companion.md``).

The same plan renders offline (:func:`render_range`, ``ouro render``) and live: a new plan,
compiled on another thread from a new snapshot with ``previous=`` the playing one, reuses
the playing plan's effect instances and instruments where a track is unchanged and ramps
any volume or pan that an edit changed over :data:`SMOOTH_S` seconds, so the player can
swap plans at a block start by assigning one reference
(``companion.engine.player.Player.submit("plan", plan)``). Such a compile is incremental:
tracks whose checked form did not change keep their clips and automation as the previous
plan resolved them (unless the tempo map changed), so an edit costs about what it touches.

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from companion.engine.pool import Pool
>>> with tempfile.TemporaryDirectory() as d, Pool(Path(d), 48000) as pool:
...     ref = pool.add_array(np.ones((1, 480), np.float32), 48000)
...     project = {"format": "ouroboros-project", "version": 1, "tracks": [
...         {"kind": "audio", "id": "a", "pan": 1.0,
...          "clips": [{"id": "c", "source": ref, "start": 0.0, "length": 0.005}]}]}
...     out = render_range(project, pool, 0, 8, block_size=3)
>>> out.tolist()
[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]

Real-time rules of :meth:`Plan.render` (the player calls it from the audio callback): no
I/O when compiled with ``realtime=True`` (sources are read without waiting), no locks, no
arrays of audio size made per block; the work is bounded by the block and the project.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from companion.engine.automation import Lane
from companion.engine.varispeed import Varispeed
from companion.errors import ProjectError, SourceError
from companion.model.schema import NormalizeCache, normalize_project, quote
from companion.model.schema import SourcePool as CheckedPool
from companion.model.timemap import TempoMap, tempo_points

DEFAULT_MAX_BLOCK = 4096
SMOOTH_S = 0.010  # an edited volume or pan glides this long instead of jumping
_GHOST_PLANS = 4  # removed tracks fade out from at most this many plans back (see _Ghosts)
_UNITY = (1.0, 1.0)
_SILENT = (0.0, 0.0)

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


class Effect(Protocol):
    """An effect processor as ``companion.engine.effects.create_effect`` makes it."""

    @property
    def latency_frames(self) -> int: ...

    @property
    def tail_s(self) -> float: ...

    def process(self, block: F32) -> None: ...

    def set_param(self, name: str, value: Any) -> None: ...

    def reset(self) -> None: ...


EffectFactory = Callable[[dict[str, Any], int, int], Effect]


class _Source(Protocol):
    channels: int
    frames: int

    def read(self, start: int, out: F32, wait: bool = True) -> Any: ...


class SourcePool(CheckedPool, Protocol):
    """What rendering needs of ``companion.engine.pool.Pool``: what the schema needs, and
    a place for the stretched proxies."""

    def add_array(self, data: F32, sample_rate: int) -> str: ...


def _default_effects(spec: dict[str, Any], sample_rate: int, max_block: int) -> Effect:
    from companion.engine.effects import create_effect  # the effect libraries are heavy
    effect: Effect = create_effect(spec, sample_rate, max_block)
    return effect


def scale(x: F32, factor: float | F64, scratch: F64) -> None:
    """``x *= factor`` (a number or one per frame) for a float32 row: the product in double,
    rounded once to float32. Numpy would allocate a buffer for the mixed-type multiply, so
    it goes through ``scratch`` (float64, at least as long as ``x``)."""
    t = scratch[:x.shape[0]]
    np.copyto(t, x)
    t *= factor
    np.copyto(x, t, casting="same_kind")


def _rounded_frames(seconds: float, sample_rate: int) -> int:
    """Seconds to frames as the contract rounds clip offsets and fades."""
    return math.floor(seconds * sample_rate + 0.5)


# --------------------------------------------------------------------------- clips

class _Clip:
    """One audio clip, resolved to frames: it covers ``[S, E)`` of its track's timeline."""

    def __init__(self, spec: dict[str, Any], source: _Source, S: int, E: int,
                 offset_frames: int, speed: float, sample_rate: int, max_block: int,
                 wait: bool):
        self.id = spec["id"]
        self.source = source
        self.S, self.E, self.N = S, E, E - S
        self.o = offset_frames
        self.L = int(source.frames)
        self.channels = int(source.channels)
        self.loop = bool(spec["loop"])
        self.reversed = bool(spec["reversed"])
        self.gain = float(spec["gain"])
        self.Fi = _rounded_frames(spec["fade_in"], sample_rate)
        self.Fo = _rounded_frames(spec["fade_out"], sample_rate)
        self.wait = wait
        self.speed = speed
        self.varispeed = (None if speed == 1.0 else
                          Varispeed(speed, self.channels, max_block))

    def read_span(self, start: int, out: F32) -> None:
        """Source frames ``[start, start + n)`` into ``out``, wrapped when looping."""
        if not self.loop or self.L == 0:
            self.source.read(start, out, self.wait)
            return
        n = out.shape[1]
        pos = start % self.L
        done = 0
        while done < n:
            m = min(n - done, self.L - pos)
            self.source.read(pos, out[:, done:done + m], self.wait)
            done += m
            pos = 0


class _ClipPlayer:
    """An audio track's clips, added into the track's content buffer."""

    def __init__(self, clips: list[_Clip], max_block: int):
        self.clips = sorted(clips, key=lambda c: (c.S, c.E))
        self.starts = [c.S for c in self.clips]
        self.longest = max((c.N for c in self.clips), default=0)
        self.end_frame = max((c.E for c in self.clips), default=0)
        self._buf = np.zeros((2, max_block), np.float32)
        self._flip = np.zeros((2, max_block), np.float32)
        self._ramp = np.arange(max_block, dtype=np.float64)
        self._i = np.zeros(max_block, np.float64)
        self._g = np.zeros(max_block, np.float64)
        self._t = np.zeros(max_block, np.float64)

    def render(self, start: int, out: F32) -> None:
        n = out.shape[1]
        end = start + n
        # clips starting before the block's end and not before start - longest
        lo = bisect.bisect_left(self.starts, start - self.longest)
        hi = bisect.bisect_left(self.starts, end)
        for k in range(lo, hi):
            c = self.clips[k]
            if c.E > start and c.N > 0:
                self._add_clip(c, start, end, out)

    def _add_clip(self, c: _Clip, start: int, end: int, out: F32) -> None:
        i0 = max(start, c.S) - c.S
        i1 = min(end, c.E) - c.S
        m = i1 - i0
        ch = c.channels
        buf = self._buf[:ch, :m]
        # reversed: clip frame i takes content frame N - 1 - i, so read [N - i1, N - i0)
        j0 = c.N - i1 if c.reversed else i0
        if c.varispeed is None:
            c.read_span(c.o + j0, buf)
        else:
            c.varispeed.render(c.read_span, float(c.o), j0, buf)
        if c.reversed:
            flip = self._flip[:ch, :m]
            np.copyto(flip, buf[:, ::-1])
            buf = flip
        if c.Fi or c.Fo:
            # g(i) = gain * fin(i) * fout(i), evaluated per frame from the clip frame i
            i = self._i[:m]
            g = self._g[:m]
            np.add(self._ramp[:m], float(i0), out=i)
            if c.Fi:
                np.divide(i, float(c.Fi), out=g)
                np.minimum(g, 1.0, out=g)
            else:
                g[:] = 1.0
            np.multiply(g, c.gain, out=g)
            if c.Fo:
                t = self._t[:m]
                np.subtract(float(c.N), i, out=t)
                t /= float(c.Fo)
                np.minimum(t, 1.0, out=t)
                g *= t
            for row in buf:
                scale(row, g, self._t)
        elif c.gain != 1.0:
            for row in buf:
                scale(row, c.gain, self._t)
        a = c.S + i0 - start
        if ch == 1:
            out[0, a:a + m] += buf[0]
            out[1, a:a + m] += buf[0]
        else:
            out[:, a:a + m] += buf


# --------------------------------------------------------------------------- graph pieces

class _Delay:
    """A fixed delay (latency compensation) over blocks, in a ring made at compile time."""

    def __init__(self, frames: int, max_block: int):
        self.frames = frames
        self.size = frames + max_block
        self.ring = np.zeros((2, self.size), np.float32)
        self.w = 0

    def reset(self) -> None:
        self.ring[:] = 0.0

    def process(self, x: F32, out: F32) -> None:
        n = x.shape[1]
        size = self.size
        w = self.w
        a = min(n, size - w)
        self.ring[:, w:w + a] = x[:, :a]
        self.ring[:, :n - a] = x[:, a:]
        r = (w - self.frames) % size
        b = min(n, size - r)
        out[:, :b] = self.ring[:, r:r + b]
        out[:, b:n] = self.ring[:, :n - b]
        self.w = (w + n) % size


class _Edge:
    """Signal from one node into another's content: a parent, a bus or the master."""

    def __init__(self, dest: _Node, level: float, pre_fader: bool, where: str):
        self.dest = dest
        self.level = level
        self.pre_fader = pre_fader
        self.where = where
        self.delay: _Delay | None = None
        self.stem: F32 | None = None
        # a stem is taken where the track enters the master; the master chain's latency
        # would put it early against the mix, so it is delayed by as much
        self.stem_delay: _Delay | None = None

    def push(self, x: F32, scratch: F32) -> None:
        n = x.shape[1]
        if self.delay is not None:
            self.delay.process(x, scratch[:, :n])
            x = scratch[:, :n]
        if self.stem is not None:
            if self.stem_delay is not None:
                self.stem_delay.process(x, self.stem[:, :n])
            else:
                self.stem[:, :n] = x
        dest = self.dest.content[:, :n]
        if self.level == 1.0:
            dest += x
        else:
            y = self.dest.push_scratch[:, :n]
            np.copyto(y, x)
            scale(y[0], self.level, self.dest.scratch64)
            scale(y[1], self.level, self.dest.scratch64)
            dest += y


class _Fx:
    """One effect of a chain, with the lanes that automate its parameters."""

    def __init__(self, spec: dict[str, Any], effect: Effect, reused_from: dict[str, Any] | None):
        self.spec = spec
        self.effect = effect
        self.bypass = bool(spec["bypass"])
        self.lanes: list[tuple[str, Lane]] = []
        # parameters an edit changed on a reused instance: set on the audio thread, at the
        # first block, because the playing plan still uses the instance until then
        self.pending: list[tuple[str, Any]] = []
        # numeric parameters an edit changed glide from the old value to the new over
        # SMOOTH_S, one step per block (effects take parameters per block)
        self.glide: list[tuple[str, float, float]] = []
        self.glide_done = 0
        self.unbypassed = False
        if reused_from is not None:
            for k, v in spec["params"].items():
                old = reused_from["params"].get(k)
                if old == v:
                    continue
                if isinstance(v, int | float) and isinstance(old, int | float):
                    self.glide.append((k, float(old), float(v)))
                else:
                    self.pending.append((k, v))
            # an edit that toggles bypass reaches the instance at the swap
            self.unbypassed = bool(reused_from["bypass"]) != self.bypass


class _Scratch:
    """Work buffers that hold nothing from one use to the next. Nodes are processed one at
    a time, so all the nodes of a plan share one set (and a compile makes one, not one per
    track); plans never share theirs."""

    def __init__(self, max_block: int):
        self.push = np.zeros((2, max_block), np.float32)
        self.delay = np.zeros((2, max_block), np.float32)
        self.f64 = [np.zeros(max_block, np.float64) for _ in range(5)]
        self.ramp = np.arange(max_block, dtype=np.float64)


class _Node:
    """A track (or the master): content, effect chain, volume and pan, outgoing edges."""

    def __init__(self, tid: str, kind: str, where: str, scratch: _Scratch, sample_rate: int):
        self.id = tid
        self.kind = kind
        self.where = where
        max_block = scratch.ramp.shape[0]
        self.content = np.zeros((2, max_block), np.float32)  # its own: producers add into it
        self.push_scratch = scratch.push
        self.delay_scratch = scratch.delay
        self.scratch64 = scratch.f64[0]
        self.clips: _ClipPlayer | None = None
        self.midi: Any = None
        self.midi_key: Any = None
        self.fx: list[_Fx] = []
        self.volume = 1.0
        self.pan = 0.0
        self.vol_lane: Lane | None = None
        self.pan_lane: Lane | None = None
        self.heard = True
        self.edges: list[_Edge] = []
        self.producers: list[_Node] = []
        self.adv_content = 0
        self.adv_out = 0
        self.latency = 0
        self.tail_s = 0.0
        self.content_end = 0
        # what the next compile compares to reuse this node's clips and lanes: the checked
        # track (the same object when the schema's cache found it unchanged), where the
        # enclosing metatracks put it, and each lane's points with the Lane made of them
        self.spec: dict[str, Any] | None = None
        self.placement = (0.0, 1.0)
        self.lane_specs: dict[str, tuple[list[dict[str, Any]], Lane]] = {}
        # gains applied at the last frame rendered; None until this node has rendered
        self.last_gain: tuple[float, float] | None = None
        # a ghost: a track the new plan removed, kept to fade out (see _Ghosts)
        self.fading = False
        self.held_gain = _UNITY  # a ghost's volume and pan: as the removed track ended
        # False for a ghost that feeds only other ghosts: their fade is its fade (faded
        # twice, a removed group's children would fall faster than the group)
        self.fade_ramp = True
        self.smooth_frames = max(1, round(SMOOTH_S * sample_rate))
        self.smooth_from = _UNITY
        self.smooth_done = self.smooth_frames  # >= smooth_frames: not smoothing
        self._ramp = scratch.ramp
        self._gl, self._gr, self._vol, self._pan = scratch.f64[1:]

    # ---- gains
    def static_gains(self) -> tuple[float, float]:
        if not self.heard:
            return _SILENT
        v, p = self.volume, self.pan
        return (v * min(1.0, 1.0 - p), v * min(1.0, 1.0 + p))

    def start_smoothing(self, prev: tuple[float, float] | None, at_frame: int) -> None:
        """Glide from ``prev`` (the gains the replaced plan ended on) when they differ from
        where this node starts."""
        if prev is None:
            return
        if self.vol_lane is None and self.pan_lane is None:
            start = self.static_gains()
        else:
            v = self.vol_lane.value_at(at_frame) if self.vol_lane else self.volume
            p = self.pan_lane.value_at(at_frame) if self.pan_lane else self.pan
            h = 1.0 if self.heard else 0.0
            start = (h * v * min(1.0, 1.0 - p), h * v * min(1.0, 1.0 + p))
        if prev != start:
            self.smooth_from = prev
            self.smooth_done = 0

    @property
    def active(self) -> bool:
        return self.heard or self.smooth_done < self.smooth_frames

    def fade(self, c: F32) -> None:
        """A ghost's content times 1 -> 0 over the glide (1 on the swap's first frame, so
        it continues the removed track's last frame; 0 from the glide's end)."""
        n = c.shape[1]
        if not self.fade_ramp:
            self.smooth_done += n
            return
        a = self._vol[:n]
        np.add(self._ramp[:n], float(self.smooth_done), out=a)
        a /= float(self.smooth_frames)
        np.minimum(a, 1.0, out=a)
        np.subtract(1.0, a, out=a)
        scale(c[0], a, self.scratch64)
        scale(c[1], a, self.scratch64)
        self.smooth_done += n

    def apply_gain(self, f0: int, c: F32) -> None:
        """Volume then balance-law pan, at every frame where automated or gliding."""
        n = c.shape[1]
        frame = f0 + self.adv_out
        smoothing = self.smooth_done < self.smooth_frames
        if self.vol_lane is None and self.pan_lane is None and not smoothing:
            gl, gr = self.static_gains()
            if gl != 1.0:
                scale(c[0], gl, self.scratch64)
            if gr != 1.0:
                scale(c[1], gr, self.scratch64)
            self.last_gain = (gl, gr)
            return
        gl_v, gr_v = self._gl[:n], self._gr[:n]
        if self.vol_lane is None and self.pan_lane is None:
            gl, gr = self.static_gains()
            gl_v[:] = gl
            gr_v[:] = gr
        else:
            vol, pan = self._vol[:n], self._pan[:n]
            if self.vol_lane is not None:
                self.vol_lane.fill(frame, vol)
            else:
                vol[:] = self.volume
            if self.pan_lane is not None:
                self.pan_lane.fill(frame, pan)
            else:
                pan[:] = self.pan
            # left: min(1, 1 - pan), right: min(1, 1 + pan), times the volume
            np.subtract(1.0, pan, out=gl_v)
            np.minimum(gl_v, 1.0, out=gl_v)
            gl_v *= vol
            np.add(1.0, pan, out=gr_v)
            np.minimum(gr_v, 1.0, out=gr_v)
            gr_v *= vol
            if not self.heard:
                gl_v[:] = 0.0
                gr_v[:] = 0.0
        if smoothing:
            # a = frames since the swap / smoothing length, clipped to 1; g = from + (g - from) a
            a = self._vol[:n]  # free again: the gains are computed
            np.add(self._ramp[:n], float(self.smooth_done), out=a)
            a /= float(self.smooth_frames)
            np.minimum(a, 1.0, out=a)
            for g, g0 in ((gl_v, self.smooth_from[0]), (gr_v, self.smooth_from[1])):
                g -= g0
                g *= a
                g += g0
            self.smooth_done += n
        scale(c[0], gl_v, self.scratch64)
        scale(c[1], gr_v, self.scratch64)
        self.last_gain = (float(gl_v[-1]), float(gr_v[-1]))

    # ---- one block
    def process(self, f0: int, n: int) -> None:
        if not self.active:
            self.last_gain = _SILENT
            return
        c = self.content[:, :n]
        at = f0 + self.adv_content
        if self.clips is not None:
            self.clips.render(at, c)
        elif self.midi is not None:
            self.midi.render(at, c)
        for fx in self.fx:
            if fx.unbypassed:
                if hasattr(fx.effect, "bypass"):
                    fx.effect.bypass = fx.bypass  # lifting it clears the old tail
                elif not fx.bypass:
                    fx.effect.reset()
                fx.unbypassed = False
            if fx.pending:
                for name, value in fx.pending:
                    fx.effect.set_param(name, value)
                fx.pending = []
            if fx.glide:
                fx.glide_done += n
                a = min(1.0, fx.glide_done / self.smooth_frames)
                for name, v0, v1 in fx.glide:
                    fx.effect.set_param(name, v1 if a >= 1.0 else v0 + (v1 - v0) * a)
                if a >= 1.0:
                    fx.glide = []
            for name, lane in fx.lanes:
                fx.effect.set_param(name, lane.value_at(at))
            if not fx.bypass:
                fx.effect.process(c)
        if self.fading:  # pre-fader sends fade too: nothing may stop abruptly
            self.fade(c)
        for e in self.edges:
            if e.pre_fader:
                e.push(c, self.delay_scratch)
        if self.fading:
            gl, gr = self.held_gain
            if gl != 1.0:
                scale(c[0], gl, self.scratch64)
            if gr != 1.0:
                scale(c[1], gr, self.scratch64)
        else:
            self.apply_gain(f0, c)
        for e in self.edges:
            if not e.pre_fader:
                e.push(c, self.delay_scratch)


class _Ghosts:
    """The tracks an edit removes, made ready at compile time to fade out over
    :data:`SMOOTH_S` after the swap instead of stopping at once (a click).

    Which plan is playing when the new one takes over is known only then (a plan replaced
    before it ever played hands over its predecessor's sound), so a set is made for each
    plan the new one might take over from; :meth:`Plan._take_over` picks one, without
    making anything on the audio thread. A ghost is a fresh node around the removed node's
    content (clips or instrument, effect instances, latency): it renders that content, times
    a ramp from 1 to 0, times the gains the removed track ended on, into the new plan's node
    of the same id as its old destination (the master, a surviving metatrack or bus, or
    another ghost)."""

    def __init__(self, plan_id: int, ghosts: list[_Node], sources: list[_Node],
                 continued: list[bool]):
        self.plan_id = plan_id
        self.ghosts = ghosts  # producers before consumers, as they are processed
        self.sources = sources  # what each fades out: the removed node, or an older ghost
        self.continued = continued  # True: the source is a ghost still fading; go on


# --------------------------------------------------------------------------- the plan

class Plan:
    """A compiled project. :meth:`render` is the only method the audio side calls."""

    def __init__(self, sample_rate: int, max_block: int, nodes: list[_Node], master: _Node,
                 end_frame: int, tempo: TempoMap, previous: Plan | None):
        self.sample_rate = sample_rate
        self.max_block = max_block
        self.tempo = tempo
        self.end_frame = end_frame  #: the default end: the last clip's end plus effect tails
        self._nodes = nodes  # topological order; the master last
        self._master = master
        self._by_id = {n.id: n for n in nodes if n is not master}
        self._previous = previous
        self._next: int | None = None
        self._ghost_sets: list[_Ghosts] = []  # set by the compiler
        self._ghosts: list[_Node] = []  # the set picked at the swap
        self._ghost_left = 0  # frames the ghosts still fade; 0: not processed
        # what the next compile needs to reuse this one's work: the schema's cache, and
        # what every frame position depends on (clips and lanes are reused only when equal)
        self._norm_cache: NormalizeCache | None = None
        self._time_key: Any = None
        self.stems: dict[str, F32] = {}  #: root track id -> its last block's output
        self.latency_frames = max((n.adv_content for n in nodes), default=0)

    @property
    def track_ids(self) -> list[str]:
        return list(self._by_id)

    def enable_stems(self, track_ids: list[str]) -> None:
        """Keep each given root track's output (as it reaches the master, aligned) in
        :attr:`stems` after every block. Call before rendering."""
        for tid in track_ids:
            node = self._by_id[tid]
            for e in node.edges:
                if e.dest is self._master and e.stem is None:
                    e.stem = np.zeros((2, self.max_block), np.float32)
                    if self._master.adv_content > 0:
                        e.stem_delay = _Delay(self._master.adv_content, self.max_block)
                    self.stems[tid] = e.stem

    def _take_over(self, start_frame: int) -> None:
        """First block after a swap: glide from the gains the replaced plan ended on."""
        prev, self._previous = self._previous, None
        # a plan replaced before it ever played hands over what its own predecessor played
        while prev is not None and prev._next is None and prev._previous is not None:
            prev = prev._previous
        if prev is None:
            return
        for node in self._nodes:
            old = prev._master if node is self._master else prev._by_id.get(node.id)
            if old is not None and old.kind == node.kind:
                node.start_smoothing(old.last_gain, start_frame + node.adv_out)
        for gs in self._ghost_sets:
            if gs.plan_id != id(prev):
                continue
            longest = 0
            for k in range(len(gs.ghosts)):
                ghost, src = gs.ghosts[k], gs.sources[k]
                if gs.continued[k]:  # an older ghost: go on with its fade where it is
                    on = prev._ghost_left > 0 and src.smooth_done < src.smooth_frames
                    ghost.held_gain, ghost.smooth_done = src.held_gain, src.smooth_done
                else:
                    gain = src.last_gain
                    on = gain is not None and gain != _SILENT
                    if gain is not None and on:
                        ghost.held_gain, ghost.smooth_done = gain, 0
                if on:
                    longest = max(longest, ghost.smooth_frames - ghost.smooth_done)
                else:
                    ghost.smooth_done = ghost.smooth_frames  # inactive: not processed
            if longest:
                self._ghosts = gs.ghosts
                self._ghost_left = longest
            break

    def reset(self) -> None:
        """Forget effect tails and delay lines (a locate)."""
        self._ghost_left = 0  # a locate cuts what was fading out where playing was
        for node in self._nodes:
            for fx in node.fx:
                fx.effect.reset()
            for e in node.edges:
                for d in (e.delay, e.stem_delay):
                    if d is not None:
                        d.reset()

    def render(self, start_frame: int, out: F32) -> None:
        """Write the arrangement's frames ``[start_frame, start_frame + n)`` into ``out``
        (float32, ``(2, n)``, ``n <= max_block``). A ``start_frame`` that does not follow the
        previous call is a locate: effect tails are cleared."""
        n = out.shape[1]
        if n > self.max_block:
            raise ValueError(f"block of {n} frames; this plan renders at most "
                             f"{self.max_block}")
        if self._previous is not None:
            self._take_over(start_frame)
        elif start_frame != self._next:
            if self._next is not None:
                self.reset()
            if self.latency_frames:
                self._preroll(start_frame)
        self._run(start_frame, n)
        out[:] = self._master.content[:, :n]
        self._next = start_frame + n

    def _run(self, start_frame: int, n: int) -> None:
        ghosts = self._ghost_left > 0
        if ghosts:
            # removed tracks fading out; first, since they feed this plan's nodes. When
            # done they are no longer processed, but stay referenced until the plan goes,
            # so that nothing is freed on the audio thread
            for node in self._ghosts:
                node.content[:, :n] = 0.0
            self._ghost_left = max(0, self._ghost_left - n)
        for node in self._nodes:
            node.content[:, :n] = 0.0
        if ghosts:
            for node in self._ghosts:
                node.process(start_frame, n)
        for node in self._nodes:
            node.process(start_frame, n)

    def _preroll(self, start_frame: int) -> None:
        """Starting (or locating) with effect latency: run the frames before the start
        through the graph, so the compensating delays hold what precedes it rather than
        silence, and the start frame sounds as it would in a longer render."""
        f = start_frame - self.latency_frames
        while f < start_frame:
            n = min(self.max_block, start_frame - f)
            self._run(f, n)
            f += n


class _Compiler:
    def __init__(self, project: dict[str, Any], pool: SourcePool, max_block: int,
                 previous: Plan | None, effects: EffectFactory, realtime: bool):
        self.p = project
        self.pool = pool
        self.sr = int(project["sample_rate"])
        self.max_block = max_block
        self.previous = previous
        self.effects = effects
        self.wait = not realtime
        self.tempo = TempoMap(tempo_points(project["tempo"]), self.sr)
        # everything a frame position, and so a clip or a lane, depends on besides its own
        # spec and placement: a change (a tempo edit) makes every clip and lane anew
        self.time_key = (repr(project["tempo"]), self.sr, max_block, self.wait, pool)
        self.same_time = previous is not None and previous._time_key == self.time_key
        self.scratch = _Scratch(max_block)
        self.nodes: list[_Node] = []
        self.by_id: dict[str, _Node] = {}
        self.any_solo = False
        self._sends: list[tuple[_Node, dict[str, Any]]] = []

    def frame(self, a: float, s: float, x: float) -> int:
        """The frame of track position ``x`` where the enclosing metatracks compose to
        ``root = a + x / s``."""
        return self.tempo.frame(a + x / s)

    def compile(self) -> Plan:
        master = _Node("", "master", "master", self.scratch, self.sr)
        master.volume = float(self.p["master"]["volume"])
        master.fx = self.chain(master, self.p["master"]["effects"], "master")
        self.any_solo = any(_subtree_has(t, "solo") for t in self.p["tracks"])
        for i, t in enumerate(self.p["tracks"]):
            self.track(t, f"tracks[{i}] {quote(t['name'])}", master, 0.0, 1.0, False, False)
        for node, spec in self._sends:
            for k, send in enumerate(spec["sends"]):
                dest = self.by_id[send["bus"]]
                node.edges.append(_Edge(dest, float(send["level"]), bool(send["pre_fader"]),
                                        f"{node.where} > sends[{k}]"))
                dest.producers.append(node)
        order = _topological(master)
        self.compensate(order, master)
        end = max((n.content_end for n in order), default=0)
        tails = _tails(order, master)
        end_frame = 0
        for n in order:
            if n.content_end > 0:
                end_frame = max(end_frame, n.content_end + math.ceil(tails[n.id] * self.sr))
        end_frame = max(end_frame, end)
        plan = Plan(self.sr, self.max_block, order, master, end_frame, self.tempo,
                    self.previous)
        plan._time_key = self.time_key
        plan._ghost_sets = self.ghost_sets(plan)
        return plan

    def ghost_sets(self, plan: Plan) -> list[_Ghosts]:
        """For each plan this one may take over from (see :class:`_Ghosts`), its nodes
        that this plan removes, as ghosts wired into this plan."""
        sets = []
        cand = self.previous
        looked = 0
        # the swap hands over from the newest plan of the chain that has played, or from
        # an unplayed one if it starts playing first; a chain of unplayed plans grows while
        # the transport is stopped, and beyond a few of them there is nothing to fade
        while cand is not None and looked < _GHOST_PLANS:
            looked += 1
            sources: list[_Node] = []
            continued: list[bool] = []
            # its own ghosts first (they fed its nodes), while they may still be fading:
            # once a plan played past its ghosts' glide, they are left behind for good
            if cand._previous is not None or cand._ghost_left > 0:
                for gs in cand._ghost_sets:
                    for g in gs.ghosts:
                        if not _kept(plan, g):
                            sources.append(g)
                            continued.append(True)
            for old in cand._nodes:
                if old is not cand._master and not _kept(plan, old):
                    sources.append(old)
                    continued.append(False)
            if sources:
                # all of them first: a removed child feeds its removed parent's ghost
                ghosts = {id(src): self.ghost(src) for src in sources}
                for src in sources:
                    self.wire(ghosts[id(src)], src, plan, cand, ghosts)
                shells = {id(g) for g in ghosts.values()}
                for g in ghosts.values():
                    g.fade_ramp = not g.edges or any(id(e.dest) not in shells
                                                     for e in g.edges)
                sets.append(_Ghosts(id(cand), list(ghosts.values()), sources, continued))
            if cand._next is not None:
                break  # it has played: the swap's search stops here at the latest
            cand = cand._previous
        return sets

    def ghost(self, src: _Node) -> _Node:
        """A node that plays ``src``'s content (the same clips, instrument and effect
        instances, in the same time) fading out."""
        g = _Node(src.id, src.kind, src.where, self.scratch, self.sr)
        g.clips, g.midi, g.fx = src.clips, src.midi, src.fx
        g.adv_content, g.adv_out, g.latency = src.adv_content, src.adv_out, src.latency
        g.heard = False
        g.fading = True
        return g

    def wire(self, g: _Node, src: _Node, plan: Plan, cand: Plan,
             ghosts: dict[int, _Node]) -> None:
        """``src``'s outputs, into what stands for their destinations in ``plan``."""
        for e in src.edges:
            dest: _Node | None
            if e.dest is cand._master or e.dest is plan._master:
                dest = plan._master
            elif id(e.dest) in ghosts:
                dest = ghosts[id(e.dest)]
            else:
                dest = plan._by_id.get(e.dest.id)
                if dest is not None and dest.kind != e.dest.kind:
                    dest = None
            if dest is None:
                continue  # its destination is gone and was silent: nothing to feed
            edge = _Edge(dest, e.level, e.pre_fader, e.where)
            edge.delay = e.delay  # its state goes on: the ghost's sound stays in place
            g.edges.append(edge)

    def track(self, t: dict[str, Any], where: str, parent: _Node, a: float, s: float,
              muted_above: bool, solo_above: bool) -> _Node:
        node = _Node(t["id"], t["kind"], where, self.scratch, self.sr)
        self.by_id[node.id] = node
        node.volume, node.pan = float(t["volume"]), float(t["pan"])
        muted = muted_above or t["mute"]
        soloed = solo_above or t["solo"]
        node.heard = not muted and (not self.any_solo or soloed or _subtree_has(t, "solo")
                                    or _subtree_has_bus(t))
        old = self.previous._by_id.get(node.id) if self.previous is not None else None
        if old is not None and old.kind != node.kind:
            old = None
        node.fx = self.chain(node, t["effects"], where, old)
        node.spec, node.placement = t, (a, s)
        # an unchanged track in an unchanged time frame: its clips and lanes, resolved to
        # frames, are what the previous plan made of them (they hold no playing state)
        same = old if (old is not None and self.same_time and old.placement == (a, s)
                       and old.spec is not None) else None

        def to_frame(x: float) -> int:
            return self.frame(a, s, x)

        for k, lane in enumerate(t["automation"]):
            if not lane["points"]:
                continue
            was = same.lane_specs.get(lane["param"]) if same is not None else None
            if was is not None and (was[0] is lane["points"] or was[0] == lane["points"]):
                lw = was[1]
            else:
                lw = Lane(lane["points"], to_frame, self.max_block)
            node.lane_specs[lane["param"]] = (lane["points"], lw)
            if lane["param"] == "volume":
                node.vol_lane = lw
            elif lane["param"] == "pan":
                node.pan_lane = lw
            else:
                eid, _, name = lane["param"].rpartition(".")
                for fx in node.fx:
                    if fx.spec["id"] == eid:
                        fx.lanes.append((name, lw))
                        fx.pending = [(p, v) for p, v in fx.pending if p != name]
                        fx.glide = [g for g in fx.glide if g[0] != name]
                        break
                else:  # pragma: no cover - the schema refuses it
                    raise ProjectError(f"{where} > automation[{k}] > param",
                                       f"{lane['param']!r} names nothing")
        if t["kind"] == "audio":
            if same is not None and same.clips is not None and same.spec is not None and (
                    same.spec["clips"] is t["clips"] or same.spec["clips"] == t["clips"]):
                node.clips = same.clips
            else:
                node.clips = self.clip_player(t, where, a, s)
            node.content_end = node.clips.end_frame
        elif t["kind"] == "midi":
            self.midi(node, t, where, a, s, old, to_frame)
        elif t["kind"] == "meta":
            a_child = a + t["offset"] / s
            s_child = s * t["speed"]
            if not 1.0 / 64.0 <= s_child <= 64.0:
                raise ProjectError(_at(where, "speed"), f"the speeds of the nested "
                                   f"metatracks multiply to {s_child:g}; at most 64 and at "
                                   "least 1/64")
            for i, child in enumerate(t["children"]):
                self.track(child, f"{where} > children[{i}] {quote(child['name'])}", node,
                           a_child, s_child, muted, soloed)
        node.edges.append(_Edge(parent, 1.0, False, where))
        parent.producers.append(node)
        if t["sends"]:
            self._sends.append((node, t))
        return node

    def chain(self, node: _Node, specs: list[dict[str, Any]], where: str,
              old: _Node | None = None) -> list[_Fx]:
        reusable = {(fx.spec["id"], fx.spec["kind"]): fx for fx in old.fx} if old else {}
        if node.kind == "master" and self.previous is not None:
            reusable = {(fx.spec["id"], fx.spec["kind"]): fx for fx in self.previous._master.fx}
        out = []
        for i, spec in enumerate(specs):
            prev = reusable.get((spec["id"], spec["kind"]))
            if prev is not None:
                out.append(_Fx(spec, prev.effect, prev.spec))
                continue
            try:
                effect = self.effects(spec, self.sr, self.max_block)
            except ProjectError:
                raise
            except (ValueError, RuntimeError) as e:
                raise ProjectError(f"{where} > effects[{i}] {quote(spec['id'])}",
                                   f"cannot be made: {e}") from None
            out.append(_Fx(spec, effect, None))
        return out

    def clip_player(self, t: dict[str, Any], where: str, a: float, s: float) -> _ClipPlayer:
        clips = []
        for i, spec in enumerate(t["clips"]):
            cw = f"{where} > clips[{i}] {quote(spec['id'])}"
            ref = spec["source"]
            if isinstance(ref, dict):
                raise ProjectError(f"{cw} > source", f"{ref['file']!r} was not imported into "
                                   "the pool")
            S = self.frame(a, s, spec["start"])
            E = self.frame(a, s, spec["start"] + spec["length"])
            speed = s
            offset = _rounded_frames(spec["offset"], self.sr)
            try:
                if spec.get("source_bpm") is not None:
                    # pitch-preserving stretch, rendered once into a proxy of exactly the
                    # clip's frames; played from its start at speed 1
                    from companion.engine.stretch import proxy_ref
                    root = a + spec["start"] / s
                    stretched = {**spec, "length": spec["length"] / s}
                    pool: Any = self.pool
                    source = self.pool.source(proxy_ref(pool, stretched, root, self.tempo))
                    spec = {**spec, "loop": False}
                    offset, speed = 0, 1.0
                else:
                    source = self.pool.source(ref)
            except SourceError as e:
                raise ProjectError(f"{cw} > source", str(e)) from None
            if source.channels not in (1, 2):
                raise ProjectError(f"{cw} > source", f"has {source.channels} channels; a "
                                   "source has 1 or 2")
            clips.append(_Clip(spec, source, S, E, offset, speed, self.sr, self.max_block,
                               self.wait))
        return _ClipPlayer(clips, self.max_block)

    def midi(self, node: _Node, t: dict[str, Any], where: str, a: float, s: float,
             old: _Node | None, to_frame: Callable[[float], int]) -> None:
        key = (t["clips"], t["instrument"], a, s, self.p["tempo"], self.sr)
        if old is not None and old.midi is not None and old.midi_key == key:
            node.midi = old.midi  # the instrument keeps its voices across the swap
        else:
            from companion.engine.instruments import MidiContent
            try:
                node.midi = MidiContent(t["clips"], t["instrument"], to_frame, self.sr,
                                        self.max_block, self.pool, where)
            except SourceError as e:
                raise ProjectError(_at(where, "instrument"), str(e)) from None
        node.midi_key = key
        node.content_end = int(node.midi.end_frame)
        node.tail_s = float(node.midi.tail_s)

    def compensate(self, order: list[_Node], master: _Node) -> None:
        """Plugin delay compensation: every node renders its content ``adv_content`` frames
        ahead, so that whatever reaches a sum (metatrack, bus, master) is aligned, and the
        master's output lands on the timeline's own frames. An edge into a node that needs
        less advance carries a delay of the difference."""
        for node in reversed(order):
            node.latency = sum(int(fx.effect.latency_frames) for fx in node.fx
                               if not fx.bypass)
            if node is master:
                node.adv_out = 0
            else:
                node.adv_out = max(e.dest.adv_content for e in node.edges)
                for e in node.edges:
                    d = node.adv_out - e.dest.adv_content
                    if d > 0:
                        e.delay = _Delay(d, self.max_block)
            node.adv_content = node.adv_out + node.latency


def _at(where: str, field: str) -> str:
    return f"{where} > {field}"


def _kept(plan: Plan, old: _Node) -> bool:
    """Whether ``plan`` has a track of ``old``'s id and kind (its sound goes on there)."""
    new = plan._by_id.get(old.id)
    return new is not None and new.kind == old.kind


def _subtree_has(t: dict[str, Any], flag: str) -> bool:
    if t[flag]:
        return True
    return t["kind"] == "meta" and any(_subtree_has(c, flag) for c in t["children"])


def _subtree_has_bus(t: dict[str, Any]) -> bool:
    if t["kind"] == "bus":
        return True
    return t["kind"] == "meta" and any(_subtree_has_bus(c) for c in t["children"])


def _topological(master: _Node) -> list[_Node]:
    """Producers before consumers, the master last (the schema refused cycles)."""
    order: list[_Node] = []
    seen: set[int] = set()
    stack: list[tuple[_Node, int]] = [(master, 0)]
    while stack:
        node, i = stack.pop()
        if i == 0:
            if id(node) in seen:
                continue
            seen.add(id(node))
        if i < len(node.producers):
            stack.append((node, i + 1))
            p = node.producers[i]
            if id(p) not in seen:
                stack.append((p, 0))
        else:
            order.append(node)
    return order


def _tails(order: list[_Node], master: _Node) -> dict[str, float]:
    """Seconds a node's content may keep sounding downstream: its instrument's release and
    the tails of every chain it passes through on its longest way to the master."""
    down: dict[int, float] = {}
    out: dict[str, float] = {}
    for node in reversed(order):
        own = sum(float(fx.effect.tail_s) for fx in node.fx if not fx.bypass)
        after = max((down[id(e.dest)] for e in node.edges), default=0.0)
        down[id(node)] = own + after
        out[node.id] = own + after + node.tail_s
    return out


def compile_plan(project: dict[str, Any], pool: SourcePool, *,
                 max_block: int = DEFAULT_MAX_BLOCK, previous: Plan | None = None,
                 effect_factory: EffectFactory | None = None, realtime: bool = False) -> Plan:
    """Check ``project`` (raw interchange form or normalized) and compile it into a
    :class:`Plan` rendering blocks of at most ``max_block`` frames. ``previous``: the plan
    this one will replace while playing (effects and instruments of unchanged tracks carry
    over; changed gains glide). ``realtime``: never wait for a streamed source (a late read
    plays silence). Raises :class:`ProjectError` for anything that cannot be rendered."""
    if max_block < 1:
        raise ValueError(f"max_block must be at least 1, got {max_block}")
    # each plan its own cache, seeded with the previous plan's (never changed in place)
    cache = NormalizeCache(previous._norm_cache if previous is not None else None)
    normalized = normalize_project(project, pool, cache=cache)
    plan = _Compiler(normalized, pool, int(max_block), previous,
                     effect_factory or _default_effects, realtime).compile()
    plan._norm_cache = cache
    _cut_chain(plan)
    return plan


def _cut_chain(plan: Plan) -> None:
    """Plans replaced before they played stay chained (``_previous``) until one plays:
    while the transport is stopped every edit adds one. Beyond the plans a swap still looks
    at (removed tracks fade from at most :data:`_GHOST_PLANS` back) the chain is cut, so
    edits while stopped do not pile up plans; the glide of a swap that then finds no played
    plan starts from the plan's own gains, which is right when nothing was sounding."""
    cand: Plan | None = plan
    for _ in range(_GHOST_PLANS + 1):
        if cand is None:
            return
        cand = cand._previous
    if cand is not None:
        cand._previous = None


def render_range(project: dict[str, Any], pool: SourcePool, start_frame: int = 0,
                 end_frame: int | None = None, block_size: int = DEFAULT_MAX_BLOCK, *,
                 effect_factory: EffectFactory | None = None) -> NDArray[np.float32]:
    """Render frames ``[start_frame, end_frame)`` offline, ``block_size`` frames at a time:
    float32, shape ``(2, frames)``. ``end_frame`` defaults to the plan's end (the last
    clip's end plus effect tails)."""
    plan = compile_plan(project, pool, max_block=block_size, effect_factory=effect_factory)
    end = plan.end_frame if end_frame is None else end_frame
    out = np.zeros((2, max(0, end - start_frame)), np.float32)
    for f in range(start_frame, end, block_size):
        n = min(block_size, end - f)
        block = out[:, f - start_frame:f - start_frame + n]
        plan.render(f, block)
    return out
