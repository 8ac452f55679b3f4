"""The frame clock of the JACK host (rtcore/host.py), without a JACK server: which frame time
each cycle stands for, what counts as missed, and its events read from another thread."""

from __future__ import annotations

import sys
import threading

from rtcore.host import FrameClock

P = 256


def test_a_late_read_is_not_a_miss() -> None:
    clock = FrameClock()
    assert clock.advance(1000, P) == 0
    assert clock.advance(1000 + 2 * P, P) == 0  # read one cycle ahead: suspect only
    assert clock.advance(1000 + 2 * P, P) == 0  # ... and the next cycle is on time
    assert (clock.misses, clock.glitches, clock.anomalies) == (0, 1, 1)
    assert clock.event_list() == [[1000 + 2 * P, 1000 + P, P]]


def test_a_jump_seen_twice_is_caught_up_once() -> None:
    clock = FrameClock()
    clock.advance(0, P)
    assert clock.advance(3 * P, P) == 0  # the cycle that finds the jump plays as expected
    assert clock.advance(4 * P, P) == 2 * P  # confirmed: two cycles were missed
    assert clock.advance(5 * P, P) == 0
    assert (clock.misses, clock.glitches, clock.anomalies) == (1, 0, 2)
    assert clock.event_list() == [[3 * P, P, 2 * P], [4 * P, 2 * P, 2 * P]]


def test_events_are_read_safely_while_the_audio_thread_appends() -> None:
    """The status is built on another thread than the one that appends events; iterating the
    deque in Python there once raised 'deque mutated during iteration' (seen in the image
    test's engine log) and lost a status answer."""
    clock = FrameClock()
    clock.advance(0, P)
    stop = threading.Event()
    failures: list[BaseException] = []

    def audio() -> None:
        ft = 0
        while not stop.is_set():
            ft += 2 * P  # every cycle a jump: every cycle appends an event
            clock.advance(ft, P)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    writer = threading.Thread(target=audio)
    writer.start()
    try:
        for _ in range(20000):
            try:
                events = clock.event_list()
            except RuntimeError as exc:
                failures.append(exc)
                break
            assert len(events) <= 16 and all(len(e) == 3 for e in events)
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(old)
    assert not failures, failures
    assert clock.anomalies > 16
