"""Gesture maps: which footswitch gesture does what, in which mode (TOML).

A map has top-level ``hold_time_s``, ``double_tap_s`` and ``start_mode``, and a table per
mode under ``[modes.<name>]`` with a ``label`` (shown on the screen) and one inline table
per switch (named as in the pin map: ``fs1``..) or ``encoder``, from gesture to action::

    [modes.play]
    label = "PLAY"
    fs1 = { tap = "record", double = "stop" }
    encoder = { cw = "select next_row", ccw = "select prev_row", push = "menu" }

Switch gestures are ``tap``, ``double`` and ``hold`` (:mod:`firmware.gestures`); the
encoder's are ``cw``, ``ccw`` and ``push``. The actions are listed in :data:`ACTIONS`.
While a menu is open the ``menu`` mode's bindings apply. Every mistake raises
:class:`~firmware.errors.KeyMapError` naming the file, the line and the key.

>>> km = default_keymap()
>>> km.start_mode, km.action("play", "fs1", "tap")
('play', Action(verb='record', arg=''))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.errors import KeyMapError
from firmware.gestures import GESTURES
from firmware.tomlfile import Lines, load

__all__ = ["ACTIONS", "DEFAULT_KEYMAP", "ENCODER_GESTURES", "Action", "KeyMap", "Mode",
           "default_keymap", "load_keymap"]

DEFAULT_KEYMAP = Path(__file__).resolve().parent / "keymaps" / "default.toml"
ENCODER = "encoder"
ENCODER_GESTURES = ("cw", "ccw", "push")
SELECT_ARGS = ("next_row", "prev_row", "next_column", "prev_column", "next_empty")

# verb -> (what it does, for the on-screen key map and the docs; what its argument is)
ACTIONS: dict[str, tuple[str, str]] = {
    "record": ("record the selected cell (again: close its first recording)", ""),
    "play": ("play the selected cell", ""),
    "stop": ("stop the selected cell (cancels a recording)", ""),
    "solo": ("solo the selected cell", ""),
    "clear": ("clear the selected cell", ""),
    "undo": ("undo on the selected cell", ""),
    "redo": ("redo on the selected cell", ""),
    "toggle": ("play the selected cell if it is stopped, else stop it", ""),
    "play_row": ("play every loop of the selected row", ""),
    "stop_row": ("stop every loop of the selected row", ""),
    "play_column": ("play every loop of the selected column", ""),
    "stop_column": ("stop every loop of the selected column", ""),
    "stop_all": ("stop every loop", ""),
    "tap": ("tap tempo", ""),
    "click": ("click on/off", ""),
    "count_in": ("count-in on/off", ""),
    "select": ("move the selection", "|".join(SELECT_ARGS)),
    "mode": ("switch to another mode", "a mode name"),
    "menu": ("open the menu", ""),
    "menu_up": ("menu: previous item", ""),
    "menu_down": ("menu: next item", ""),
    "menu_enter": ("menu: change or open the item", ""),
    "menu_back": ("menu: back one level", ""),
    "menu_close": ("menu: close it", ""),
    "none": ("nothing", ""),
}
_TOP_KEYS = ("hold_time_s", "double_tap_s", "start_mode", "modes")


@dataclass(frozen=True)
class Action:
    verb: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.verb} {self.arg}" if self.arg else self.verb


@dataclass(frozen=True)
class Mode:
    name: str
    label: str
    bindings: Mapping[tuple[str, str], Action]  # (switch or "encoder", gesture) -> action


@dataclass(frozen=True)
class KeyMap:
    path: str
    hold_time_s: float
    double_tap_s: float
    start_mode: str
    modes: Mapping[str, Mode]
    lines: Lines | None = field(default=None, compare=False, repr=False)

    def action(self, mode: str, control: str, gesture: str) -> Action | None:
        m = self.modes.get(mode)
        return None if m is None else m.bindings.get((control, gesture))

    def controls(self) -> set[str]:
        """Every switch name (and ``encoder``) some mode binds."""
        return {c for m in self.modes.values() for c, _ in m.bindings}

    def check_controls(self, switches: Iterable[str], encoder: bool) -> None:
        """Every control the map binds exists on the pedal (its pin map)."""
        have = set(switches)
        for m in self.modes.values():
            for control, _ in m.bindings:
                if control == ENCODER and not encoder:
                    raise self._error(("modes", m.name, control),
                                      "the pin map has no encoder")
                if control != ENCODER and control not in have:
                    raise self._error(("modes", m.name, control),
                                      f"no switch {control!r} in the pin map (it has "
                                      f"{', '.join(sorted(have)) or 'none'})")

    def legend(self, mode: str) -> list[str]:
        """One line per binding of ``mode``: ``FS1 tap: record``, for the key map on screen."""
        m = self.modes.get(mode)
        if m is None:
            return []
        return [f"{control.upper()} {gesture}: {action}"
                for (control, gesture), action in m.bindings.items()]

    def _error(self, path: tuple[str, ...], problem: str) -> KeyMapError:
        if self.lines is None:
            return KeyMapError(f"{self.path}: {'.'.join(path)}: {problem}")
        err = self.lines.error(path, problem, KeyMapError)
        assert isinstance(err, KeyMapError)
        return err


def load_keymap(path: str | Path) -> KeyMap:
    """Read and check a gesture map."""
    doc, lines = load(path, KeyMapError)
    return _parse(doc, lines)


def default_keymap() -> KeyMap:
    return load_keymap(DEFAULT_KEYMAP)


def _parse(doc: Mapping[str, Any], lines: Lines) -> KeyMap:
    def fail(path: tuple[str | int, ...], problem: str) -> KeyMapError:
        err = lines.error(path, problem, KeyMapError)
        assert isinstance(err, KeyMapError)
        return err

    for key in doc:
        if key not in _TOP_KEYS:
            raise fail((key,), f"unknown setting (known: {', '.join(_TOP_KEYS)})")
    hold = _seconds(doc.get("hold_time_s", 0.6), ("hold_time_s",), 0.05, 10.0, fail)
    double = _seconds(doc.get("double_tap_s", 0.3), ("double_tap_s",), 0.0, 2.0, fail)
    modes_doc = doc.get("modes")
    if not isinstance(modes_doc, Mapping) or not modes_doc:
        raise fail(("modes",), "there must be at least one [modes.<name>] table")
    modes: dict[str, Mode] = {}
    wants_menu: tuple[str | int, ...] | None = None
    mode_refs: list[tuple[tuple[str | int, ...], str]] = []
    for name, table in modes_doc.items():
        if not isinstance(table, Mapping):
            raise fail(("modes", name), f"must be a table, not {type(table).__name__}")
        label = table.get("label", name.upper())
        if not isinstance(label, str) or not 0 < len(label) <= 8:
            raise fail(("modes", name, "label"), f"must be text of 1 to 8 characters, "
                                                 f"got {label!r}")
        bindings: dict[tuple[str, str], Action] = {}
        for control, gestures in table.items():
            if control == "label":
                continue
            where: tuple[str | int, ...] = ("modes", name, control)
            if not isinstance(gestures, Mapping):
                raise fail(where, "must be a table of gesture = action, e.g. "
                                  "{ tap = \"record\" }")
            allowed = ENCODER_GESTURES if control == ENCODER else GESTURES
            for gesture, text in gestures.items():
                at = (*where, gesture)
                if gesture not in allowed:
                    raise fail(at, f"unknown gesture for {control} "
                                   f"(known: {', '.join(allowed)})")
                action = _action(text, at, fail)
                if action.verb == "menu":
                    wants_menu = at
                if action.verb == "mode":
                    mode_refs.append((at, action.arg))
                bindings[(control, gesture)] = action
        modes[name] = Mode(name, label, bindings)
    start = doc.get("start_mode", next(iter(modes)))
    if not isinstance(start, str) or start not in modes or start == "menu":
        raise fail(("start_mode",), f"must name a mode other than 'menu' (modes: "
                                    f"{', '.join(modes)}), got {start!r}")
    for at, target in mode_refs:
        if target not in modes or target == "menu":
            raise fail(at, f"no mode {target!r} to switch to (modes: "
                           f"{', '.join(m for m in modes if m != 'menu')})")
    if wants_menu is not None and "menu" not in modes:
        raise fail(wants_menu, "opens the menu, but there is no [modes.menu] to drive it")
    return KeyMap(lines.name, hold, double, start, modes, lines)


def _seconds(value: Any, path: tuple[str, ...], lo: float, hi: float, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise fail(path, f"must be a number of seconds from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _action(text: Any, at: tuple[str | int, ...], fail: Any) -> Action:
    if not isinstance(text, str):
        raise fail(at, f"an action is text such as \"record\", got {text!r}")
    verb, _, arg = text.strip().partition(" ")
    arg = arg.strip()
    if verb not in ACTIONS:
        raise fail(at, f"unknown action {verb!r} (known: {', '.join(ACTIONS)})")
    takes = ACTIONS[verb][1]
    if verb == "select" and arg not in SELECT_ARGS:
        raise fail(at, f"select takes one of {', '.join(SELECT_ARGS)}, got {arg!r}")
    if verb == "mode" and not arg:
        raise fail(at, "mode takes the name of the mode to switch to")
    if not takes and arg:
        raise fail(at, f"{verb} takes no argument, got {arg!r}")
    return Action(verb, arg)
