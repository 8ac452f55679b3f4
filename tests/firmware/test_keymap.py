"""Gesture maps: the default one covers a whole session; every mistake names its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.errors import KeyMapError
from firmware.keymap import ACTIONS, DEFAULT_KEYMAP, Action, default_keymap, load_keymap
from firmware.pinmap import builtin_boards, builtin_pinmap


def test_the_default_map_runs_a_session_with_four_switches() -> None:
    km = default_keymap()
    assert km.start_mode == "play"
    used = {a.verb for m in km.modes.values() for a in m.bindings.values()}
    # what the issue asks of the feet alone
    for verb in ("record", "toggle", "stop", "undo", "clear", "select", "play_row",
                 "stop_row", "play_column", "stop_column", "stop_all", "tap", "click", "menu"):
        assert verb in used, verb
    assert {c for c in km.controls() if c != "encoder"} == {"fs1", "fs2", "fs3", "fs4"}
    assert km.action("play", "fs1", "tap") == Action("record")
    assert km.action("edit", "fs4", "hold") == Action("mode", "play")
    assert "FS1 tap: record" in km.legend("play")


@pytest.mark.parametrize("board", builtin_boards())
def test_the_default_map_fits_every_shipped_pin_map(board: str) -> None:
    pm = builtin_pinmap(board)
    default_keymap().check_controls([s.name for s in pm.switches], pm.encoder is not None)


def test_every_action_is_described() -> None:
    assert all(text for text, _ in ACTIONS.values())


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "map.toml"
    p.write_text(text)
    return p


GOOD = """hold_time_s = 0.5
start_mode = "play"

[modes.play]
label = "PLAY"
fs1 = { tap = "record" }
fs2 = { tap = "toggle", hold = "mode edit" }

[modes.edit]
fs1 = { tap = "tap" }
fs2 = { hold = "mode play" }
"""


def test_a_good_map_loads(tmp_path: Path) -> None:
    km = load_keymap(write(tmp_path, GOOD))
    assert km.hold_time_s == 0.5 and km.double_tap_s == 0.3
    assert km.modes["edit"].label == "EDIT"
    assert km.action("edit", "fs1", "tap") == Action("tap")


@pytest.mark.parametrize(("old", "new", "line", "says"), [
    ('fs1 = { tap = "record" }', 'fs1 = { tap = "recrod" }', 6,
     "modes.play.fs1.tap: unknown action 'recrod'"),
    ('fs1 = { tap = "record" }', 'fs1 = { swipe = "record" }', 6,
     "modes.play.fs1.swipe: unknown gesture for fs1"),
    ('fs2 = { hold = "mode play" }', 'fs2 = { hold = "mode dance" }', 11,
     "modes.edit.fs2.hold: no mode 'dance' to switch to"),
    ('hold_time_s = 0.5', 'hold_time_s = "long"', 1,
     "hold_time_s: must be a number of seconds"),
    ('start_mode = "play"', 'start_mode = "nowhere"', 2, "start_mode: must name a mode"),
    ('fs1 = { tap = "tap" }', 'fs1 = { tap = "select up" }', 10,
     "modes.edit.fs1.tap: select takes one of"),
    ('fs1 = { tap = "tap" }', 'fs1 = { tap = "record 3" }', 10,
     "modes.edit.fs1.tap: record takes no argument"),
    ('fs1 = { tap = "tap" }', 'fs1 = { tap = "menu" }', 10,
     "modes.edit.fs1.tap: opens the menu, but there is no [modes.menu]"),
    ('label = "PLAY"', 'label = "PLAYING LOUD"', 5, "modes.play.label: must be text of 1 to 8"),
    ('fs1 = { tap = "record" }', 'fs1 = "record"', 6,
     "modes.play.fs1: must be a table of gesture = action"),
    ('hold_time_s = 0.5', 'hold_time_s = 0.5\nspeed = 3', 2, "speed: unknown setting"),
    ('[modes.edit]', '[modes.edit', 9, "not valid TOML"),
])
def test_a_mistake_names_the_file_line_and_key(tmp_path: Path, old: str, new: str,
                                               line: int, says: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(KeyMapError) as err:
        load_keymap(path)
    assert str(err.value).startswith(f"{path}:{line}: "), str(err.value)
    assert says in str(err.value), str(err.value)


def test_a_switch_missing_from_the_pin_map_is_named(tmp_path: Path) -> None:
    km = load_keymap(write(tmp_path, GOOD.replace('fs2 = { tap = "toggle"',
                                                  'fs9 = { tap = "toggle"')))
    with pytest.raises(KeyMapError, match=r":7: modes\.play\.fs9: no switch 'fs9' in the pin"):
        km.check_controls(["fs1", "fs2", "fs3", "fs4"], encoder=False)


def test_an_encoder_binding_needs_an_encoder() -> None:
    with pytest.raises(KeyMapError, match="encoder: the pin map has no encoder"):
        default_keymap().check_controls(["fs1", "fs2", "fs3", "fs4"], encoder=False)


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(KeyMapError, match="no such file"):
        load_keymap(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyMapError, match="not UTF-8"):
        load_keymap(bad)


def test_the_shipped_map_is_the_default() -> None:
    assert DEFAULT_KEYMAP.is_file()
