"""The pure looper engine: a matrix of cells in columns, beat-quantized, over numpy buffers.

``Engine.process()`` is what the audio callback calls (live) and what ``ouro offline`` calls
block after block. It imports nothing of JACK and does no I/O. Real-time rules for
:meth:`Engine.process` and :meth:`Engine.skip`: bounded work, preallocated buffers only
(slices are views; every ufunc writes into an ``out=`` buffer), no locks, no logging, no
file or socket calls. Everything slow goes to the I/O side (:mod:`rtcore.ioside`) through
the ``to_io`` / ``from_io`` deques: the audio thread only appends to one and pops the other.

The behaviour is the contract in ``shared/spec/engine.md``; the choices it leaves open are
written down in ``docs/engine.md``.
"""

from __future__ import annotations

import math
from collections import deque
from threading import get_ident
from typing import Any

import numpy as np

from rtcore import commands as C
from rtcore.commands import Command
from rtcore.config import TEMPO_MAX_BPM, TEMPO_MIN_BPM, EngineConfig
from rtcore.errors import CommandError
from rtcore.kernels import (
    FROM_ROWS,
    FROM_STACK,
    RAMP_FIELDS,
    SILENT,
    begin_block,
    empty_stack,
    end_block,
    keep_tail,
    mix_rows,
    resample,
    resample_mono,
)
from rtcore.loops import Audio, ChunkPool, Take
from rtcore.midi import MESSAGE_LENGTH, MidiBuffer
from rtcore.midimap import CC_ON, PRESS, action_value, configured_map
from rtcore.recorder import push2, push_silence
from rtcore.sync import (
    CLOCK,
    CONTINUE,
    SONG_POSITION,
    START,
    STOP,
    TICKS_PER_BEAT,
    ClockFollower,
    song_position_bytes,
)
from rtcore.sync import warm_up as warm_up_sync

# varispeed (following a clock with loops): the most it plays faster or slower, how fast it
# closes a phase error, and the frames of history its interpolation reads (rtcore.kernels)
VS_MAX = 0.03
VS_TAU_S = 0.2
VS_OUT_HISTORY = 4
VS_IN_HISTORY = 6
VS_IN_DELAY = 4.0
# frames: the host hears the engine two frames late, and the engine hears the host two late
VS_ROUND_TRIP = 4

EMPTY, IDLE, RECORDING, PLAYING, SOLO = 0, 1, 2, 3, 4
STATE_NAMES = ("empty", "idle", "recording", "playing", "solo")

CLEARED = object()  # a history entry meaning "the cell was cleared here"

# reasons the audio thread refused or cut something short, reported in the status
REJECT_NAMES = {
    1: "chunk pool empty: recording cancelled",
    2: "no take shell available: recording not started",
    3: "loop longer than max_loop_seconds: recording cancelled",
    4: "a first recording cannot end on the beat it started",
    5: "undo/redo target has another length than the column's other loops",
    6: "tempo change refused: loops exist",
    7: "chunk pool empty during a recording's latency tail: silence recorded",
    8: "MIDI command refused: the cell is empty or has no such history",
    9: "tempo follows the MIDI clock: tempo and tap are ignored",
    10: "recording budget used up: the first recording ends at the next beat",
    11: "recording budget used up: not enough left for this recording",
}
_CELL_OPS = frozenset((C.OP_RECORD, C.OP_PLAY, C.OP_STOP, C.OP_SOLO, C.OP_CLEAR, C.OP_UNDO,
                       C.OP_REDO))
_CLOCK_MSG = (CLOCK,)
_START_MSG = (START,)
_STOP_MSG = (STOP,)
_CONTINUE_MSG = (CONTINUE,)
NOTE_ON, CONTROL_CHANGE, PROGRAM_CHANGE = 0x90, 0xB0, 0xC0


COMMAND_QUEUE_LIMIT = 256
# numpy's ufunc iterator sizes its scratch buffers by this (default 8192 elements); the
# stack multiply needs them, and small ones keep the callback's allocations tiny
UFUNC_BUFSIZE = 128
TAP_RESET_S = 2.0
TAP_KEEP = 4
PEAK_FALL_DB_S = 20.0  # the input meter's fall


class _Ramp:
    """A linearly smoothed value, computed from absolute frames so block splits don't matter."""

    __slots__ = ("end", "mirror", "start", "start_value", "step", "target", "value")

    def __init__(self, value: float, mirror: np.ndarray | None = None):
        self.value = value
        self.target = value
        self.step = 0.0
        self.start = 0
        self.start_value = value
        self.end = 0  # frame at which the ramp reaches target; <= now means steady
        self.mirror = mirror  # the kernels' copy (see rtcore.kernels.RAMP_END...)
        self._mirror()

    def _mirror(self) -> None:
        m = self.mirror
        if m is not None:
            m[0], m[1], m[2], m[3], m[4] = (self.end, self.start, self.start_value, self.step,
                                            self.target)

    def set(self, target: float, now: int, frames: int) -> None:
        self.value = self.at(now)
        self.target = target
        if frames <= 0 or target == self.value:
            self.value = target
            self.end = now
        else:
            self.start = now
            self.start_value = self.value
            self.step = (target - self.value) / frames
            self.end = now + frames
        self._mirror()

    def at(self, frame: int) -> float:
        if frame >= self.end:
            return self.target
        return self.start_value + self.step * (frame - self.start)

    def ramping(self, frame: int) -> bool:
        return frame < self.end

    def fill(self, frame: int, out: Audio, ramp_index: Audio) -> None:
        """``out[i] = value at frame + i + 1``, clipped at target (``ramp_index[i] = i + 1``,
        with the same shape as ``out``)."""
        n = out.shape[0]
        k = min(n, self.end - frame)
        if k > 0:
            np.add(ramp_index[:k], float(frame - self.start), out=out[:k])
            np.multiply(out[:k], self.step, out=out[:k])
            np.add(out[:k], self.start_value, out=out[:k])
        if k < n:
            out[max(k, 0) :].fill(self.target)


class Cell:
    """One cell of the matrix. Touched by the audio thread only (the status reads it)."""

    __slots__ = (
        "cap_start",
        "column",
        "gain",
        "hist",
        "hist_len",
        "hist_pos",
        "pending",
        "rec",
        "rec_end",
        "rec_first",
        "rec_start_beat",
        "recording",
        "resume",
        "row",
        "state",
        "take",
        "volume",
    )

    def __init__(self, column: int, row: int, history: int):
        self.column = column
        self.row = row
        self.state = EMPTY
        self.pending = 0  # opcode that applies at the next beat boundary, 0 for none
        self.resume = 0  # what it did when an external Stop paused it (play or solo)
        self.take: Take | None = None
        self.recording: Take | None = None  # the take of a recording in progress
        self.rec: Take | None = None  # the take whose input is being captured
        self.rec_first = False
        self.rec_start_beat = 0
        self.rec_end = -1  # frame at which a fixed-length recording turns playing
        self.cap_start = 0  # frame of the input that is buffer index 0
        self.volume = 1.0
        self.gain = _Ramp(0.0)
        self.hist: list[object] = [None] * history
        self.hist_len = 0
        self.hist_pos = -1


class Column:
    __slots__ = (
        "audible", "beats", "direct", "fading", "first_row", "index", "length", "mixing",
        "ndirect", "plan_dirty", "plan_until", "pos", "restack", "rpos", "running",
        "stack", "stack_takes",
    )

    def __init__(self, index: int, rows: int):
        self.index = index
        self.beats = 0
        self.length = 0
        self.pos = 0
        self.rpos = 0  # read position; follows pos, and keeps going while stopped cells fade
        self.running = False
        self.fading = False
        self.first_row = -1
        self.stack: Audio | None = None  # (rows, length, channels), consolidated loops
        self.stack_takes: list[Take | None] = [None] * rows
        self.restack = False  # the I/O side should rebuild ``stack``
        # the mixing plan (see Engine._plan_column)
        self.plan_dirty = True
        self.mixing = False  # the engine's mode table has rows of this column switched on
        self.plan_until = -1
        self.audible = False
        self.direct: list[Cell | None] = [None] * rows
        self.ndirect = 0


class Engine:
    """The looper. Feed it blocks with :meth:`process`; drive it with :meth:`submit`.

    >>> import numpy as np
    >>> eng = Engine(EngineConfig(block_size=64, declick_ms=0, smoothing_ms=0))
    >>> x = np.zeros((64, 2), np.float32); out = np.zeros_like(x); click = np.zeros(64, np.float32)
    >>> eng.process(x, out, click)
    >>> eng.frame
    64
    """

    def __init__(self, config: EngineConfig, pool: ChunkPool | None = None):
        cfg = config
        self.config = cfg
        self.sample_rate = cfg.sample_rate
        self.block_size = cfg.block_size
        self.channels = ch = cfg.channels
        self.ncols = cfg.columns
        self.nrows = cfg.rows
        self.beats_per_bar = cfg.beats_per_bar
        self.declick_frames = cfg.declick_frames
        self.smoothing_frames = cfg.smoothing_frames
        self.latency_frames = cfg.latency_frames
        # a shell for every cell: all of them may start recording on the same beat
        self.pool = pool or ChunkPool(ch, cfg.chunk_frames, cfg.max_chunks_per_take,
                                      cfg.declick_frames, cfg.pool_reserve_chunks,
                                      reserve_takes=cfg.columns * cfg.rows + 1,
                                      budget_frames=cfg.record_budget_frames)
        self.max_chunks = cfg.max_chunks_per_take
        self.chunk_frames = cfg.chunk_frames

        # time
        self.frame = 0
        self.tempo_bpm = cfg.tempo_bpm
        self.spb = cfg.frames_per_beat
        self.anchor_frame = 0
        self.anchor_beat = 0
        self.beat = -1  # index of the last beat boundary passed
        self.next_beat = 0
        self.next_beat_frame = 0
        self.pending_tempo = 0.0
        self.taps = [0] * TAP_KEEP
        self.ntaps = 0
        self.bar_origin = 0  # a beat that is beat 1 of a bar
        self.count_in_on = cfg.count_in
        self.count_in_until = -1  # the beat a count-in ends on, while one runs

        # MIDI clock in: the follower works in the host's frames, which differ from the
        # engine's while it plays faster or slower to stay in phase (see _follow_rate)
        self.sync_midi = cfg.sync == "midi"
        self.follower = ClockFollower(cfg.sample_rate)
        self.host_frame = 0
        self.vs_on = False  # varispeed: playing faster or slower to stay on the clock
        self.vs_ready = False  # the history is filled (see _varispeed_in)
        self.vs_c = -2.0
        self.vs_rate = 1.0
        self.vs_blocks = 0
        self.vs_tau = VS_TAU_S * cfg.sample_rate
        self.clock_lost = True
        self.ext_running = False  # the external transport: Start/Continue .. Stop
        self.ext_song_tick0 = 0  # the follower's index of the tick at song position 0
        self.ext_relocate = -1  # song position (ticks) the next tick is at, after Start etc.
        self.ext_spp = 0  # the last song position received (ticks)
        self.ext_locked = False  # the grid sits on the external beats
        self.ext_origin_beat = 0  # the engine beat at song position 0
        self.ext_relocations = 0
        self.song_beat_at_boundary = -1  # a relocation: columns jump to this song beat
        self.paused: list[Cell | None] = [None] * (cfg.columns * cfg.rows)
        self.npaused = 0
        # MIDI clock out
        self.clock_out = cfg.clock_out
        self.out_running = False
        self.out_song_tick0 = 0
        self.out_relocate = False
        self.next_tick = 0
        self.next_tick_frame = 0
        # MIDI input: the map, controller values (for CC presses), learn mode
        self.midi_map = configured_map(cfg.midi_map, columns=cfg.columns, rows=cfg.rows).table
        self.cc_last = [0] * (16 * 128)
        self.learn_armed = False
        self.learned = [0, 0, 0, 0]  # size, then up to 3 bytes
        self.learn_seq = 0
        # the block being run: its MIDI in (read at exact frames) and out
        self.mi: MidiBuffer | None = None
        self.mo: MidiBuffer | None = None
        self.mi_at = 0
        self.next_midi = -1
        self.block_start = 0
        self.block_frames = 0

        # the matrix
        self.cells = [[Cell(c, r, cfg.undo_depth) for r in range(self.nrows)]
                      for c in range(self.ncols)]
        self.columns = [Column(c, self.nrows) for c in range(self.ncols)]
        self.selected = (0, 0)
        self.solo_count = 0
        self.recording_count = 0
        self.capturing = 0  # cells whose input is being captured: captures[:capturing]
        self.captures: list[Cell | None] = [None] * (self.ncols * self.nrows)
        self.next_rec_end = -1
        self.take_serial = 0
        self.session_loads = 0
        # the session recorder's ring (see attach_recorder)
        self.rec_ring: Audio | None = None
        self.rec_cursors = np.zeros(8, np.int64)

        # global parameters
        self.ramps = np.zeros((3, RAMP_FIELDS), np.float64)  # master, monitor, click
        self.master = _Ramp(cfg.master_volume, self.ramps[0])
        self.monitor_on = cfg.monitor_input
        self.monitor = _Ramp(cfg.monitor_gain if cfg.monitor_input else 0.0, self.ramps[1])
        self.monitor_gain = cfg.monitor_gain
        self.click_on = cfg.click
        self.click_gain = _Ramp(cfg.click_volume, self.ramps[2])
        self.click_tones = _click_tones(cfg.sample_rate)
        self.click_tone = self.click_tones[0]
        self.click_pos = self.click_tone.shape[0]

        # queues to and from the I/O side (single producer, single consumer each)
        self.commands: deque[tuple[Command, int]] = deque()
        self.to_io: deque[tuple[Any, ...]] = deque()
        self.from_io: deque[tuple[Any, ...]] = deque()

        # preallocated work buffers
        # a block may run a few frames longer to follow a clock (see _varispeed_in)
        bs = self.block_size + math.ceil(self.block_size * VS_MAX) + 3
        self.vin = np.zeros((bs, ch), np.float32)
        # history, then a block: the host's input, the engine's main and click outputs
        self.xi = np.zeros((VS_IN_HISTORY + self.block_size, ch), np.float32)
        self.xo = np.zeros((VS_OUT_HISTORY + bs, ch), np.float32)
        self.xc = np.zeros(VS_OUT_HISTORY + bs, np.float32)
        self.mix = np.zeros((bs, ch), np.float32)
        # the mixing plan of every row (see _plan_column and rtcore.kernels.mix_rows): how
        # it reaches the mix, its steady gain, its column's read position and stack, and
        # the contribution of rows read one by one (ramping or not in the stack)
        self.mode = np.zeros((self.ncols, self.nrows), np.int8)
        self.gains = np.zeros((self.ncols, self.nrows), np.float32)
        self.rpos = np.zeros(self.ncols, np.int64)
        self.no_stack = empty_stack(self.nrows, ch)
        self.stack_list = [self.no_stack] * self.ncols
        self.stacks = tuple(self.stack_list)
        self.rows3 = np.zeros((self.ncols, self.nrows, bs, ch), np.float32)
        self.gbuf = np.zeros((bs, ch), np.float32)
        self.ramp_index = np.repeat(np.arange(1, bs + 1, dtype=np.float32)[:, None], ch, 1)
        self.zeros_in = np.zeros((bs, ch), np.float32)
        self.skip_click = np.zeros(bs, np.float32)  # an xrun's gap makes no click: scratch
        self.ring_frames = 1 << max(10, math.ceil(math.log2(bs + self.declick_frames + 1)))
        self.ring = np.zeros((self.ring_frames, ch), np.float32)
        # the input meter (status ``input_peak_dbfs``): peak magnitude per channel, falling
        # PEAK_FALL_DB_S per second, so a status read a few times a second sees every peak
        self.in_peaks = np.zeros(ch, np.float64)
        self.peak_fall = -PEAK_FALL_DB_S / 20.0 * math.log(10.0) / self.sample_rate
        fade = (np.arange(self.declick_frames, dtype=np.float32) + 0.5) / max(
            self.declick_frames, 1)
        self.fade = np.repeat(fade[:, None], ch, 1)  # per channel: no broadcast in the callback
        self.fade_inv = (1.0 - self.fade).astype(np.float32)
        self.fade_tmp = np.zeros((max(self.declick_frames, 1), ch), np.float32)

        # counters for the status
        self._bufsize_thread = -1
        self.xruns = 0
        self.missed_frames = 0
        self.commands_dropped = 0
        # commands queued (control side) and taken by the audio thread: a control thread
        # that saw ``commands_submitted == k`` knows the audio thread has acted on those k
        # once ``commands_taken >= k`` (the OSC server's ``/ouro/ack``)
        self.commands_submitted = 0
        self.commands_taken = 0
        self.rejects = 0
        self.last_reject = 0
        self.midi_in_events = 0
        self.midi_malformed = 0
        self.midi_mapped = 0
        self._schedule_next_beat(0)
        warm_up_sync()
        # compile (or load) the kernels for these argument types now, not in the callback
        mix_rows(self.stacks, self.mode, self.gains, self.rpos, self.rows3, 0, self.mix, 0)
        begin_block(self.zeros_in, 0, self.ring, 0, self.skip_click, self.in_peaks, self.peak_fall)
        end_block(self.mix, self.zeros_in, self.gbuf, self.skip_click, 0, 0, self.ramps, False)
        resample(self.xo, 1.0, 1.0, self.gbuf, 0)
        resample_mono(self.xc, 1.0, 1.0, self.skip_click, 0)
        keep_tail(self.xo, 0, self.gbuf, 0)
        keep_tail(self.xc, 0, self.skip_click, 0)

    # ------------------------------------------------------------------ control side

    def submit(self, cmd: Command, frame: int | None = None) -> None:
        """Queue a validated command (any thread but the audio thread).

        Raises :class:`CommandError` when the command makes no sense in the current state;
        then nothing changes. ``frame`` (offline) is when it was given, for tap tempo.
        """
        op = cmd.op
        if op in (C.OP_RECORD, C.OP_PLAY, C.OP_STOP, C.OP_SOLO, C.OP_CLEAR, C.OP_UNDO,
                  C.OP_REDO, C.OP_VOLUME, C.OP_SELECT):
            cell = self.cells[cmd.column][cmd.row]
            reason = _cell_refusal(op, cell)
            if reason is _EMPTY and self._record_coming(cell):
                reason = ""  # a record queued ahead of it fills the cell first
            if reason:
                raise CommandError(f"{cmd.name}: cell ({cmd.column}, {cmd.row}) {reason}")
        elif op in (C.OP_TEMPO, C.OP_TAP) and self.sync_midi:
            raise CommandError(f"{cmd.name}: the tempo follows the MIDI clock (sync midi); "
                               f"/ouro/sync internal first")
        elif op in (C.OP_TEMPO, C.OP_TAP) and self._loops_exist():
            raise CommandError(
                f"{cmd.name}: tempo cannot change while loops exist (clear them first)")
        if len(self.commands) >= COMMAND_QUEUE_LIMIT:
            self.commands_dropped += 1
            raise CommandError(f"{cmd.name}: command queue full, command dropped")
        self.commands.append((cmd, self.frame if frame is None else frame))
        self.commands_submitted += 1

    def _record_coming(self, cell: Cell) -> bool:
        """A record for ``cell`` is pending or still queued (control side only)."""
        if cell.pending == C.OP_RECORD:
            return True
        # list() copies the deque in one step under the GIL, so the audio thread's popleft
        # cannot disturb the iteration
        return any(cmd.name == "record" and cmd.column == cell.column and cmd.row == cell.row
                   for cmd, _ in list(self.commands))

    def _loops_exist(self) -> bool:
        return any(c.take is not None or c.state == RECORDING or c.pending == C.OP_RECORD
                   for col in self.cells for c in col)

    # ------------------------------------------------------------------ audio side

    def process(self, inputs: Audio, main_out: Audio, click_out: Audio,
                midi_in: MidiBuffer | None = None, midi_out: MidiBuffer | None = None) -> None:
        """Run one block: ``inputs`` (frames, channels) in; ``main_out`` (frames, channels)
        and ``click_out`` (frames,) written over entirely. Frames <= ``block_size``.

        Real-time safe (see the module docstring).
        """
        n = inputs.shape[0]
        if self._bufsize_thread != get_ident():  # numpy's setting is per thread
            np.setbufsize(UFUNC_BUFSIZE)
            self._bufsize_thread = get_ident()
        if self.from_io:  # checked here: most blocks have nothing, and a call costs
            self._drain_io()
        if self.commands:
            self._drain_commands()
        if self.capturing and self.pool.exhausted:
            self._budget_guard()
        if midi_out is not None and midi_out.count:
            midi_out.clear()
        self.mo = midi_out
        start = self.frame
        self.block_start = start
        self.block_frames = n
        self.mi = midi_in
        if midi_in is not None and midi_in.count:
            self.midi_in_events += midi_in.count
            self.mi_at = 0
            self.next_midi = start + min(max(int(midi_in.frames[0]), 0), n - 1)
        ins, outs, click = inputs, main_out, click_out
        m = n
        rate = self._follow_rate() if self.sync_midi else 0.0
        if rate:
            m, ins, outs, click = self._varispeed_in(inputs, n, rate)
        begin_block(ins, m, self.ring, start, click, self.in_peaks, self.peak_fall)
        self._run(m, click, ins)
        # main out = mix * master + input * monitor; the click at its volume
        monitor = self.monitor
        end_block(self.mix, ins, outs, click, start, m, self.ramps,
                  monitor.target != 0.0 or start < monitor.end)
        if rate:
            self._varispeed_out(main_out, click_out, n, m, rate)
        elif self.sync_midi:  # the history a varispeed starts from
            keep_tail(self.xi, VS_IN_HISTORY, inputs, n)
            keep_tail(self.xo, VS_OUT_HISTORY, main_out, n)
            keep_tail(self.xc, VS_OUT_HISTORY, click_out, n)
        if self.rec_ring is not None:  # the session recorder (returns at once when off)
            push2(self.rec_ring, self.rec_cursors, inputs, main_out, n)
        self.host_frame += n
        self.next_midi = -1
        self.mi = None
        self.mo = None

    def _varispeed_in(self, inputs: Audio, n: int, rate: float
                      ) -> tuple[int, Audio, Audio, Audio]:
        """A block that plays the engine ``rate`` times as fast as the host (see
        :meth:`_follow_rate`): how many engine frames ``m`` it runs, its input read from the
        host's at the matching positions, and the scratch outputs it writes.

        Host output frame ``i`` plays engine position ``c + i * rate`` of this block (the
        first engine frame is 0), ``c`` in about ``[-2, -1)``: two frames behind, so that
        the interpolation has the points after it. Engine frame ``j`` records host input
        position ``(j - c) / rate - VS_IN_DELAY``, also behind, for the same reason."""
        c = self.vs_c
        m = math.floor(c + (n - 1) * rate) + 3
        xi = self.xi
        hi = VS_IN_HISTORY
        xi[hi:hi + n] = inputs
        vin = self.vin
        resample(xi, hi - c / rate - VS_IN_DELAY, 1.0 / rate, vin, m)
        keep_tail(xi, hi, inputs, n)
        ho = VS_OUT_HISTORY
        self.vs_blocks += 1
        return m, vin[:m], self.xo[ho:ho + m], self.xc[ho:ho + m]

    def _varispeed_out(self, main_out: Audio, click_out: Audio, n: int, m: int,
                       rate: float) -> None:
        """The host's outputs from the engine's ``m`` frames (see :meth:`_varispeed_in`)."""
        ho = VS_OUT_HISTORY
        c = self.vs_c
        resample(self.xo, ho + c, rate, main_out, n)
        resample_mono(self.xc, ho + c, rate, click_out, n)
        keep_tail(self.xo, ho, self.xo[ho:], m)
        keep_tail(self.xc, ho, self.xc[ho:], m)
        self.vs_c = c + n * rate - m

    def skip(self, missed_frames: int) -> None:
        """An xrun: ``missed_frames`` were never seen. Advance everything through the gap as
        if they had been silence, producing no output. Bounded by the gap's length in blocks.
        """
        if missed_frames <= 0:
            return
        self.xruns += 1
        self.missed_frames += missed_frames
        self.host_frame += missed_frames
        if self.rec_ring is not None:  # the recording keeps the timeline: silence
            push_silence(self.rec_ring, self.rec_cursors, missed_frames)
        self.out_relocate = self.out_running  # the gap's ticks are lost: tell where we are
        self._drain_io()
        self._drain_commands()
        left = missed_frames
        while left > 0:
            n = min(left, self.block_size)
            start = self.frame
            begin_block(self.zeros_in, n, self.ring, start, self.skip_click, self.in_peaks,
                        self.peak_fall)
            self._run(n, None, self.zeros_in)
            left -= n
        if self.clock_out:  # the gap's ticks are lost (a song position goes out instead)
            self._reschedule_ticks(self.frame)

    def _run(self, n: int, click_out: Audio | None, inputs: Audio) -> None:
        """Advance ``n`` frames, splitting at beat boundaries and recording ends."""
        off = 0
        end = self.frame + n
        while self.frame < end:
            now = self.frame
            if now == self.next_midi:
                self._midi_events(now)
            if now == self.next_beat_frame:
                self._beat_boundary(now)
            if now == self.next_rec_end:
                self._fixed_recordings_end(now)
            stop = end
            if self.next_beat_frame < stop:
                stop = self.next_beat_frame
            if now < self.next_rec_end < stop:
                stop = self.next_rec_end
            if now < self.next_midi < stop:
                stop = self.next_midi
            if self.clock_out and self.next_tick_frame < stop and self.mo is not None:
                self._send_ticks(stop)
            m = stop - now
            if self.capturing:
                # before mixing: a loop may play what was recorded earlier in this block
                self._capture(inputs[off : off + m], now, m)
            self._segment(off, m, click_out)
            off += m
            self.frame = stop

    def _segment(self, off: int, m: int, click_out: Audio | None) -> None:
        now = self.frame
        render = click_out is not None
        rpos = self.rpos
        for col in self.columns:
            if col.length == 0 or not (col.running or col.fading):
                if col.mixing:
                    self.mode[col.index].fill(SILENT)
                    col.mixing = False
                    col.plan_dirty = True
                if col.running:  # a first recording: the position counts up
                    col.pos += m
                continue
            if render:
                # a column whose rows all play steadily from its stack needs nothing here
                if (col.ndirect or col.plan_dirty or not col.audible
                        or 0 <= col.plan_until <= now):
                    self._mix_column(col, m, now)
                rpos[col.index] = col.rpos
            else:
                self._column_fading_check(col, now + m)
            length = col.length
            if col.running:
                col.pos = (col.pos + m) % length
                col.rpos = col.pos
            else:
                col.rpos = (col.rpos + m) % length
        if render:
            # every row of every column, summed in one fixed order: the output of a cell
            # does not depend on how it is read, which block it falls in, or xruns
            mix_rows(self.stacks, self.mode, self.gains, rpos, self.rows3, m, self.mix, off)
            tone = self.click_tone
            cp = self.click_pos
            k = min(m, tone.shape[0] - cp)
            if k > 0:
                np.copyto(click_out[off : off + k], tone[cp : cp + k])  # type: ignore[index]
        self.click_pos = min(self.click_pos + m, self.click_tone.shape[0])

    def _plan_column(self, col: Column, now: int) -> None:
        """Decide, until something changes, where each row of the column reads from.

        Rows that play steadily from the column's stack (every consolidated loop of the
        column in one array) are read by the mixing kernel itself, at their gain; ramping
        rows and rows not in the stack are read one by one into the column's row buffer.
        Silent rows are skipped. Either way a row adds ``loop sample * gain`` (rounded to
        float32) and the rows are summed in row order, so the output does not depend on
        the path.
        """
        cells = self.cells[col.index]
        mode = self.mode[col.index]
        gains = self.gains[col.index]
        stack = col.stack
        col.plan_until = -1
        col.ndirect = 0
        col.audible = False
        for r in range(self.nrows):
            cell = cells[r]
            take = cell.take
            g = cell.gain
            ramping = g.ramping(now)
            if take is None or (g.target == 0.0 and not ramping):
                mode[r] = SILENT
                continue
            col.audible = True
            if ramping:
                if col.plan_until < 0 or g.end < col.plan_until:
                    col.plan_until = g.end
            elif stack is not None and take is col.stack_takes[r]:
                mode[r] = FROM_STACK
                gains[r] = g.target
                continue
            mode[r] = FROM_ROWS
            col.direct[col.ndirect] = cell
            col.ndirect += 1
        col.mixing = col.audible
        col.plan_dirty = False

    def _mix_column(self, col: Column, m: int, now: int) -> None:
        """Fill the column's rows of the row buffer for the next ``m`` frames."""
        if col.plan_dirty or 0 <= col.plan_until <= now:
            self._plan_column(col, now)
        if not col.audible:
            if not col.running:
                col.fading = False
                col.rpos = 0
            return
        nd = col.ndirect
        if nd == 0:
            return
        length = col.length
        rows3 = self.rows3[col.index]
        direct = col.direct
        a = col.rpos
        done = 0
        while done < m:
            k = min(m - done, length - a)
            t0 = now + done
            for i in range(nd):
                cell: Cell = direct[i]  # type: ignore[assignment]  # first nd are set
                g = cell.gain
                take: Take = cell.take  # type: ignore[assignment]  # planned: holds a loop
                out = rows3[cell.row, done : done + k]
                if g.end > t0:
                    g.fill(t0, self.gbuf[:k], self.ramp_index)
                    take.read_scaled(a, self.gbuf[:k], out)
                elif take.data is not None:  # consolidated: one slice, one ufunc
                    np.multiply(take.data[a : a + k], g.target, out=out)
                else:
                    take.read_scaled(a, g.target, out)
            done += k
            a += k
            if a >= length:
                a = 0

    def _column_fading_check(self, col: Column, frame: int) -> None:
        if col.running:
            return
        for cell in self.cells[col.index]:
            if cell.take is not None and (cell.gain.target != 0.0 or cell.gain.ramping(frame)):
                return
        col.fading = False
        col.rpos = 0

    # ------------------------------------------------------------------ commands

    def _drain_commands(self) -> None:
        q = self.commands
        while q:
            cmd, frame = q.popleft()
            self._apply_command(cmd, frame)
            self.commands_taken += 1

    def _apply_command(self, cmd: Command, frame: int) -> None:
        self._apply(cmd.op, cmd.column, cmd.row, cmd.value, cmd.gain, frame)

    def _apply(self, op: int, column: int, row: int, value: float, gain: float,
               frame: int) -> None:
        if op in _CELL_OPS:
            self.cells[column][row].pending = op  # the last command before the boundary wins
            return
        now = self.frame
        if op == C.OP_TEMPO:
            self.pending_tempo = value
        elif op == C.OP_VOLUME:
            cell = self.cells[column][row]
            cell.volume = value
            if self._audible(cell):
                cell.gain.set(value, now, self.smoothing_frames)
                self.columns[cell.column].plan_dirty = True
        elif op == C.OP_SELECT:
            self.selected = (column, row)
        elif op == C.OP_TAP:
            self._tap(frame)
        elif op == C.OP_CLICK:
            self.click_on = value == 1.0
        elif op == C.OP_CLICK_VOLUME:
            self.click_gain.set(value, now, self.smoothing_frames)
        elif op == C.OP_MASTER_VOLUME:
            self.master.set(value, now, self.smoothing_frames)
        elif op == C.OP_MONITOR:
            self.monitor_on = value == 1.0
            self.monitor_gain = gain
            self.monitor.set(gain if self.monitor_on else 0.0, now, self.smoothing_frames)
        elif op == C.OP_SYNC:
            midi = value == 1.0
            if midi and not self.sync_midi:
                self.vs_ready = False
                self.follower.reset()
                self.clock_lost = True
                self.ext_locked = False
                self.ext_relocate = -1
            self.sync_midi = midi
        elif op == C.OP_CLOCK_OUT:
            on = value == 1.0
            if on and not self.clock_out:
                self._reschedule_ticks(now)
            elif not on and self.out_running:
                self._midi_out(now, _STOP_MSG)
                self.out_running = False
            self.clock_out = on
        elif op == C.OP_COUNT_IN:
            self.count_in_on = value == 1.0

    # ------------------------------------------------------------------ MIDI in

    def _midi_events(self, now: int) -> None:
        """Every MIDI input event of the block at frame ``now``, in order."""
        mi = self.mi
        assert mi is not None
        off = now - self.block_start
        last = self.block_frames - 1
        i = self.mi_at
        count = mi.count
        while i < count and min(max(int(mi.frames[i]), 0), last) <= off:
            self._midi_message(mi, i, now)
            i += 1
        self.mi_at = i
        self.next_midi = (self.block_start + min(max(int(mi.frames[i]), 0), last)
                          if i < count else -1)

    def _midi_message(self, mi: MidiBuffer, i: int, now: int) -> None:
        size = int(mi.sizes[i])
        data = mi.data[i]
        status = int(data[0])
        # a message must have its status byte, exactly the data bytes that status takes
        # (from mido's table), and data bytes below 0x80; anything else is dropped, counted
        if size != MESSAGE_LENGTH[status] or (size > 1 and int(data[1]) > 0x7F) or (
                size > 2 and int(data[2]) > 0x7F):
            self.midi_malformed += 1
            return
        if status >= 0xF0:
            if self.sync_midi:
                if status == CLOCK:
                    self._ext_tick(now, self.host_frame + int(mi.frames[i]))
                elif status == START or status == CONTINUE or status == STOP:
                    self._ext_transport(status, now)
                elif status == SONG_POSITION:
                    self.ext_spp = (int(data[1]) | int(data[2]) << 7) * 6
                    if self.ext_running:
                        self.ext_relocate = self.ext_spp
            return
        kind = status & 0xF0
        number = int(data[1])
        value = int(data[2]) if size > 2 else 0
        if kind == NOTE_ON and value == 0:
            return  # a note off
        if kind != NOTE_ON and kind != CONTROL_CHANGE and kind != PROGRAM_CHANGE:
            return
        previous = 0
        if kind == CONTROL_CHANGE:
            k = (status & 0x0F) << 7 | number
            previous = self.cc_last[k]
            self.cc_last[k] = value
        if self.learn_armed:
            learned = self.learned
            learned[0] = size
            learned[1] = status
            learned[2] = number
            learned[3] = value
            self.learn_armed = False
            self.learn_seq += 1
            return
        actions = self.midi_map.get(status << 8 | number)
        if actions is None:
            return
        self.midi_mapped += 1
        for action in actions:
            if action[4] == PRESS:
                if kind == CONTROL_CHANGE and not previous < CC_ON <= value:
                    continue
                v = action[3]
            else:
                v = action_value(action, value)
            self._midi_command(action[0], action[1], action[2], v, now)

    def _midi_command(self, op: int, column: int, row: int, value: float, now: int) -> None:
        """A mapped command: the checks :meth:`submit` makes, as a refusal counted in the
        status instead of an exception."""
        if op in _CELL_OPS:
            cell = self.cells[column][row]
            reason = _cell_refusal(op, cell)
            if reason and not (reason is _EMPTY and cell.pending == C.OP_RECORD):
                self._reject(8)
                return
        elif op == C.OP_TEMPO or op == C.OP_TAP:
            if self.sync_midi:
                self._reject(9)
                return
            if self._loops_exist_rt():
                self._reject(6)
                return
        self._apply(op, column, row, value, self.monitor_gain, now)

    # ------------------------------------------------------------------ MIDI clock in

    def _ext_tick(self, now: int, host: int) -> None:
        """A clock tick, handled at engine frame ``now``; it arrived at host frame ``host``
        (they differ while the engine plays faster or slower than the host)."""
        fol = self.follower
        fol.tick(host)
        self.clock_lost = False
        if self.ext_relocate >= 0:  # Start, Continue or a song position: this tick is it
            self.ext_song_tick0 = fol.index - self.ext_relocate
            self.ext_relocate = -1
            self.ext_locked = False
        song_tick = fol.index - self.ext_song_tick0
        if not self.ext_locked:
            if song_tick % TICKS_PER_BEAT or fol.period <= 0.0:
                return
            # this tick is a beat: from here the grid sits on the external beats
            song_beat = song_tick // TICKS_PER_BEAT
            k = self.next_beat
            self.ext_origin_beat = k - song_beat
            self.bar_origin = self.ext_origin_beat
            self.ext_locked = True
            self.ext_relocations += 1
            if not self._loops_exist_rt():
                self._set_spb(fol.period * TICKS_PER_BEAT)
            self._anchor_next_beat(now, now)
            self.song_beat_at_boundary = song_beat
            if self.ext_running:
                self._resume_paused()
            return
        if not self._loops_exist_rt():
            self._place_grid(now)

    def _place_grid(self, now: int) -> None:
        """No loops: the tempo is free, so the next beat goes where the fit puts it."""
        fol = self.follower
        spb = fol.period * TICKS_PER_BEAT
        # no period yet (fewer than two ticks): no tempo to place the grid by
        if spb <= 0.0 or not TEMPO_MIN_BPM <= self.sample_rate * 60.0 / spb <= TEMPO_MAX_BPM:
            return
        k = self.next_beat
        at = fol.frame_of(self.ext_song_tick0 + (k - self.ext_origin_beat) * TICKS_PER_BEAT)
        # the host hears engine frame e at host_frame + (e - block_start - vs_c)
        f = round(at + self.vs_c) + (self.block_start - self.host_frame)
        self._set_spb(spb)
        self._anchor_next_beat(max(f, now), now)

    def _anchor_next_beat(self, f: int, now: int) -> None:
        """The next beat is at frame ``f`` (``>= now``), and the grid runs on from there."""
        self.anchor_beat = self.next_beat
        self.anchor_frame = f
        self.next_beat_frame = f
        if self.clock_out:
            self._reschedule_ticks(now)

    def _set_spb(self, spb: float) -> None:
        self.spb = spb
        self.tempo_bpm = self.sample_rate * 60.0 / spb

    def _follow_rate(self) -> float:
        """With loops the tempo is fixed, so the engine keeps its beats on the clock's by
        playing faster or slower: engine frames per host frame for this block. Without loops
        (or a clock) the rate is 1: the host's frames are the engine's, two frames later
        (0.0 for the first block after ``sync midi``, which runs plain).

        The rate is the ratio of the clock's beat length to the engine's, corrected by the
        distance between the engine's audible position and the clock's (in frames, both
        measured to the engine's next beat), closed with a time constant of VS_TAU_S."""
        fol = self.follower
        if not self.clock_lost and fol.lost(self.host_frame):
            self.clock_lost = True
        if not self.vs_ready:  # the first block: plain, to fill the history
            self.vs_ready = True
            self.vs_c = -2.0
            return 0.0
        if self.clock_lost or not self.ext_locked or not self._loops_exist_rt():
            self.vs_on = False
            return 1.0
        self.vs_on = True
        clock_spb = fol.period * TICKS_PER_BEAT
        if clock_spb <= 0.0:
            return 1.0
        at = fol.frame_of(self.ext_song_tick0
                          + (self.next_beat - self.ext_origin_beat) * TICKS_PER_BEAT)
        ratio = self.spb / clock_spb
        late = (self.next_beat_frame - self.frame - self.vs_c) - (at - self.host_frame) * ratio
        rate = ratio + late / self.vs_tau
        rate = min(max(rate, 1.0 - VS_MAX), 1.0 + VS_MAX)
        self.vs_rate = rate
        return rate

    def _ext_transport(self, status: int, now: int) -> None:
        if status == STOP:
            if self.ext_running and self.follower.index >= 0:
                self.ext_spp = self.follower.index + 1 - self.ext_song_tick0
            self.ext_running = False
            self._pause_all(now)
            return
        self.ext_running = True
        self.ext_relocate = 0 if status == START else self.ext_spp

    def _pause_all(self, now: int) -> None:
        """The external transport stopped: every running cell stops now (recordings are
        cancelled) and is remembered, to play again when the transport starts."""
        for col in self.columns:
            touched = False
            for cell in self.cells[col.index]:
                if cell.state == RECORDING:
                    self._cancel(col, cell, now)
                    touched = True
                elif cell.state == PLAYING or cell.state == SOLO:
                    if self.npaused < len(self.paused):
                        self.paused[self.npaused] = cell
                        self.npaused += 1
                    cell.resume = C.OP_SOLO if cell.state == SOLO else C.OP_PLAY
                    self._set_state(cell, IDLE, now)
                    touched = True
            if touched:
                self._update_column(col, now)

    def _resume_paused(self) -> None:
        for i in range(self.npaused):
            cell = self.paused[i]
            assert cell is not None
            if cell.take is not None and cell.state == IDLE and not cell.pending:
                cell.pending = cell.resume
            self.paused[i] = None
        self.npaused = 0

    # ------------------------------------------------------------------ MIDI clock out

    def _midi_out(self, f: int, message: tuple[int, ...]) -> None:
        mo = self.mo
        if mo is not None:
            mo.add(min(max(f - self.block_start, 0), self.block_frames - 1), message)

    def _tick_frame(self, t: int) -> int:
        return self.anchor_frame + round(
            (t - self.anchor_beat * TICKS_PER_BEAT) * self.spb / TICKS_PER_BEAT)

    def _reschedule_ticks(self, now: int) -> None:
        """The grid moved (a tempo change, a relocation): the next tick, at or after
        ``now``, from the new grid; never one already sent."""
        per = self.spb / TICKS_PER_BEAT
        t = self.anchor_beat * TICKS_PER_BEAT + math.ceil((now - self.anchor_frame) / per)
        while t > self.next_tick and self._tick_frame(t - 1) >= now:
            t -= 1
        while self._tick_frame(t) < now:
            t += 1
        self.next_tick = max(t, self.next_tick)
        self.next_tick_frame = max(self._tick_frame(self.next_tick), now)

    def _send_ticks(self, stop: int) -> None:
        """Every clock tick before ``stop``, at its exact frame."""
        while self.next_tick_frame < stop:
            t = self.next_tick
            f = self.next_tick_frame
            song = t - self.out_song_tick0
            if self.out_relocate and song % 6 == 0:
                # after an xrun: where the song is, then go on from there
                self._midi_out(f, song_position_bytes(song // 6))
                self._midi_out(f, _CONTINUE_MSG)
                self.out_relocate = False
            self._midi_out(f, _CLOCK_MSG)
            self.next_tick = t + 1
            self.next_tick_frame = self._tick_frame(t + 1)

    def _transport_out(self, f: int, k: int) -> None:
        """Start when the first loop starts from silence, Stop when everything stops."""
        running = False
        for col in self.columns:
            if col.running:
                running = True
                break
        if running and not self.out_running:
            self.out_running = True
            self.out_song_tick0 = k * TICKS_PER_BEAT
            self.out_relocate = False
            self._midi_out(f, _START_MSG)
        elif not running and self.out_running:
            self.out_running = False
            self._midi_out(f, _STOP_MSG)

    def _tap(self, frame: int) -> None:
        if self.ntaps and frame - self.taps[(self.ntaps - 1) % TAP_KEEP] > (
                TAP_RESET_S * self.sample_rate):
            self.ntaps = 0
        self.taps[self.ntaps % TAP_KEEP] = frame
        self.ntaps += 1
        k = min(self.ntaps, TAP_KEEP)
        if k >= 2:
            first = self.taps[(self.ntaps - k) % TAP_KEEP]
            interval = (frame - first) / (k - 1)
            if interval > 0:
                bpm = self.sample_rate * 60.0 / interval
                if TEMPO_MIN_BPM <= bpm <= TEMPO_MAX_BPM:
                    self.pending_tempo = bpm

    def _reject(self, code: int) -> None:
        self.rejects += 1
        self.last_reject = code

    # ------------------------------------------------------------------ beat boundaries

    def _schedule_next_beat(self, after_frame: int) -> None:
        k = self.anchor_beat + max(0, math.floor((after_frame - self.anchor_frame) / self.spb))
        while self._beat_frame(k) < after_frame:
            k += 1
        while k > self.anchor_beat and self._beat_frame(k - 1) >= after_frame:
            k -= 1
        self.next_beat = k
        self.next_beat_frame = self._beat_frame(k)

    def _beat_frame(self, k: int) -> int:
        return self.anchor_frame + round((k - self.anchor_beat) * self.spb)

    def _beat_boundary(self, f: int) -> None:
        k = self.next_beat
        self.beat = k
        if self.pending_tempo:
            if self._loops_exist_rt():
                self._reject(6)
            else:
                self.tempo_bpm = self.pending_tempo
                self.spb = self.sample_rate * 60.0 / self.tempo_bpm
                self.anchor_frame = f
                self.anchor_beat = k
                self.bar_origin = k
                if self.clock_out:
                    self._reschedule_ticks(f)
            self.pending_tempo = 0.0
        counting = self._count_in(k)
        if not counting:
            for col in self.columns:
                self._column_boundary(col, f, k)
        if self.song_beat_at_boundary >= 0:
            self._relocate_columns(self.song_beat_at_boundary)
            self.song_beat_at_boundary = -1
        if self.click_on or counting:
            self.click_tone = self.click_tones[0 if (k - self.bar_origin) %
                                               self.beats_per_bar == 0 else 1]
            self.click_pos = 0
        if self.clock_out:
            self._transport_out(f, k)
        self.next_beat = k + 1
        self.next_beat_frame = self._beat_frame(k + 1)

    def _count_in(self, k: int) -> bool:
        """True while a count-in holds the cells' pending commands back (beat ``k``)."""
        if self.count_in_until >= 0:
            if k < self.count_in_until:
                return True
            self.count_in_until = -1
            return False
        if not self.count_in_on or (self.sync_midi and self.ext_locked):
            return False
        pending = False
        for col in self.columns:
            if col.running:
                return False
            for cell in self.cells[col.index]:
                if cell.pending == C.OP_RECORD:
                    pending = True
        if not pending:
            return False
        # a bar of click first; the recording then starts on its beat 1
        self.count_in_until = k + self.beats_per_bar
        self.bar_origin = k
        return True

    def _relocate_columns(self, song_beat: int) -> None:
        """The external song position jumped: running columns go where a loop started at
        song position 0 would be."""
        for col in self.columns:
            if col.running and col.beats:
                col.pos = round((song_beat % col.beats) * self.spb) % col.length
                col.rpos = col.pos
                col.plan_dirty = True

    def _loops_exist_rt(self) -> bool:
        for col in self.columns:
            if col.beats or col.first_row >= 0:
                return True
        return False

    def _column_boundary(self, col: Column, f: int, k: int) -> None:
        cells = self.cells[col.index]
        touched = False
        for cell in cells:
            op = cell.pending
            if not op:
                continue
            cell.pending = 0
            touched = True
            if op == C.OP_RECORD:
                self._do_record(col, cell, f, k)
            elif op == C.OP_PLAY:
                self._do_play(col, cell, f, k, PLAYING)
            elif op == C.OP_SOLO:
                self._do_play(col, cell, f, k, SOLO)
            elif op == C.OP_STOP:
                if cell.state == RECORDING:
                    self._cancel(col, cell, f)
                elif cell.take is not None:
                    self._set_state(cell, IDLE, f)
            elif op == C.OP_CLEAR:
                if cell.state == RECORDING:
                    self._cancel(col, cell, f)
                if cell.take is not None:
                    self._push_history(cell, CLEARED)
                    self._set_take(col, cell, None, f)
            elif op in (C.OP_UNDO, C.OP_REDO):
                if cell.state == RECORDING:
                    self._cancel(col, cell, f)
                else:
                    self._step_history(col, cell, -1 if op == C.OP_UNDO else 1, f)
        if touched:
            self._update_column(col, f)

    def _do_record(self, col: Column, cell: Cell, f: int, k: int) -> None:
        if cell.state == RECORDING:
            if cell.rec_first:
                self._finish_first(col, f, k)
            return  # a fixed-length recording ends by itself
        if col.first_row >= 0:
            if self.cells[col.index][col.first_row].rec_start_beat == k:
                self._reject(4)
                return
            if not self._finish_first(col, f, k):
                return
        if col.beats and self.pool.exhausted and len(self.pool.chunks) * self.chunk_frames \
                < col.length + self.latency_frames + self.chunk_frames:
            self._reject(11)  # a fixed length the budget cannot hold: not started
            return
        take = self.pool.take_shell()
        if take is None:
            self._reject(2)
            return
        self.take_serial += 1
        take.reset(self.take_serial)
        take.preroll_frames = 0
        self._start_capture(cell, take)
        cell.recording = take
        cell.rec_start_beat = k
        # following a clock, the host's input and output pass two frames of history each
        cell.cap_start = f + self.latency_frames + (VS_ROUND_TRIP if self.sync_midi else 0)
        self._set_state(cell, RECORDING, f)
        self.recording_count += 1
        if col.beats == 0:
            cell.rec_first = True
            cell.rec_end = -1
            col.first_row = cell.row
            if not col.running:
                col.pos = 0
        else:
            cell.rec_first = False
            take.length = col.length
            take.beats = col.beats
            take.sync_offset = col.pos if col.running else 0
            cell.rec_end = f + col.length
            self._update_next_rec_end()
        col.running = True

    def _budget_guard(self) -> None:
        """The recording budget is used up, so the free chunks are all there is: a first
        recording that they would not carry past the next beat (plus one beat, the latency
        tail and a block) ends on that beat, as if ``record`` had been pressed (code 10)."""
        free = len(self.pool.chunks) * self.chunk_frames
        margin = int(self.spb) + self.latency_frames + self.block_size
        need = 0
        for i in range(self.capturing):
            cell: Cell = self.captures[i]  # type: ignore[assignment]
            take = cell.rec
            if take is None:
                continue
            room = take.nchunks * self.chunk_frames - take.captured  # left in its chunks
            if take.length:
                need += max(take.length - take.captured - room, 0)
            else:
                need += max(self.next_beat_frame - self.frame + margin - room, 0)
        if need <= free:
            return
        for i in range(self.capturing):
            cell = self.captures[i]  # type: ignore[assignment]
            if cell.rec_first and cell.state == RECORDING and cell.pending != C.OP_RECORD:
                cell.pending = C.OP_RECORD
                self._reject(10)

    def _finish_first(self, col: Column, f: int, k: int) -> bool:
        cell = self.cells[col.index][col.first_row]
        take = cell.recording
        assert take is not None
        beats = k - cell.rec_start_beat
        if beats <= 0:
            self._reject(4)
            return False
        length = round(beats * self.spb)
        if length > self.config.max_loop_frames:
            self._reject(3)
            self._cancel(col, cell, f)
            return False
        col.first_row = -1
        col.beats = beats
        col.length = length
        col.pos = 0
        col.rpos = 0
        take.beats = beats
        take.length = length
        take.sync_offset = 0
        if take.captured > length:
            take.captured = length
        cell.rec_first = False
        self._recording_done(col, cell, f)
        if take.captured >= length and cell.rec is take:
            self._finish_capture(cell)
        return True

    def _do_play(self, col: Column, cell: Cell, f: int, k: int, state: int) -> None:
        if cell.state == RECORDING:
            if cell.rec_first:
                if not self._finish_first(col, f, k):
                    return
            else:
                return  # it turns playing by itself when its length is recorded
        if cell.take is None:
            return
        if state == SOLO:
            for row in self.cells:
                for other in row:
                    if other is not cell and other.state == SOLO:
                        self._set_state(other, PLAYING, f)
        self._set_state(cell, state, f)

    def _fixed_recordings_end(self, f: int) -> None:
        for col in self.columns:
            for cell in self.cells[col.index]:
                if cell.recording is not None and cell.rec_end == f:
                    self._recording_done(col, cell, f)
        self._update_next_rec_end()

    def _recording_done(self, col: Column, cell: Cell, f: int) -> None:
        """The logical end of a recording: the new take plays from here, seamlessly."""
        take = cell.recording
        assert take is not None
        cell.recording = None
        self.recording_count -= 1
        cell.rec_end = -1
        self._push_history(cell, take)
        cell.take = take
        cell.state = PLAYING
        col.plan_dirty = True
        col.restack = True
        self._refresh_gains(f, instant=cell)
        self._update_next_rec_end()

    def _cancel(self, col: Column, cell: Cell, f: int) -> None:
        take = cell.recording
        if take is None:
            return
        cell.recording = None
        if cell.rec is take:
            self._stop_capture(cell)
        self.recording_count -= 1
        if cell.rec_first:
            col.first_row = -1
            cell.rec_first = False
        cell.rec_end = -1
        self.to_io.append(("discard", take))
        self._set_state(cell, IDLE if cell.take is not None else EMPTY, f)
        self._update_next_rec_end()

    def _update_next_rec_end(self) -> None:
        best = -1
        for col in self.cells:
            for cell in col:
                if cell.rec_end >= 0 and (best < 0 or cell.rec_end < best):
                    best = cell.rec_end
        self.next_rec_end = best

    def _push_history(self, cell: Cell, entry: object) -> None:
        hist = cell.hist
        pos = cell.hist_pos + 1
        if pos >= len(hist):
            dropped = hist[0]
            for i in range(len(hist) - 1):
                hist[i] = hist[i + 1]
            pos = len(hist) - 1
            hist[pos] = None  # moved down: not an entry to release below
            if isinstance(dropped, Take):
                self.to_io.append(("release", dropped))
        for i in range(pos, cell.hist_len):
            old = hist[i]
            if isinstance(old, Take) and old is not entry:
                self.to_io.append(("release", old))
            hist[i] = None
        hist[pos] = entry
        cell.hist_pos = pos
        cell.hist_len = pos + 1

    def _step_history(self, col: Column, cell: Cell, step: int, f: int) -> None:
        pos = cell.hist_pos + step
        if pos < -1 or pos >= cell.hist_len:
            return
        entry = cell.hist[pos] if pos >= 0 else None
        target = entry if isinstance(entry, Take) else None
        if target is not None and col.beats and target.beats != col.beats:
            others = any(c.take is not None or c.state == RECORDING
                         for c in self.cells[col.index] if c is not cell)
            if others:
                self._reject(5)
                return
            col.beats = target.beats
            col.length = target.length
            col.pos %= col.length
            col.rpos = col.pos
        cell.hist_pos = pos
        self._set_take(col, cell, target, f)

    def _set_take(self, col: Column, cell: Cell, take: Take | None, f: int) -> None:
        cell.take = take
        col.plan_dirty = True
        col.restack = True
        if take is None:
            self._set_state(cell, EMPTY, f)
        elif cell.state == EMPTY:
            self._set_state(cell, IDLE, f)
        else:
            self._refresh_gains(f, instant=cell)
        if take is not None and col.beats == 0:
            col.beats = take.beats
            col.length = take.length

    def _set_state(self, cell: Cell, state: int, f: int) -> None:
        before = cell.state
        cell.state = state
        if (before == SOLO) != (state == SOLO):
            self.solo_count += 1 if state == SOLO else -1
            self._refresh_gains(f)
        else:
            self._refresh_gain(cell, f, self.declick_frames)

    def _audible(self, cell: Cell) -> bool:
        if cell.take is None:
            return False
        if self.solo_count:
            return cell.state == SOLO
        return cell.state == PLAYING or cell.state == SOLO

    def _refresh_gain(self, cell: Cell, f: int, frames: int) -> None:
        target = cell.volume if self._audible(cell) else 0.0
        if target != cell.gain.target:
            cell.gain.set(target, f, frames)
            self.columns[cell.column].plan_dirty = True

    def _refresh_gains(self, f: int, instant: Cell | None = None) -> None:
        for row in self.cells:
            for cell in row:
                self._refresh_gain(cell, f, 0 if cell is instant else self.declick_frames)

    def _update_column(self, col: Column, f: int) -> None:
        running = False
        loops = False
        for cell in self.cells[col.index]:
            if cell.state in (RECORDING, PLAYING, SOLO):
                running = True
            if cell.take is not None or cell.state == RECORDING:
                loops = True
        if not loops and col.first_row < 0:
            col.beats = 0
            col.length = 0
            if col.stack is not None:
                self.to_io.append(("release", col.stack))
                self._set_stack(col, None)
        if running and not col.running:
            col.pos = 0
            col.rpos = 0
        elif not running and col.running:
            col.pos = 0
            col.fading = col.length > 0
        col.running = running

    # ------------------------------------------------------------------ recording

    def _capture(self, inputs: Audio, start: int, n: int) -> None:
        end = start + n
        captures = self.captures
        # backwards: a capture that ends here swaps the last one (already done) into its place
        for i in range(self.capturing - 1, -1, -1):
            cell: Cell = captures[i]  # type: ignore[assignment]  # the first `capturing` are set
            take = cell.rec
            if take is None or cell.cap_start >= end:
                continue
            col = self.columns[cell.column]
            s = max(start, cell.cap_start)
            e = end
            if take.length:
                e = min(e, cell.cap_start + take.length)
            if s == cell.cap_start and take.captured == 0:
                self._take_preroll(take, s)
            if e > s and not self._write_take(col, cell, take, inputs[s - start : e - start]):
                continue
            if take.length and take.captured >= take.length and cell.rec is take:
                self._finish_capture(cell)

    def _start_capture(self, cell: Cell, take: Take) -> None:
        if cell.rec is None:
            self.captures[self.capturing] = cell
            self.capturing += 1
        cell.rec = take

    def _stop_capture(self, cell: Cell) -> None:
        if cell.rec is None:
            return
        cell.rec = None
        captures = self.captures
        last = self.capturing - 1
        for i in range(last + 1):
            if captures[i] is cell:
                captures[i] = captures[last]
                captures[last] = None
                self.capturing = last
                return

    def _take_preroll(self, take: Take, cap_start: int) -> None:
        d = min(self.declick_frames, cap_start)
        take.preroll_frames = d
        if d == 0:
            return
        rf = self.ring_frames
        i = (cap_start - d) % rf
        k = min(d, rf - i)
        np.copyto(take.preroll[:k], self.ring[i : i + k])
        if k < d:
            np.copyto(take.preroll[k:d], self.ring[: d - k])

    def _write_take(self, col: Column, cell: Cell, take: Take, src: Audio) -> bool:
        n = src.shape[0]
        cf = self.chunk_frames
        done = 0
        while done < n:
            w = take.captured
            ci, off = divmod(w, cf)
            if ci >= self.max_chunks:
                self._reject(3)
                self._cancel(col, cell, self.frame)
                self._stop_capture(cell)
                return False
            if ci >= take.nchunks:
                chunk = self.pool.take_chunk()
                if chunk is None:
                    if cell.recording is not take:  # the latency tail: the take already plays
                        self._reject(7)
                        take.nchunks = ci + 1
                        take.captured = min((ci + 1) * cf, take.length)
                        done += take.captured - w
                        continue
                    self._reject(1)
                    self._cancel(col, cell, self.frame)
                    return False
                take.chunks[ci] = chunk
                take.nchunks = ci + 1
            chunk = take.chunks[ci]
            m = min(n - done, cf - off)
            if chunk is not None:
                np.copyto(chunk[off : off + m], src[done : done + m])
            take.captured = w + m
            done += m
        return True

    def _finish_capture(self, cell: Cell) -> None:
        """All of the take is captured: crossfade its seam and hand it to the I/O side."""
        take = cell.rec
        assert take is not None
        self._stop_capture(cell)
        length = take.length
        d = min(take.preroll_frames, length)
        if d > 0:
            # the loop's last d frames fade into the audio that came just before its first
            # frame, so the wrap from the end back to index 0 is continuous
            cf = self.chunk_frames
            start = length - d
            done = 0
            while done < d:
                ci, off = divmod(start + done, cf)
                chunk = take.chunks[ci]
                m = min(d - done, cf - off)
                if chunk is not None:
                    seg = chunk[off : off + m]
                    tmp = self.fade_tmp[:m]
                    np.multiply(take.preroll[done : done + m], self.fade[done : done + m], out=tmp)
                    np.multiply(seg, self.fade_inv[done : done + m], out=seg)
                    np.add(seg, tmp, out=seg)
                done += m
        self.to_io.append(("finished", take))

    # ------------------------------------------------------------------ I/O results

    def _drain_io(self) -> None:
        q = self.from_io
        while q:
            msg = q.popleft()
            kind = msg[0]
            if kind == "consolidated":
                take, data = msg[1], msg[2]
                if take.length == data.shape[0]:
                    take.data = data
                    self.to_io.append(("chunks", take))  # no longer read: back to the pool
                    for col in self.columns:
                        for cell in self.cells[col.index]:
                            if cell.take is take:
                                col.restack = True
            elif kind == "session":
                self.install_session(msg[1], msg[2], msg[3])
            elif kind == "stack":
                col = self.columns[msg[1]]
                stack, takes = msg[2], msg[3]
                if col.length and stack.shape[1] == col.length:
                    old = col.stack
                    self._set_stack(col, stack)
                    col.stack_takes[:] = takes
                    if old is not None:
                        self.to_io.append(("release", old))

    def attach_recorder(self, ring: Audio, cursors: np.ndarray) -> None:
        """From now on every block's input and main out also go into the session
        recorder's ring (rtcore.recorder; built, and its kernels compiled, by the caller)."""
        self.rec_cursors = cursors
        self.rec_ring = ring

    def install_session(self, cells: list[dict[str, Any]], tempo_bpm: float,
                        beats_per_bar: int) -> None:
        """Replace the whole matrix with a loaded session (see rtcore.store): everything
        stops, every take goes to the I/O side to be released, and the cells get their
        loops (consolidated takes), history, volume and state (idle: nothing plays until
        asked). ``cells`` entries: ``column``, ``row``, ``volume``, ``history`` (takes or
        CLEARED, oldest first) and ``pos`` (the current entry, -1 for none). Bounded: a
        pass over the matrix. Offline or before the audio starts, call it directly; live,
        the I/O side queues it and the audio thread runs it at a block start."""
        f = self.frame
        for col in self.columns:
            for cell in self.cells[col.index]:
                self._stop_capture(cell)
                if cell.recording is not None:
                    self.to_io.append(("discard", cell.recording))
                    cell.recording = None
                hist = cell.hist
                for i in range(len(hist)):  # a take is in a cell's history once
                    entry = hist[i]
                    if isinstance(entry, Take):
                        self.to_io.append(("release", entry))
                    hist[i] = None
                cell.hist_len = 0
                cell.hist_pos = -1
                cell.take = None
                cell.pending = 0
                cell.rec_first = False
                cell.rec_end = -1
                cell.state = EMPTY
                cell.volume = 1.0
                cell.gain.set(0.0, f, 0)
            col.beats = 0
            col.length = 0
            col.pos = col.rpos = 0
            col.running = col.fading = False
            col.first_row = -1
            col.plan_dirty = True
            if col.stack is not None:
                self.to_io.append(("release", col.stack))
                self._set_stack(col, None)
            col.stack_takes[:] = [None] * self.nrows
        self.recording_count = 0
        self.solo_count = 0
        self.next_rec_end = -1
        self.npaused = 0
        self.beats_per_bar = beats_per_bar
        if TEMPO_MIN_BPM <= tempo_bpm <= TEMPO_MAX_BPM and not self.sync_midi:
            self._set_spb(self.sample_rate * 60.0 / tempo_bpm)
            self._anchor_next_beat(self.next_beat_frame, f)
        for entry in cells:
            col = self.columns[entry["column"]]
            cell = self.cells[col.index][entry["row"]]
            hist = entry["history"][-len(cell.hist):]
            for i, h in enumerate(hist):
                cell.hist[i] = h
            cell.hist_len = len(hist)
            cell.hist_pos = min(entry["pos"], cell.hist_len - 1)
            cell.volume = float(entry["volume"])
            take = cell.hist[cell.hist_pos] if cell.hist_pos >= 0 else None
            if isinstance(take, Take):
                cell.take = take
                cell.state = IDLE
                if col.beats == 0:
                    col.beats = take.beats
                    col.length = take.length
                col.restack = True
            for h in hist:
                if isinstance(h, Take) and h.serial > self.take_serial:
                    self.take_serial = h.serial
        self.session_loads += 1

    def _pool_status(self) -> dict[str, Any]:
        pool = self.pool
        rate60 = self.sample_rate * 60.0
        return {"free_chunks": len(pool.chunks), "chunk_frames": self.chunk_frames,
                "budget_minutes": round(pool.budget_frames / rate60, 3),
                "used_minutes": round(pool.used_frames() / rate60, 3),
                "exhausted": pool.exhausted}

    def _set_stack(self, col: Column, stack: Audio | None) -> None:
        col.stack = stack
        col.plan_dirty = True
        self.stack_list[col.index] = self.no_stack if stack is None else stack
        self.stacks = tuple(self.stack_list)  # the kernel's argument; a swap is rare

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The status document (same shape offline and live). Not real-time."""
        bpb = self.beats_per_bar
        beat_in_bar = ((self.beat - self.bar_origin) % bpb) if self.beat >= 0 else -1
        return {
            "sample_rate": self.sample_rate,
            "block_size": self.block_size,
            "channels": self.channels,
            "frame": self.frame,
            "tempo": self.tempo_bpm,
            "beats_per_bar": bpb,
            "beat": self.beat,
            "beat_in_bar": beat_in_bar,
            "next_beat_frame": self.next_beat_frame,
            "sync": "midi" if self.sync_midi else "internal",
            "selected": list(self.selected),
            "master_volume": self.master.target,
            "monitor": {"on": self.monitor_on, "gain": self.monitor_gain},
            "click": {"on": self.click_on, "volume": self.click_gain.target},
            "input_peak_dbfs": [round(20.0 * math.log10(p), 1) if p >= 1e-7 else None
                                for p in self.in_peaks.tolist()],
            "xruns": self.xruns,
            "missed_frames": self.missed_frames,
            "commands_dropped": self.commands_dropped,
            "rejected": self.rejects,
            "last_rejected": REJECT_NAMES.get(self.last_reject, ""),
            "midi_in_events": self.midi_in_events,
            "count_in": {"on": self.count_in_on,
                         "beats_left": max(0, self.count_in_until - self.beat - 1)
                         if self.count_in_until >= 0 else 0},
            "midi": self._midi_status(),
            "pool": self._pool_status(),
            "columns": [
                {"beats": col.beats, "length_frames": col.length, "position": col.pos,
                 "running": col.running}
                for col in self.columns
            ],
            "cells": [[self._cell_status(col, cell) for cell in self.cells[col.index]]
                      for col in self.columns],
        }

    def _midi_status(self) -> dict[str, Any]:
        fol = self.follower
        if not self.sync_midi:
            clock_state = "off"
        elif fol.index < 0:
            clock_state = "waiting"
        elif self.clock_lost:
            clock_state = "lost: keeping the last tempo"
        else:
            clock_state = "following" if self.ext_locked else "waiting for a beat"
        return {
            "in": {"events": self.midi_in_events, "malformed": self.midi_malformed,
                   "mapped": self.midi_mapped, "map_inputs": len(self.midi_map),
                   "learning": self.learn_armed, "learned": self.learn_seq},
            "clock_in": {"state": clock_state, "tempo": round(fol.tempo_bpm(), 4),
                         "ticks": fol.ticks, "jitter_ms":
                         round(float(fol.fit[2]) * 1000.0 / self.sample_rate, 3),
                         "tempo_restarts": fol.restarts, "transport":
                         "playing" if self.ext_running else "stopped",
                         "relocations": self.ext_relocations,
                 "varispeed": round(self.vs_rate, 6) if self.vs_on else None,
                 "varispeed_blocks": self.vs_blocks},
            "clock_out": {"on": self.clock_out,
                          "transport": "playing" if self.out_running else "stopped"},
        }

    def _cell_status(self, col: Column, cell: Cell) -> dict[str, Any]:
        take = cell.take
        rec = cell.rec if cell.state == RECORDING else None
        shown = take if rec is None else rec
        return {
            "state": STATE_NAMES[cell.state],
            "next_state": STATE_NAMES[self._next_state(cell)],
            "volume": cell.volume,
            "beats": shown.beats if shown is not None else 0,
            "length_frames": shown.length if shown is not None else 0,
            "sync_offset_frames": shown.sync_offset if shown is not None else 0,
            "consolidated": take is not None and take.data is not None,
            # the loop's CRC-32 (of its float32 samples) once consolidated: the same after a
            # reload from disk
            "crc32": take.crc if take is not None and take.data is not None else None,
            "undo": cell.hist_pos + 1,
            "redo": cell.hist_len - cell.hist_pos - 1,
        }

    def _next_state(self, cell: Cell) -> int:
        op = cell.pending
        st = cell.state
        has = cell.take is not None
        if op == 0:
            return st
        if op == C.OP_RECORD:
            return PLAYING if st == RECORDING and cell.rec_first else RECORDING
        if op == C.OP_PLAY:
            return PLAYING if (has or cell.rec_first) else st
        if op == C.OP_SOLO:
            return SOLO if (has or cell.rec_first) else st
        if op == C.OP_STOP:
            return IDLE if has else EMPTY
        if op == C.OP_CLEAR:
            return EMPTY
        if op in (C.OP_UNDO, C.OP_REDO):
            if st == RECORDING:
                return IDLE if has else EMPTY
            pos = cell.hist_pos + (-1 if op == C.OP_UNDO else 1)
            entry = cell.hist[pos] if 0 <= pos < cell.hist_len else None
            if not isinstance(entry, Take):
                return EMPTY
            return st if st in (PLAYING, SOLO, IDLE) else IDLE
        return st


_EMPTY = "is empty"


def _cell_refusal(op: int, cell: Cell) -> str:
    """Why a cell command makes no sense for the cell as it is, or "" (a constant either
    way: the audio thread checks mapped MIDI commands with it too)."""
    if op == C.OP_PLAY or op == C.OP_SOLO:
        if cell.take is None and cell.state != RECORDING:
            return _EMPTY
    elif op == C.OP_UNDO:
        if cell.state != RECORDING and cell.hist_pos < 0:
            return "has nothing to undo"
    elif op == C.OP_REDO and cell.hist_pos + 1 >= cell.hist_len:
        return "has nothing to redo"
    return ""


def _click_tones(sample_rate: int) -> tuple[Audio, Audio]:
    """(accent, normal): short decaying sine bursts, computed once."""
    frames = round(0.03 * sample_rate)
    t = np.arange(frames, dtype=np.float64) / sample_rate
    env = np.exp(-t / 0.006)
    attack = min(frames, max(1, round(0.0005 * sample_rate)))
    env[:attack] *= np.linspace(0.0, 1.0, attack, endpoint=False)
    accent = (np.sin(2 * np.pi * 1760.0 * t) * env).astype(np.float32)
    normal = (0.7 * np.sin(2 * np.pi * 1320.0 * t) * env).astype(np.float32)
    return accent, normal
