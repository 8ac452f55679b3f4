"""``ouro engine``'s MIDI live on a real ``jackd -d dummy``: clock out, following an external
clock, the input map, malformed input and learn mode, driven over OSC and JACK MIDI.

A :class:`MidiTestClient` sends MIDI at exact JACK frame times into ``ouroboros:midi_in``, or
records what comes out of ``ouroboros:midi_out`` with the frame time of every event. The
engine's frame ``f`` is JACK frame time ``frame_time_origin + f`` (from its status), so what
the offline tests (tests/rtcore/test_engine_midi.py) check frame by frame is checked here
on the real thing. A cycle missed by the engine or the test client (an xrun on this busy
machine) loses MIDI, as it would on stage: an attempt with missed cycles whose checks fail
is done again with a fresh engine, and skipped, with the reasons, when every attempt was
disturbed. A failed check in an attempt without any missed cycle fails the test, and so
does an error in the engine's process callback, busy machine or not: the callback must
never raise, whatever reaches it.

Missed cycles are counted from evidence only: the engine's frame time anomalies and xruns,
the server's xruns, the test client's frame time anomalies, late and refused events. They
are read before the first judged event and again after the last one, a few periods later
and past the engine's status cache (10 ms), so that a miss that touched the judged data is
always in the count.
"""

from __future__ import annotations

import signal
import time
import tomllib
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtcore.client import EngineClient
from rtcore.host import MidiTestClient, XrunCounter
from rtcore.jackd import JackServer, unique_server_name
from rtcore.osc import STATUS_CACHE_S
from rtcore.sync import CLOCK, CONTINUE, SONG_POSITION, START, STOP, song_position_bytes
from tests.rtcore.test_live import EngineRig, wait_until

pytestmark = pytest.mark.jack

SR = 48000
SPB = 24000  # 120 BPM
MASK = 0xFFFFFFFF
TESTER = "midi-tester"
# how long after the last judged event the misses are counted: JACK reports xruns from
# another thread, a missed cycle shows in a frame clock at the next cycle, and the engine's
# status is cached
SETTLE_S = 0.1


def engine_config(**engine: Any) -> str:
    """The exact settings of test_live (no declick, no smoothing) and ``engine``'s."""
    lines = ["[engine]", "declick_ms = 0", "smoothing_ms = 0"]
    for key, value in engine.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}")
    return "\n".join([*lines, "[process]", "gc_interval_s = 0.5", ""])


@pytest.fixture(scope="module")
def server() -> Iterator[JackServer]:
    with JackServer(unique_server_name("test-live-midi"), period_frames=256) as srv:
        yield srv


class MidiRig(EngineRig):
    """An engine and a MIDI test client, connected to its ``midi_in`` (``send``) or from
    its ``midi_out`` (``listen``)."""

    def __init__(self, server_name: str, tmp_path: Path, config: str, *, send: bool = False,
                 listen: bool = False):
        super().__init__(server_name, tmp_path, config)
        self.midi: MidiTestClient | None = MidiTestClient(server_name, TESTER)
        want: dict[str, list[str]] = {}
        if send:
            self.midi.connect(f"{TESTER}:midi_out", "ouroboros:midi_in")
            want["midi_in"] = [f"{TESTER}:midi_out"]
        if listen:
            self.midi.connect("ouroboros:midi_out", f"{TESTER}:midi_in")
            want["midi_out"] = [f"{TESTER}:midi_in"]
        # the engine's main loop notices connections a few times a second
        wait_until(lambda: all(self.status()["jack"]["connections"].get(k) == v
                               for k, v in want.items()), 10,
                   describe=lambda: self.status()["jack"]["connections"])
        self.trouble0 = 0
        self.late_looks = 0  # checks the test itself made too late to judge (see trouble)
        self.mark()

    @property
    def tester(self) -> MidiTestClient:
        assert self.midi is not None
        return self.midi

    def fresh_status(self) -> dict[str, Any]:
        """The engine's status built after this call began (past the status cache)."""
        time.sleep(2 * STATUS_CACHE_S)
        return self.status()

    def trouble(self) -> int:
        """Missed or late cycles anywhere, MIDI the test client wrote late or JACK refused,
        and looks the test took too late to judge what it looked at (``late_looks``, set
        by a scenario from the frame numbers it saw): a window with any of them is not
        judged (see the module docstring). The engine's part is read fresh."""
        st = self.fresh_status()
        m = self.tester
        return (st["jack"]["frame_time_anomalies"] + st["xruns"] + st["jack"]["xruns_reported"]
                + m.clock.anomalies + m.xruns + m.late + m.write_errors + self.late_looks)

    def mark(self) -> None:
        """The judged window starts now: missed cycles before it (a client joining the
        graph often costs one) are not held against it. Call it before the first event
        that is judged is taken (before clearing what was received, say)."""
        self.trouble0 = self.trouble()

    def disturbed(self) -> int:
        """Misses since :meth:`mark`, counted a few periods after the last judged event."""
        time.sleep(SETTLE_S)
        return self.trouble() - self.trouble0

    def check_callback(self, failure: BaseException | None = None) -> None:
        """No error in the engine's process callback, ever: missed cycles excuse wrong
        timing, not an exception in the audio thread."""
        cb = self.fresh_status()["callback"]
        if cb["errors"]:
            raise AssertionError(f"the engine's process callback raised {cb['errors']} "
                                 f"time(s), the last {cb['last_error']!r}; "
                                 f"{self.diagnosis()}") from failure

    def diagnosis(self) -> str:
        st = self.status()
        m = self.tester
        jk = st["jack"]
        return (f"engine xruns {st['xruns']} ({st['missed_frames']} frames missed), server "
                f"xruns {jk['xruns_reported']}, engine frame time anomalies "
                f"{jk['frame_time_anomalies']}, the last as (read, expected, gap) "
                f"{jk['frame_time_events']}, callback errors {st['callback']['errors']} "
                f"{st['callback']['last_error']!r}; test client: frame time anomalies "
                f"{m.clock.anomalies}, the last {list(m.clock.events)}, xruns seen {m.xruns}, "
                f"late events {m.late}, refused events {m.write_errors}; checks made too "
                f"late {self.late_looks}")

    def to_frame_time(self, engine_frame: int, origin: int) -> int:
        return (origin + engine_frame) & MASK

    def close(self) -> None:
        if self.midi is not None:
            self.midi.close()
            self.midi = None
        self.osc.close()
        self.engine.stop()


def judged(server: JackServer, tmp_path: Path, scenario: Callable[[MidiRig], None], *,
           config: str, send: bool = False, listen: bool = False, tries: int = 3,
           after_each: Callable[[], None] | None = None) -> None:
    """Run ``scenario`` on a fresh rig; a failure in an attempt with missed cycles is not
    judged: the scenario runs again, and the test is skipped when every attempt had them.
    A failure in an attempt without any fails the test. ``after_each`` runs after each
    attempt's rig is closed (to undo what the scenario did to the shared server)."""
    reasons: list[str] = []
    for attempt in range(tries):
        rig = MidiRig(server.name, tmp_path / f"try{attempt}", config, send=send,
                      listen=listen)
        try:
            try:
                scenario(rig)
                rig.check_callback()
                if reasons:
                    print(f"judged on attempt {attempt}; before: {'; '.join(reasons)}")
                return
            except AssertionError as exc:
                rig.check_callback(exc)
                disturbed = rig.disturbed()
                if not disturbed:
                    raise
                first_line = str(exc).splitlines()[0] if str(exc) else repr(exc)
                reasons.append(f"attempt {attempt}: {disturbed} missed cycles or late events "
                               f"({first_line[:200]}); {rig.diagnosis()}")
        finally:
            rig.close()
            if after_each is not None:
                after_each()
    pytest.skip("every attempt had missed cycles (machine too busy to judge): "
                + "; ".join(reasons))


def cell(st: dict[str, Any], column: int, row: int) -> dict[str, Any]:
    c = st["cells"][column][row]
    assert isinstance(c, dict)
    return c


# ---------------------------------------------------------------------------- clock out


def test_clock_out_ticks_start_and_stop_land_on_their_exact_frames(server: JackServer,
                                                                    tmp_path: Path) -> None:
    """90 BPM: a beat is 32000 frames, a tick 1333 1/3, so tick t goes out at engine frame
    round(t * 32000 / 24) (the grid starts at frame 0), Start on the beat where the first
    loop starts, before that beat's tick, and Stop on the beat where everything stopped."""
    spb = 32000

    def tick_frame(t: int) -> int:
        return round(t * spb / 24)  # never an exact half: 4000 t / 3

    def scenario(rig: MidiRig) -> None:
        m = rig.tester
        st = rig.status()
        assert st["tempo"] == 90.0 and st["midi"]["clock_out"]["on"] is True
        origin = st["jack"]["frame_time_origin"]
        wait_until(lambda: len(m.received) >= 10, 5)  # the clock runs before any loop
        rig.mark()  # before the first judged event: a miss just before it is counted
        m.received.clear()
        rig.command("record", 0, 0)
        wait_until(lambda: cell(rig.status(), 0, 0)["state"] == "recording")
        time.sleep(2 * spb / SR - 0.2)
        rig.command("record", 0, 0)
        playing = wait_until(lambda: (s := rig.status())["cells"][0][0]["state"] == "playing"
                             and s)
        time.sleep(spb / SR)
        rig.command("stop", 0, 0)
        wait_until(lambda: not rig.status()["columns"][0]["running"])
        wait_until(lambda: any(d == bytes([STOP]) for _, d in list(m.received)), 5)
        time.sleep(0.2)  # a few ticks after the Stop
        events = list(m.received)
        assert rig.status()["jack"]["frame_time_origin"] == origin

        frames = [(ft - origin) & MASK for ft, _ in events]
        kinds = [d for _, d in events]
        assert set(kinds) <= {bytes([CLOCK]), bytes([START]), bytes([STOP])}, (
            f"unexpected messages {sorted(set(kinds) - {bytes([CLOCK])})}")
        assert all(b >= a for a, b in pairwise(frames)), "out of order"
        ticks = [f for f, d in zip(frames, kinds, strict=True) if d == bytes([CLOCK])]
        index = [round(f * 24 / spb) for f in ticks]
        off_grid = [(f, tick_frame(t)) for f, t in zip(ticks, index, strict=True)
                    if f != tick_frame(t)]
        assert not off_grid, f"ticks off their frames (got, want): {off_grid[:8]}"
        gaps = [(a, b) for a, b in pairwise(index) if b != a + 1]
        assert not gaps, f"ticks missing or doubled (tick indices): {gaps[:8]}"

        starts = [i for i, d in enumerate(kinds) if d == bytes([START])]
        stops = [i for i, d in enumerate(kinds) if d == bytes([STOP])]
        assert len(starts) == 1, f"Start at frames {[frames[i] for i in starts]}"
        assert len(stops) == 1, f"Stop at frames {[frames[i] for i in stops]}"
        s, p = starts[0], stops[0]
        start_f, stop_f = frames[s], frames[p]
        assert start_f % spb == 0 and stop_f % spb == 0, (start_f, stop_f)
        assert start_f < stop_f
        # each right before the tick of its own frame
        assert kinds[s + 1] == bytes([CLOCK]) and frames[s + 1] == start_f
        assert kinds[p + 1] == bytes([CLOCK]) and frames[p + 1] == stop_f
        # 24 ticks a beat from Start to Stop
        between = [f for f in ticks if start_f <= f < stop_f]
        assert len(between) == (stop_f - start_f) // spb * 24
        # Start is where the loop began: the column's position counts from there (the
        # status reads the frame and the position a moment apart: allow a few blocks)
        length = playing["columns"][0]["length_frames"]
        assert length == playing["cells"][0][0]["length_frames"] and length % spb == 0
        began = playing["frame"] - playing["columns"][0]["position"]
        drift = (began - start_f) % length
        assert min(drift, length - drift) <= 2048, (began, start_f, length)
        print(f"clock out: Start at beat {start_f // spb}, Stop at beat {stop_f // spb}, "
              f"{len(ticks)} ticks checked")

    judged(server, tmp_path, scenario, config=engine_config(clock_out=True, tempo_bpm=90.0),
           listen=True)


def test_clock_out_stays_on_its_frames_when_the_jack_period_grows(server: JackServer,
                                                                  tmp_path: Path) -> None:
    """The engine keeps the block size it started with (256) when JACK's period becomes
    1024: each cycle runs in four parts, and every part's MIDI out goes out at its own
    frames, not at the cycle's start."""
    spb = 32000

    def scenario(rig: MidiRig) -> None:
        m = rig.tester
        assert rig.status()["jack"]["blocksize"] == 256  # the engine's block size
        wait_until(lambda: len(m.received) >= 10, 5)
        m.set_blocksize(1024)
        grown = wait_until(lambda: (s := rig.status())["jack"]["blocksize"] == 1024 and s)
        cycles = m.cycles
        # the engine has run cycles of 1024 since (it resyncs its frame count to JACK's at
        # the first), and the test client's frame clock has followed the new period
        wait_until(lambda: rig.fresh_status()["frame"] >= grown["frame"] + 4 * 1024
                   and m.cycles >= cycles + 4 and not m.clock.suspect and not m.clock.behind,
                   describe=lambda: (rig.status()["frame"], grown["frame"], m.cycles, cycles,
                                     list(m.clock.events)))
        origin = rig.fresh_status()["jack"]["frame_time_origin"]
        rig.mark()
        m.received.clear()
        time.sleep(1.5)
        events = list(m.received)
        assert rig.status()["jack"]["frame_time_origin"] == origin
        frames = [(ft - origin) & MASK for ft, d in events if d == bytes([CLOCK])]
        assert len(frames) > 40, f"only {len(frames)} ticks in 1.5 s"
        index = [round(f * 24 / spb) for f in frames]
        off_grid = [(f, round(t * spb / 24)) for f, t in zip(frames, index, strict=True)
                    if f != round(t * spb / 24)]
        assert not off_grid, f"ticks off their frames (got, want): {off_grid[:8]}"
        assert all(b == a + 1 for a, b in pairwise(index)), "ticks missing or doubled"
        # ticks fall in every quarter of the 1024-frame cycles, not only at their starts
        assert {(f + origin) % 1024 // 256 for f in frames} == {0, 1, 2, 3}

    def restore() -> None:  # every attempt, and the module's other tests, start at 256
        counter = XrunCounter(server.name, "period-restore")
        counter.set_blocksize(256)
        counter.close()

    judged(server, tmp_path, scenario, config=engine_config(clock_out=True, tempo_bpm=90.0),
           listen=True, after_each=restore)


class Misses:
    """The counts of missed cycles in a rig at one moment, to tell afterwards whether
    anything besides one xrun made by the test happened (see :meth:`besides_one_gap`)."""

    def __init__(self, rig: MidiRig):
        st = rig.fresh_status()
        m = rig.tester
        self.xruns: int = st["xruns"]
        self.missed_frames: int = st["missed_frames"]
        self.engine: int = st["jack"]["frame_time_anomalies"]
        self.client = m.clock.anomalies
        self.writes = m.late + m.write_errors

    def besides_one_gap(self, rig: MidiRig) -> str:
        """What else missed cycles since, besides one gap: the engine's one xrun, and in
        the engine's frame clock and the test client's each the gap's two reads (the jump,
        then the next cycle confirming it, one period later). Empty when nothing else did;
        read a few periods after the last judged event."""
        time.sleep(SETTLE_S)
        st = rig.fresh_status()
        m = rig.tester
        other = []
        if st["xruns"] - self.xruns != 1:
            other.append(f"{st['xruns'] - self.xruns} engine xruns")
        for who, new, events in (
                ("the engine's", st["jack"]["frame_time_anomalies"] - self.engine,
                 st["jack"]["frame_time_events"]),
                ("the test client's", m.clock.anomalies - self.client, list(m.clock.events))):
            if not one_gap(new, events, st["jack"]["blocksize"]):
                other.append(f"{new} frame time anomalies in {who} clock, the last "
                             f"{[list(e) for e in events[-max(new, 0):]] if new else []}")
        if m.late + m.write_errors != self.writes:
            other.append(f"{m.late + m.write_errors - self.writes} late or refused events")
        return ", ".join(other)


def one_gap(new: int, events: list[Any], period: int) -> bool:
    """The ``new`` latest frame time events (read, expected, gap) are one gap's two reads."""
    if new != 2 or len(events) < 2:
        return False
    (r1, _, g1), (r2, _, g2) = events[-2:]
    return g1 == g2 >= period and (r2 - r1) & MASK == period


def test_clock_out_after_an_xrun_tells_the_song_position(server: JackServer,
                                                          tmp_path: Path) -> None:
    """The engine is frozen while a loop plays: JACK goes on without it. When it comes
    back, the clock goes on on its grid, and on the first sixteenth after the gap a Song
    Position Pointer (sixteenths since Start) and a Continue go out, before that tick.

    The xrun is made here, so missed cycles do not make an attempt unjudged by themselves:
    a failed check is not judged only when something besides that one gap missed cycles
    (another xrun would make another song position)."""
    per16 = SPB // 4

    def scenario(rig: MidiRig, before: Misses) -> None:
        m = rig.tester
        st = rig.status()
        origin = st["jack"]["frame_time_origin"]
        rig.command("record", 0, 0)
        wait_until(lambda: cell(rig.status(), 0, 0)["state"] == "recording")
        time.sleep(2 * SPB / SR - 0.2)
        rig.command("record", 0, 0)
        wait_until(lambda: cell(rig.status(), 0, 0)["state"] == "playing")
        wait_until(lambda: any(d == bytes([START]) for _, d in list(m.received)), 5)
        rig.engine.signal(signal.SIGSTOP)
        time.sleep(0.15)
        rig.engine.signal(signal.SIGCONT)
        st = wait_until(lambda: (s := rig.status())["xruns"] > before.xruns and s, 5)
        assert st["missed_frames"] - before.missed_frames >= 256
        wait_until(lambda: [f for f, d in list(m.received) if d[0] == SONG_POSITION], 5,
                   describe=rig.diagnosis)
        time.sleep(0.3)
        events = [((ft - origin) & MASK, d) for ft, d in list(m.received)]
        st = rig.fresh_status()
        assert st["jack"]["frame_time_origin"] == origin, "the engine's frame clock went back"
        starts = [f for f, d in events if d == bytes([START])]
        assert starts, "no Start"
        start_f = starts[0]
        spp = [(f, d) for f, d in events if d[0] == SONG_POSITION]
        assert len(spp) == 1, spp
        at, data = spp[0]
        sixteenths = (at - start_f) / per16
        assert sixteenths == int(sixteenths), (at, start_f)
        assert list(data) == list(song_position_bytes(int(sixteenths)))
        assert [d for f, d in events if f == at] == [data, bytes([CONTINUE]), bytes([CLOCK])]
        # ... on the first sixteenth after the gap: the ticks before it go out as ticks
        ticks = sorted(f for f, d in events if d == bytes([CLOCK]))
        gaps = [i + 1 for i, (a, b) in enumerate(pairwise(ticks)) if b - a > SPB // 24]
        assert gaps, f"no gap in the ticks around {at}"
        gap = gaps[0]
        after = [f for f in ticks[gap:] if (f - start_f) % per16 == 0]
        assert after, f"no sixteenth after the gap (ticks {ticks[gap - 1]} .. {ticks[gap]})"
        assert at == after[0], (f"song position at {at}, the first sixteenth after the gap "
                                f"(ticks {ticks[gap - 1]} .. {ticks[gap]}) is {after[0]}")
        # from there the clock goes on, on its grid, tick after tick
        ticks = [f for f, d in events if f >= at and d == bytes([CLOCK])]
        assert ticks and all(f % (SPB // 24) == 0 for f in ticks), ticks[:8]
        assert all(b - a == SPB // 24 for a, b in pairwise(ticks)), ticks[:8]
        assert not [d for f, d in events if f > start_f and d in (bytes([START]),
                                                                bytes([STOP]))]
        print(f"xrun: {st['missed_frames']} frames missed; song position {int(sixteenths)} "
              f"at engine frame {at}")

    reasons: list[str] = []
    for attempt in range(3):
        rig = MidiRig(server.name, tmp_path / f"try{attempt}", engine_config(clock_out=True),
                      listen=True)
        try:
            before = Misses(rig)
            try:
                scenario(rig, before)
                rig.check_callback()
                if reasons:
                    print(f"judged on attempt {attempt}; before: {'; '.join(reasons)}")
                return
            except AssertionError as exc:
                rig.check_callback(exc)
                other = before.besides_one_gap(rig)
                if not other:
                    raise
                first_line = str(exc).splitlines()[0] if str(exc) else repr(exc)
                reasons.append(f"attempt {attempt}: {other} ({first_line[:200]}); "
                               f"{rig.diagnosis()}")
        finally:
            rig.close()
    pytest.skip("every attempt missed cycles besides the xrun made here (machine too busy "
                "to judge): " + "; ".join(reasons))


# ---------------------------------------------------------------------------- clock in


def test_follows_a_jittered_external_clock_and_keeps_its_tempo_when_lost(
        server: JackServer, tmp_path: Path) -> None:
    """Start and 6 s of clock at 100 BPM (1200 frames a tick), each tick moved by up to
    +/-1 ms at random: the engine takes the tempo within 0.05 BPM and puts its next beat on
    the clock's beat; when the clock stops it says so and keeps the tempo."""
    per = SR * 60 / 100 / 24  # 1200 frames a tick
    count = 240
    rng = np.random.default_rng(11)

    def scenario(rig: MidiRig) -> None:
        m = rig.tester
        rig.command("sync", "midi")
        st = wait_until(lambda: (s := rig.status())["sync"] == "midi" and s)
        assert st["midi"]["clock_in"]["state"] == "waiting"
        origin = st["jack"]["frame_time_origin"]
        t0 = m.frame_time() + SR // 4
        jitter = rng.uniform(-SR / 1000, SR / 1000, count)
        m.send([(t0 - 600, [START])]
               + [(round(t0 + i * per + jitter[i]), [CLOCK]) for i in range(count)])
        # a second before the clock ends: following, at its tempo and on its beats
        st = wait_until(lambda: (s := rig.status())["midi"]["clock_in"]["ticks"]
                        >= count - 40 and s, 12, describe=lambda: rig.status()["midi"])
        clock_in = st["midi"]["clock_in"]
        if clock_in["ticks"] >= count:
            # this status may be from after the clock ended (a late look, by its ticks),
            # so "following" can't be judged from it
            rig.late_looks += 1
        assert st["sync"] == "midi"
        assert clock_in["state"] == "following", clock_in
        assert clock_in["transport"] == "playing"
        assert abs(st["tempo"] - 100.0) < 0.05, clock_in
        assert abs(clock_in["tempo"] - 100.0) < 0.05, clock_in
        # uniform +/-1 ms has an RMS of 0.58 ms: the ticks arrived at their frames
        assert 0.4 < clock_in["jitter_ms"] < 0.8, clock_in
        # no loops: the engine's frames are JACK's, and its next beat is one of the clock's
        beat_ft = (origin + st["next_beat_frame"]) & MASK
        phase = (beat_ft - t0) % (24 * per)
        assert min(phase, 24 * per - phase) <= SR / 1000, (beat_ft, t0, phase)
        # the clock stops: lost, and the tempo stays
        wait_until(m.drained, 5)
        last_tick = m.sent[-1][0]
        st = wait_until(lambda: (s := rig.status())["midi"]["clock_in"]["state"].startswith(
            "lost") and s, 5, describe=lambda: rig.status()["midi"]["clock_in"])
        assert (origin + st["frame"] - last_tick) & MASK >= SR // 4  # not before 0.25 s
        tempo = st["tempo"]
        time.sleep(0.6)
        after = rig.status()
        assert after["midi"]["clock_in"]["state"] == "lost: keeping the last tempo"
        assert after["tempo"] == tempo and abs(tempo - 100.0) < 0.05
        assert after["midi"]["clock_in"]["ticks"] == count
        assert after["frame"] > st["frame"]
        print(f"follow: {after['midi']['clock_in']}")

    judged(server, tmp_path, scenario, config=engine_config(), send=True)


# ---------------------------------------------------------------------------- the map


def test_mapped_notes_record_play_and_stop_a_cell(server: JackServer, tmp_path: Path) -> None:
    """The default map: note 36 records cell (0, 0) (any channel), again two beats later
    ends the recording, which plays; note 46 stops it. Each note goes in 200 frames after a
    beat, so the commands take effect on the next beats: exactly two beats recorded."""

    def scenario(rig: MidiRig) -> None:
        m = rig.tester
        st = rig.status()
        origin = st["jack"]["frame_time_origin"]
        beat = -(-(st["frame"] + SR) // SPB) * SPB  # a beat at least a second ahead

        def at(frame: int) -> int:
            return rig.to_frame_time(frame, origin)

        m.send([(at(beat + 200), [0x90, 36, 100]), (at(beat + 2000), [0x80, 36, 0]),
                (at(beat + 2 * SPB + 200), [0x99, 36, 90]),  # channel 10
                (at(beat + 2 * SPB + 2000), [0x89, 36, 0])])
        wait_until(lambda: cell(rig.status(), 0, 0)["state"] == "recording", 5)
        st = wait_until(lambda: (s := rig.status())["cells"][0][0]["state"] == "playing"
                        and s, 5, describe=lambda: cell(rig.status(), 0, 0))
        assert cell(st, 0, 0)["beats"] == 2 and cell(st, 0, 0)["length_frames"] == 2 * SPB
        # it began on the beat after the first note (status: frame and position read a
        # moment apart, so a few blocks of slack)
        drift = (st["frame"] - st["columns"][0]["position"] - (beat + SPB)) % (2 * SPB)
        assert min(drift, 2 * SPB - drift) <= 2048, drift
        stop_beat = -(-(st["frame"] + SR // 2) // SPB) * SPB
        m.send([(at(stop_beat + 200), [0x90, 46, 127])])
        st = wait_until(lambda: (s := rig.status())["cells"][0][0]["state"] == "idle" and s,
                        5, describe=lambda: cell(rig.status(), 0, 0))
        assert not st["columns"][0]["running"]
        midi_in = st["midi"]["in"]
        assert midi_in["mapped"] == 3 and midi_in["malformed"] == 0, midi_in
        assert st["midi_in_events"] == 5  # the note offs arrive and fire nothing
        assert [f for f, _ in m.sent] == [at(beat + 200), at(beat + 2000),
                                          at(beat + 2 * SPB + 200), at(beat + 2 * SPB + 2000),
                                          at(stop_beat + 200)]

    judged(server, tmp_path, scenario, config=engine_config(), send=True)


def test_malformed_midi_is_counted_and_the_engine_goes_on(server: JackServer,
                                                          tmp_path: Path) -> None:
    """A cut-off note on, a message without a status byte, a data byte above 127, an
    undefined status byte and a SysEx, all in a few frames, then a mapped note: four are
    malformed, the SysEx is dropped, the engine keeps running and the note still works."""

    def scenario(rig: MidiRig) -> None:
        m = rig.tester
        st0 = rig.status()
        garbage = [[0x90, 60], [0x3C, 0x40], [0xB0, 200, 1], [0xF4],
                   [0xF0, 0x01, 0x02, 0x03, 0xF7]]
        m.send_soon(*garbage, [0x90, 37, 100], spacing=3)  # the last: record (1, 0)
        st = wait_until(lambda: (s := rig.status())["cells"][1][0]["state"] == "recording"
                        and s, 5, describe=lambda: rig.status()["midi"])
        midi_in, midi_in0 = st["midi"]["in"], st0["midi"]["in"]
        assert midi_in["malformed"] - midi_in0["malformed"] == 4, midi_in
        assert midi_in["dropped"] - midi_in0["dropped"] == 1, midi_in
        assert midi_in["mapped"] - midi_in0["mapped"] == 1, midi_in
        assert st["midi_in_events"] - st0["midi_in_events"] == 5  # a SysEx is not copied
        assert st["callback"]["errors"] == 0
        later = wait_until(lambda: (s := rig.status())["frame"] > st["frame"] + SR // 10
                           and s, 5)
        assert later["jack"]["state"] == "running"
        assert rig.engine.proc is not None and rig.engine.proc.poll() is None
        assert len(m.sent) == len(garbage) + 1  # JACK took every one of them

    judged(server, tmp_path, scenario, config=engine_config(), send=True)


def test_learn_binds_a_controller_saves_the_map_and_it_drives_the_cell(
        server: JackServer, tmp_path: Path) -> None:
    """``/ouro/midi/learn record 1 0``, then cc 20 = 127 on channel 3: bound (and the
    learning message itself fires nothing); the same cc on channel 1 fires nothing; on
    channel 3, 0 then 127 records cell (1, 0). The map says so and is saved."""

    def scenario(rig: MidiRig) -> None:
        m = rig.tester
        with EngineClient("127.0.0.1", rig.engine.osc_port) as learner:
            reply = learner.request("midi/learn", "record", 1, 0, reply="/ouro/midi/learning")
            assert "record" in str(reply.params[0])
            wait_until(lambda: rig.status()["midi"]["in"]["learning"] is True, 5)
            m.send_soon([0xB2, 20, 127])
            deadline = time.monotonic() + 5
            learned = None
            while learned is None and time.monotonic() < deadline:
                msg = learner.receive(0.5)
                if msg is not None and msg.address == "/ouro/midi/learned":
                    learned = str(msg.params[0])
            assert learned is not None, f"no /ouro/midi/learned; errors {learner.errors}"
            assert learned.startswith("cc 20 ch 3 -> record 1 0"), learned
        st = rig.fresh_status()
        assert st["midi"]["in"]["learning"] is False and st["midi"]["in"]["learned"] == 1
        # the message that was learned fired nothing, and cc 20 on channel 1 is not bound:
        # two beats after the engine took both messages, nothing is recording or to record
        m.send_soon([0xB0, 20, 0], [0xB0, 20, 127], spacing=2400)
        taken = wait_until(lambda: (s := rig.status())["midi_in_events"]
                           >= st["midi_in_events"] + 2 and s, 5,
                           describe=lambda: rig.status()["midi"])
        wait_until(lambda: rig.status()["beat"] >= taken["beat"] + 2, 5)
        unbound = cell(rig.status(), 1, 0)
        assert (unbound["state"], unbound["next_state"]) == ("empty", "empty"), unbound
        # on channel 3: a press (below 64, then 64 or above) records
        m.send_soon([0xB2, 20, 0], [0xB2, 20, 127], spacing=2400)
        wait_until(lambda: cell(rig.status(), 1, 0)["state"] == "recording", 5,
                   describe=lambda: rig.status()["midi"])
        # the map with the binding is saved in the data directory ...
        path = rig.engine.data_dir / "midi_map.toml"
        assert rig.status()["midi"]["map"]["source"] == str(path)
        saved = path.read_text()
        bindings = tomllib.loads(saved)["bind"]
        assert {"cc": 20, "channel": 3, "cmd": "record", "column": 1, "row": 0} in bindings
        assert {"note": 36, "cmd": "record", "column": 0, "row": 0} in bindings  # default kept
        # ... and /ouro/midi/map answers with that file, whole
        map_text = str(rig.osc.request("midi/map").params[0])
        assert map_text == saved, (
            f"/ouro/midi/map answered {len(map_text)} characters ending {map_text[-40:]!r}; "
            f"the map file has {len(saved)}")

    judged(server, tmp_path, scenario, config=engine_config(), send=True)

