"""Gestures from edges: tap on the press, double, hold, and contact bounce (times given)."""

from __future__ import annotations

import pytest

from firmware.gestures import GestureDetector


def run(det: GestureDetector, events: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Feed ('press'|'release'|'tick', t) events; the gestures that came, with their time."""
    out = []
    for kind, t in events:
        g = getattr(det, kind)(t)
        if g is not None:
            out.append((g, t))
    return out


def test_a_tap_comes_on_the_press_edge_not_the_release() -> None:
    det = GestureDetector(hold_time_s=0.6, double_tap_s=0.3)
    assert run(det, [("press", 1.0)]) == [("tap", 1.0)]
    assert det.pressed
    assert run(det, [("release", 1.08), ("tick", 2.0)]) == []
    assert not det.pressed


def test_a_second_press_inside_the_window_is_a_double_and_a_third_starts_afresh() -> None:
    det = GestureDetector(hold_time_s=0.6, double_tap_s=0.3)
    got = run(det, [("press", 0.0), ("release", 0.1), ("press", 0.29), ("release", 0.35),
                    ("press", 0.5), ("release", 0.6), ("press", 1.5)])
    assert got == [("tap", 0.0), ("double", 0.29), ("tap", 0.5), ("tap", 1.5)]


def test_a_press_just_outside_the_window_is_a_new_tap() -> None:
    det = GestureDetector(hold_time_s=0.6, double_tap_s=0.3)
    assert run(det, [("press", 0.0), ("release", 0.1), ("press", 0.31)]) == [
        ("tap", 0.0), ("tap", 0.31)]


def test_hold_comes_once_from_the_frame_loop_while_the_switch_is_down() -> None:
    det = GestureDetector(hold_time_s=0.6, double_tap_s=0.3)
    ticks = [("tick", 0.033 * k) for k in range(1, 40)]
    got = run(det, [("press", 0.0), *ticks, ("release", 1.4)])
    assert got[0] == ("tap", 0.0)
    assert [g for g, _ in got[1:]] == ["hold"]
    assert 0.6 <= got[1][1] < 0.6 + 0.034
    # no double right after a hold
    assert run(det, [("press", 1.5)]) == [("tap", 1.5)]


def test_a_hold_missed_by_a_stalled_frame_loop_still_counts_at_release() -> None:
    det = GestureDetector(hold_time_s=0.6, double_tap_s=0.3)
    assert run(det, [("press", 0.0), ("release", 0.9)]) == [("tap", 0.0), ("hold", 0.9)]


def test_contact_bounce_is_one_press_and_one_release() -> None:
    det = GestureDetector(hold_time_s=0.6, double_tap_s=0.3, bounce_s=0.02)
    press_bounce = [("press", 0.0), ("release", 0.002), ("press", 0.004), ("release", 0.007),
                    ("press", 0.009)]
    release_bounce = [("release", 0.2), ("press", 0.203), ("release", 0.206)]
    got = run(det, [*press_bounce, ("tick", 0.05), *release_bounce, ("tick", 0.25)])
    assert got == [("tap", 0.0)]
    assert not det.pressed
    assert det.bounces == 6


def test_a_bounce_that_settles_down_is_counted_by_the_tick() -> None:
    # the release edge came inside the bounce time of the press and the contact ended up
    # open: the next tick counts the release
    det = GestureDetector(hold_time_s=0.6, double_tap_s=0.0, bounce_s=0.02)
    assert run(det, [("press", 0.0), ("release", 0.01)]) == [("tap", 0.0)]
    assert det.pressed
    run(det, [("tick", 0.03)])
    assert not det.pressed
    assert run(det, [("press", 0.5), ("release", 0.505), ("press", 0.51)]) == [("tap", 0.5)]
    # a release whose bounce settles closed: the foot is down again, a press (late)
    assert run(det, [("release", 0.6), ("press", 0.61), ("tick", 0.7)]) == [("tap", 0.7)]
    assert det.pressed


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"hold_time_s": 0}, "hold_time_s"),
    ({"double_tap_s": 3}, "double_tap_s"),
    ({"bounce_s": -1}, "bounce_s"),
])
def test_bad_timings_are_named(kwargs: dict[str, float], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        GestureDetector(**kwargs)
