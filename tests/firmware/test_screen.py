"""The pedal's screens, drawn on luma's dummy device and compared pixel for pixel with the
reference images in ``tests/firmware/screens/``.

To accept new drawings, run ``OURO_UPDATE_SCREENS=1 pytest tests/firmware/test_screen.py``
and look at the images (they are 128x64; scale them up to see them). A failing comparison
writes ``<name>.actual.png`` next to the reference and says how many pixels differ.
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops

from firmware.display import Display, dummy_display
from firmware.screen import (
    FONT,
    SMALL,
    Menu,
    View,
    alerts_of,
    bench_render,
    busy_status,
    cell_name,
    menu_window,
    render,
)

SCREENS = Path(__file__).parent / "screens"
UPDATE = os.environ.get("OURO_UPDATE_SCREENS") == "1"


def status(cells: list[list[str]] | None = None, **over: Any) -> dict[str, Any]:
    """A status like the engine's: a matrix of cell states (``cells[column][row]``, a state
    or ``"state>next_state"``), columns with lengths, the rest as given."""
    grid = cells or [["empty"] * 5 for _ in range(5)]
    lengths = over.pop("lengths", [0] * len(grid))
    positions = over.pop("positions", [0] * len(grid))
    running = over.pop("running", [False] * len(grid))
    out: dict[str, Any] = {
        "tempo": 120.0, "beats_per_bar": 4, "beat": 0, "beat_in_bar": 0,
        "sync": "internal", "selected": [0, 0], "click": {"on": False, "volume": 0.5},
        "xruns": 0, "count_in": {"on": False, "beats_left": 0},
        "midi": {"clock_in": {"state": "off"}},
        "columns": [{"beats": 4 if n else 0, "length_frames": n, "position": p,
                     "running": r} for n, p, r in zip(lengths, positions, running,
                                                       strict=True)],
        "cells": [[{"state": s.split(">")[0], "next_state": s.split(">")[-1],
                    "volume": 1.0, "beats": 0} for s in col] for col in grid],
        "jack": {"state": "running", "lost_reason": ""},
        "session": {"problem": None},
        "recorder": {"running": False, "reason": None, "channels": ["in_1", "in_2"],
                     "peaks_dbfs": [None, None]},
        "pool": {"exhausted": False},
        "input_peak_dbfs": [None, None],
    }
    out.update(over)
    return out


E = "empty"


def first_recording() -> dict[str, Any]:
    cells = [["recording", E, E, E, E]] + [[E] * 5 for _ in range(4)]
    return status(cells, lengths=[0] * 5, positions=[52000, 0, 0, 0, 0],
                  running=[True, False, False, False, False], beat=6, beat_in_bar=2,
                  input_peak_dbfs=[-9.5, -14.0])


SCREEN_VIEWS: dict[str, View] = {
    "perf_empty": View(status=status(), selected=(0, 0), mode="PLAY"),
    "perf_first_recording": View(status=first_recording(), selected=(0, 0), mode="PLAY"),
    "perf_first_recording_blink_off": View(status=first_recording(), selected=(0, 0),
                                           mode="PLAY", blink=False),
    "perf_busy": View(status=busy_status(0), selected=(1, 1), mode="PLAY"),
    "perf_busy_blink_off": View(status=busy_status(0), selected=(1, 1), mode="PLAY",
                                blink=False),
    "perf_midi_xruns": View(
        status=status([["playing", "playing", E, E, E], ["idle", "playing>idle", E, E, E],
                       [E] * 5, [E] * 5, [E] * 5],
                      lengths=[96000, 192000, 0, 0, 0], positions=[70000, 20000, 0, 0, 0],
                      running=[True, True, False, False, False], sync="midi", tempo=97.3,
                      beat=517, beat_in_bar=1, xruns=12, click={"on": True},
                      midi={"clock_in": {"state": "lost: keeping the last tempo"}},
                      input_peak_dbfs=[0.0, -30.0]),
        selected=(1, 1), mode="EDIT"),
    "menu_short": View(status=status(), menu=Menu("LOOP B2", ("Undo", "Redo", "Clear",
                                                              "Volume"), 3,
                                                  ("", "", "", "80%"))),
    "menu_scrolled": View(status=status(), menu=Menu(
        "SETTINGS", ("Tempo", "Click", "Click volume", "Sync", "Count-in", "Monitor",
                     "Brightness", "Pairing", "About this pedal and its many versions"),
        6, ("120", "on", "50%", "MIDI", "off", "off", "7", ">", ""))),
    "alert_jack": View(status=status(), alert="JACK LOST\nserver shut down"),
    "alert_long": View(status=status(), alert="DISK FULL\nsession not saved: loop t12 not "
                       "saved: [Errno 28] ENOSPC (No space left on device) while writing "
                       "/var/lib/ouroboros/session/t12.wav and more words after that"),
    "unreachable": View(status=None),
    "pairing": View(status=status(), pairing_code="482913"),
    "toast": View(status=busy_status(0), selected=(1, 1), mode="PLAY", message="UNDO B2"),
    "toast_refusal": View(status=status(), message="play: cell (3, 3) is empty"),
    "odd_3x2": View(status={"cells": [[{"state": "playing"}, {"state": "warp"}],
                                      [{"state": "idle", "next_state": "playing"}, None],
                                      [{"state": "recording"}, {}]],
                            "columns": [{"length_frames": 100, "position": 50,
                                         "running": True}],
                            "tempo": "fast", "beat": None},
                    selected=(2, 1), mode="PLAY"),
}


def shown(view: View) -> Image.Image:
    """The image luma's dummy device holds after the view is shown on it."""
    device = dummy_display()
    Display(device).show(view)
    assert device.image is not None
    return device.image


def compare(name: str, image: Image.Image) -> None:
    ref = SCREENS / f"{name}.png"
    actual = SCREENS / f"{name}.actual.png"
    if UPDATE:
        SCREENS.mkdir(parents=True, exist_ok=True)
        image.save(ref)
        actual.unlink(missing_ok=True)
        return
    assert ref.exists(), f"{ref} is missing: run with OURO_UPDATE_SCREENS=1 and look at it"
    want = Image.open(ref).convert("1")
    diff = ImageChops.logical_xor(want, image.convert("1"))
    differing = sum(diff.histogram()[1:])
    if differing:
        image.save(actual)
        pytest.fail(f"{name}: {differing} pixel(s) differ from {ref.name} (bounding box "
                    f"{diff.getbbox()}); the drawing is in {actual}")
    actual.unlink(missing_ok=True)


@pytest.mark.parametrize("name", sorted(SCREEN_VIEWS))
def test_screen_matches_reference(name: str) -> None:
    view = SCREEN_VIEWS[name]
    render(view, strict=True)  # nothing is swallowed by the error screen
    image = shown(view)
    assert image.size == (128, 64) and image.mode == "1"
    compare(name, image)


def test_unreachable_as_the_pedal_says_it_is_the_unreachable_screen() -> None:
    a = render(View(status=None, alert="ENGINE UNREACHABLE"))
    assert a.tobytes() == render(View(status=None)).tobytes()


def test_render_is_deterministic_and_new_each_time() -> None:
    view = SCREEN_VIEWS["perf_busy"]
    a, b = render(view), render(view)
    assert a is not b and a.tobytes() == b.tobytes()


def test_blink_changes_queued_cells_and_rec_dot_only_in_their_places() -> None:
    on = render(View(status=busy_status(0), selected=(1, 1), blink=True))
    off = render(View(status=busy_status(0), selected=(1, 1), blink=False))
    box = ImageChops.logical_xor(on, off).getbbox()
    assert box is not None
    # queued cells are in the grid (x >= 73), the REC dot at x 36..46
    assert box[0] >= 36 and box[2] <= 128


# ---------------------------------------------------------------------------- alerts


def test_no_alerts_on_a_healthy_status() -> None:
    assert alerts_of(status()) == []
    assert alerts_of(busy_status(3)) == []


def test_alert_headlines() -> None:
    def heads(**over: Any) -> list[str]:
        return [a.split("\n")[0] for a in alerts_of(status(**over))]

    assert heads(jack={"state": "lost", "lost_reason": "server shut down"}) == ["JACK LOST"]
    assert heads(jack={"state": "closed"}) == ["JACK LOST"]
    assert heads(recorder={"running": False,
                           "reason": "stopped: disk space below 500 MB"}) == ["DISK LOW"]
    assert heads(recorder={"running": False,
                           "reason": "stopped: write error: ENOSPC (No space left on "
                                     "device)"}) == ["DISK LOW"]
    assert heads(recorder={"running": False, "reason": "stopped: writer failed: "
                                                       "RuntimeError('x')"}) == [
        "RECORDER STOPPED"]
    assert heads(recorder={"running": False, "reason": "stopped"}) == []  # stopped by hand
    assert heads(session={"problem": "loop t3 not saved: [Errno 28] No space left on "
                                     "device"}) == ["DISK FULL"]
    assert heads(session={"problem": "session not saved: [Errno 13] Permission denied"}
                 ) == ["SESSION NOT SAVED"]
    lost = {"clock_in": {"state": "lost: keeping the last tempo"}}
    assert heads(sync="midi", midi=lost) == ["MIDI CLOCK LOST"]
    assert heads(sync="midi", midi={"clock_in": {"state": "waiting"}}) == ["NO MIDI CLOCK"]
    assert heads(sync="midi", midi={"clock_in": {"state": "following"}}) == []
    assert heads(sync="internal", midi=lost) == []  # not following: nothing is lost
    assert heads(pool={"exhausted": True}) == ["LOOP MEMORY FULL"]


def test_alerts_are_ordered_most_serious_first_and_carry_details() -> None:
    alerts = alerts_of(status(jack={"state": "lost", "lost_reason": "zombified"},
                              sync="midi", midi={"clock_in": {"state": "lost: x"}},
                              session={"problem": "ENOSPC"}))
    assert [a.split("\n")[0] for a in alerts] == ["JACK LOST", "DISK FULL",
                                                  "MIDI CLOCK LOST"]
    assert alerts[0] == "JACK LOST\nzombified"


def test_alerts_of_odd_statuses() -> None:
    assert alerts_of(None) == ["ENGINE UNREACHABLE\nreconnecting..."]
    for odd in ({}, {"jack": None}, {"jack": "lost"}, {"recorder": {"reason": 5}},
                {"session": []}, {"sync": "midi"}, {"sync": "midi", "midi": {"clock_in": 1}},
                {"pool": {"exhausted": "yes"}}):
        alerts_of(odd)  # no exception
    assert alerts_of({"sync": "midi"}) == []  # the clock's state is unknown: no claim


# ------------------------------------------------------------------------------ menu


def test_menu_window_keeps_the_index_in_view_and_in_the_middle() -> None:
    for count in range(0, 15):
        for index in range(count):
            first, last = menu_window(count, index, 6)
            assert first <= index < last
            assert last - first == min(count, 6)
            assert 0 <= first and last <= count
    assert [menu_window(10, i, 6)[0] for i in range(10)] == [0, 0, 0, 1, 2, 3, 4, 4, 4, 4]
    assert menu_window(10, 99, 6) == (4, 10)  # out of range: clamped
    assert menu_window(10, -3, 6) == (0, 6)


@pytest.mark.parametrize("index", range(10))
def test_menu_highlights_the_selected_item(index: int) -> None:
    items = tuple(f"Item {i}" for i in range(10))
    img = render(View(status=status(), menu=Menu("M", items, index)), strict=True)
    lit_rows = [r for r in range(6) if img.getpixel((1, 10 + 9 * r)) != 0]
    assert lit_rows == [index - menu_window(10, index, 6)[0]]


def test_menus_that_do_not_fit_are_drawn_anyway() -> None:
    long = "x" * 80
    for menu in (Menu("", (), 0), Menu(long, (long,), 5, (long, long)),
                 Menu("T", ("a", "b"), -1, ("1",)), Menu("T", tuple("abcdefghij"), 9, ())):
        render(View(status=status(), menu=menu), strict=True)


# ------------------------------------------------------------------------- odd status


def test_render_never_raises_on_partial_or_odd_statuses() -> None:
    odd: list[Any] = [
        {}, {"cells": None}, {"cells": [[]]}, {"cells": [None, 3, "x"]},
        {"cells": [[{"state": 7, "next_state": None}]], "columns": "no"},
        {"cells": [[{"state": "playing"}] * 16 for _ in range(16)],
         "columns": [{"length_frames": 10, "position": 99, "running": True}] * 16},
        {"tempo": float("nan"), "beat": float("inf"), "beats_per_bar": 0},
        {"tempo": 1e300, "beat": 10**15, "beats_per_bar": -3, "beat_in_bar": "2"},
        {"input_peak_dbfs": [None, "loud", 12.0, -1e9, True]},
        {"recorder": {"channels": ["in_1"], "peaks_dbfs": [3.0]}},
        {"columns": [{"length_frames": -5, "position": 3, "running": True}],
         "cells": [[{"state": "recording"}]]},
        {"count_in": {"on": True, "beats_left": 3}},
        {"sync": None, "click": None, "xruns": "many"},
    ]
    views = [View(status=s, selected=sel, mode=m)
             for s in odd for sel in ((0, 0), (99, -1)) for m in ("", "A VERY LONG MODE")]
    views += [View(status=None, alert=""), View(status={}, alert="\n\n\n"),
              View(status={}, alert="X" * 300), View(status={}, pairing_code="9" * 40),
              View(status={}, message="m" * 200)]
    for view in views:
        img = render(view, strict=True)
        assert img.size == (128, 64)


def test_render_survives_random_damage_to_a_real_status() -> None:
    rng = random.Random(1234)
    junk: list[Any] = [None, 0, -1, 1.5, float("nan"), "", "x", [], {}, [None], True]

    def damage(node: Any) -> None:
        if isinstance(node, (dict, list)) and node:
            key = (rng.choice(sorted(node)) if isinstance(node, dict)
                   else rng.randrange(len(node)))
            if rng.random() < 0.5:
                node[key] = rng.choice(junk)
            else:
                damage(node[key])

    base = busy_status(0)
    for _ in range(300):
        s = copy.deepcopy(base)
        for _ in range(rng.randint(1, 4)):
            damage(s)
        render(View(status=s, selected=(1, 1), mode="PLAY"), strict=True)
        alerts_of(s)


def test_a_drawing_bug_shows_an_error_screen_unless_strict(monkeypatch: Any) -> None:
    import firmware.screen as screen

    def broken(*_args: Any) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(screen, "_draw_performance", broken)
    img = render(View(status=status()))
    assert img.getbbox() is not None  # something is drawn: the error screen
    with pytest.raises(ZeroDivisionError):
        render(View(status=status()), strict=True)


# ----------------------------------------------------------------------------- pieces


def test_bar_beat_and_names() -> None:
    from firmware.screen import _bar_beat

    assert _bar_beat({"beat": 0, "beats_per_bar": 4, "beat_in_bar": 0}) == "1.1"
    assert _bar_beat({"beat": 45, "beats_per_bar": 4, "beat_in_bar": 1}) == "12.2"
    assert _bar_beat({"beat": 7, "beats_per_bar": 3}) == "3.2"
    assert _bar_beat({"count_in": {"on": True, "beats_left": 2}, "beat": 9}) == "-2"
    assert cell_name(0, 0) == "A1" and cell_name(2, 4) == "C5"


def test_fonts_cover_what_the_screens_print() -> None:
    for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-+/%()[]<>=_'":
        assert FONT._glyph(ch) == ch
    for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:!?-+/%":
        assert SMALL._glyph(ch) == ch
    assert SMALL._glyph("k") == "K"
    assert FONT._glyph("€") == "?"
    # digits share one width, so a running counter does not move
    assert len({FONT.glyph_width(d) for d in "0123456789"}) == 1


def test_render_is_fast_enough() -> None:
    """p99 under 10 ms here leaves room for 20 frames a second on a Pi (measured ~0.6 ms
    on a desktop, including luma's dummy device)."""
    figures = bench_render(300, dummy_display())
    assert figures["frames"] == 300
    assert figures["p99_ms"] < 10.0, figures
