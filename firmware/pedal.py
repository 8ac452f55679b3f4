"""``ouro pedal``: footswitches and screen, wired to the engine's OSC API.

A process of its own, never the engine's. The controls (:mod:`firmware.controls`) report
gestures; the gesture map (:mod:`firmware.keymap`) turns them into actions; an action
becomes one or more engine commands sent at once by the :class:`~firmware.link.EngineLink`
(from the pin callback's thread, so a tap leaves on its edge). A frame loop, at ``fps``,
finds holds, moves the LEDs and draws the screen from the latest status push. When no
status has come for a second the screen says the engine is unreachable and the link keeps
knocking until the engine is back.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from firmware.keymap import Action, KeyMap
from firmware.screen import Menu, View, alerts_of

__all__ = ["MenuState", "Pedal", "Sink", "next_empty_row", "pairing_code", "run_frames"]

TOAST_S = 1.5
ALERT_S = 3.0  # a new alert takes the whole screen this long, then shows as a mark
BLINK_S = 0.25
TEMPO_FLASH_S = 0.08
CELL_COMMANDS = ("record", "play", "stop", "solo", "clear", "undo", "redo")
PLAYING = ("playing", "solo")


class Sink(Protocol):
    """Where commands go: :class:`~firmware.link.EngineLink` (or anything alike)."""

    status: dict[str, Any] | None
    status_at: float  # monotonic time the status arrived

    def command(self, name: str, *args: Any, ack: bool = True) -> int: ...

    @property
    def reachable(self) -> bool: ...


class Screen(Protocol):
    def show(self, view: View) -> Any: ...


def next_empty_row(cells: list[list[Mapping[str, Any]]], column: int, after: int) -> int | None:
    """The first empty row of ``column`` below ``after`` (wrapping), or None."""
    col = cells[column]
    rows = len(col)
    for k in range(1, rows + 1):
        r = (after + k) % rows
        if col[r].get("state") == "empty":
            return r
    return None


def pairing_code(data_dir: Path, renew: bool = False) -> str:
    """The code a tablet types to pair with this pedal (6 digits), kept in
    ``<data_dir>/pairing.json`` so the pedal's service for the companion reads the same."""
    path = data_dir / "pairing.json"
    if not renew:
        try:
            code = json.loads(path.read_text())["code"]
            if isinstance(code, str) and len(code) == 6 and code.isdigit():
                return code
        except (OSError, ValueError, KeyError, TypeError):
            pass
    code = f"{secrets.randbelow(10**6):06d}"
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"code": code}) + "\n")
    tmp.replace(path)
    return code


@dataclass
class MenuState:
    """The menu tree: a stack of (title, items) levels and the cursor of the top one."""

    stack: list[tuple[str, list[str], int]] = field(default_factory=list)
    editing_tempo: float | None = None  # the tempo being set, while its item is open

    @property
    def open(self) -> bool:
        return bool(self.stack)


class Pedal:
    """The pedal's behaviour, independent of where its gestures and frames come from."""

    def __init__(self, link: Sink, keymap: KeyMap, *, screen: Screen | None = None,
                 data_dir: Path | None = None, clock: Callable[[], float] = time.monotonic,
                 leds: Callable[[str, float], None] | None = None):
        self.link = link
        self.keymap = keymap
        self.screen = screen
        self.data_dir = data_dir
        self.clock = clock
        self.set_led = leds
        self.mode = keymap.start_mode
        self.menu = MenuState()
        self.selected: tuple[int, int] = (0, 0)
        self._selected_at = -1e9  # when the pedal last moved the selection itself
        self.message: str | None = None
        self._message_until = 0.0
        self.pairing: str | None = None  # the code on screen, while shown
        self.last_token = 0
        self.gestures = 0
        self.frames = 0
        self._lock = threading.RLock()
        self._prev_cells: list[list[str]] | None = None
        self._alerts_seen: set[str] = set()
        self._alert: str | None = None
        self._alert_until = 0.0

    # ------------------------------------------------------------------ gestures

    def on_gesture(self, control: str, gesture: str) -> None:
        """A gesture from the controls (any thread)."""
        with self._lock:
            self.gestures += 1
            mode = "menu" if self.menu.open else self.mode
            action = self.keymap.action(mode, control, gesture)
            if action is not None:
                self.perform(action)

    def perform(self, action: Action) -> None:
        verb, arg = action.verb, action.arg
        status = self.link.status
        col, row = self.selected
        if verb in CELL_COMMANDS:
            self._send(verb, col, row)
        elif verb == "toggle":
            state = _cell(status, col, row).get("state")
            if state == "empty":
                self.toast("EMPTY CELL")
            elif state in PLAYING:
                self._send("stop", col, row)
            else:  # idle, or a first recording that this closes
                self._send("play", col, row)
        elif verb in ("play_row", "stop_row", "play_column", "stop_column", "stop_all"):
            self._group(verb, status, col, row)
        elif verb == "tap":
            self._send("tap")
        elif verb in ("click", "count_in"):
            on = bool(((status or {}).get(verb) or {}).get("on"))
            self._send(verb, 0 if on else 1)
        elif verb == "select":
            self._select(arg, status)
        elif verb == "mode":
            self.mode = arg
            self.toast(self.keymap.modes[arg].label)
        elif verb == "menu":
            self.menu = MenuState([("MENU", self._top_items(), 0)])
        elif verb.startswith("menu_"):
            self._menu(verb[5:])

    def _send(self, name: str, *args: Any) -> None:
        self.last_token = self.link.command(name, *args)

    def _group(self, verb: str, status: Mapping[str, Any] | None, col: int, row: int) -> None:
        cells = (status or {}).get("cells") or []
        targets = []
        for c, column in enumerate(cells):
            for r, cell in enumerate(column):
                if (verb.endswith("row") and r != row) or (verb.endswith("column")
                                                            and c != col):
                    continue
                state = cell.get("state")
                if verb.startswith("play") and state == "idle":
                    targets.append(("play", c, r))
                elif verb.startswith("stop") and state in ("playing", "solo", "recording"):
                    targets.append(("stop", c, r))
        if not targets:
            self.toast("NOTHING TO " + ("PLAY" if verb.startswith("play") else "STOP"))
        for name, c, r in targets:
            self._send(name, c, r)

    def _select(self, how: str, status: Mapping[str, Any] | None) -> None:
        cells = (status or {}).get("cells") or []
        cols = len(cells) or 5
        rows = len(cells[0]) if cells else 5
        col, row = self.selected
        if how == "next_row":
            row = (row + 1) % rows
        elif how == "prev_row":
            row = (row - 1) % rows
        elif how in ("next_column", "prev_column"):
            col = (col + (1 if how == "next_column" else -1)) % cols
            # a new column starts at its first empty row: where the next layer goes
            found = next_empty_row(cells, col, -1) if cells else None
            row = 0 if found is None else found
        elif how == "next_empty" and cells:
            found = next_empty_row(cells, col, row)
            if found is None:
                self.toast("COLUMN FULL")
                return
            row = found
        self.select(col, row)

    def select(self, col: int, row: int) -> None:
        self.selected = (col, row)
        self._selected_at = self.clock()
        self._send("select", col, row)

    # ------------------------------------------------------------------ the menu

    def _top_items(self) -> list[str]:
        return ["Click", "Count-in", "Sync", "Tempo", "Sessions", "Pairing", "Exit"]

    def _menu(self, op: str) -> None:
        m = self.menu
        if not m.open:
            return
        title, items, index = m.stack[-1]
        if self.pairing is not None and op in ("back", "enter", "close"):
            self.pairing = None
            return
        if m.editing_tempo is not None:
            self._tempo_edit(op)
            return
        if op in ("up", "down"):
            index = (index + (1 if op == "down" else -1)) % len(items)
            m.stack[-1] = (title, items, index)
        elif op == "back":
            m.stack.pop()
        elif op == "close":
            m.stack.clear()
        elif op == "enter":
            self._menu_enter(title, items[index])

    def _menu_enter(self, title: str, item: str) -> None:
        status = self.link.status or {}
        m = self.menu
        if item == "Exit" or item == "Back":
            m.stack.pop()
        elif item == "Click":
            self._send("click", 0 if (status.get("click") or {}).get("on") else 1)
        elif item == "Count-in":
            self._send("count_in", 0 if (status.get("count_in") or {}).get("on") else 1)
        elif item == "Sync":
            self._send("sync", "internal" if status.get("sync") == "midi" else "midi")
        elif item == "Tempo":
            m.editing_tempo = float(status.get("tempo") or 120.0)
        elif item == "Sessions":
            m.stack.append(("SESSIONS", ["Save", "New", "Back"], 0))
        elif item == "Save":
            self.link.command("session/save", ack=False)
            self.toast("SAVED")
        elif item == "New":
            self.link.command("session/new", ack=False)
            m.stack.clear()
        elif item == "Pairing":
            if self.data_dir is not None:
                self.pairing = pairing_code(self.data_dir)
            else:
                self.toast("NO DATA DIR")

    def _tempo_edit(self, op: str) -> None:
        m = self.menu
        assert m.editing_tempo is not None
        if op in ("up", "down"):
            # footswitches or the encoder: whole BPM, like a hardware pedal's tempo knob
            step = 1.0 if op == "up" else -1.0
            m.editing_tempo = min(300.0, max(20.0, round(m.editing_tempo) + step))
        elif op == "enter":
            self._send("tempo", float(m.editing_tempo))
            m.editing_tempo = None
        else:
            m.editing_tempo = None

    def menu_view(self) -> Menu | None:
        m = self.menu
        if not m.open:
            return None
        status = self.link.status or {}
        title, items, index = m.stack[-1]
        values = []
        for item in items:
            if item == "Click":
                values.append("on" if (status.get("click") or {}).get("on") else "off")
            elif item == "Count-in":
                values.append("on" if (status.get("count_in") or {}).get("on") else "off")
            elif item == "Sync":
                values.append("MIDI" if status.get("sync") == "midi" else "int")
            elif item == "Tempo":
                t = m.editing_tempo if m.editing_tempo is not None else status.get("tempo")
                values.append(f"{float(t):.0f}{'<>' if m.editing_tempo is not None else ''}"
                              if isinstance(t, int | float) else "?")
            else:
                values.append("")
        return Menu(title, tuple(items), index, tuple(values))

    # ------------------------------------------------------------------ frames

    def toast(self, text: str) -> None:
        self.message = text
        self._message_until = self.clock() + TOAST_S

    def on_error(self, text: str) -> None:
        """An ``/ouro/error`` from the engine: shown as a toast (first words only)."""
        self.toast(text.split(":", 1)[-1].strip()[:40].upper() or "ERROR")

    def frame(self) -> View:
        """One frame: follow the status, move the LEDs, draw. Returns what was drawn."""
        with self._lock:
            now = self.clock()
            status = self.link.status if self.link.reachable else None
            if status is not None:
                self._follow(status, now)
            if self.message is not None and now >= self._message_until:
                self.message = None
            if self.set_led is not None:
                self._leds(status, now)
            view = View(status=status, selected=self.selected,
                        mode=self.keymap.modes[self.mode].label, menu=self.menu_view(),
                        alert=self._alert_now(status, now),
                        blink=int(now / BLINK_S) % 2 == 0, pairing_code=self.pairing,
                        message=self.message)
            self.frames += 1
        if self.screen is not None:
            self.screen.show(view)
        return view

    def _alert_now(self, status: Mapping[str, Any] | None, now: float) -> str | None:
        """The alert for the whole screen: the engine unreachable for as long as it is;
        an alert from the status (JACK lost, disk low, ...) for ALERT_S when it appears,
        after which the performance screen marks it."""
        if status is None:
            return "ENGINE UNREACHABLE"
        current = set(alerts_of(status))
        new = current - self._alerts_seen
        self._alerts_seen = current
        if new:
            self._alert = sorted(new)[0]
            self._alert_until = now + ALERT_S
        if self._alert is not None and (now >= self._alert_until
                                        or self._alert not in current):
            self._alert = None
        return self._alert

    def _follow(self, status: Mapping[str, Any], now: float) -> None:
        cells = status.get("cells") or []
        states = [[str(c.get("state")) for c in col] for col in cells]
        sel = status.get("selected")
        if (isinstance(sel, list) and len(sel) == 2 and now - self._selected_at > 0.5
                and tuple(sel) != self.selected):
            self.selected = (int(sel[0]), int(sel[1]))  # moved elsewhere (MIDI, a tablet)
        prev = self._prev_cells
        col, row = self.selected
        if (prev is not None and col < len(states) and row < len(states[col])
                and col < len(prev) and row < len(prev[col])
                and prev[col][row] == "recording" and states[col][row] in PLAYING):
            # the selected cell's recording closed: the next layer goes in the next empty row
            found = next_empty_row(cells, col, row)
            if found is not None:
                self.select(col, found)
        self._prev_cells = states

    def _leds(self, status: Mapping[str, Any] | None, now: float) -> None:
        assert self.set_led is not None
        cells = (status or {}).get("cells") or []
        states = {c.get("state") for col in cells for c in col}
        pending = {c.get("next_state") for col in cells for c in col}
        blink = int(now / BLINK_S) % 2 == 0
        rec = 1.0 if "recording" in states else (0.5 if "recording" in pending and blink
                                                 else 0.0)
        self.set_led("record", rec)
        self.set_led("play", 1.0 if states & set(PLAYING) else 0.0)
        self.set_led("tempo", 1.0 if status is not None and _on_beat(status, self.link, now)
                     else 0.0)


def _cell(status: Mapping[str, Any] | None, col: int, row: int) -> Mapping[str, Any]:
    try:
        cell = (status or {})["cells"][col][row]
        return cell if isinstance(cell, Mapping) else {}
    except (KeyError, IndexError, TypeError):
        return {}


def _on_beat(status: Mapping[str, Any], link: Sink, now: float) -> bool:
    """Whether the tempo LED is lit now: for TEMPO_FLASH_S from each beat, predicted from
    the status (its frame, the next beat's frame) and when it arrived."""
    try:
        rate = float(status["sample_rate"])
        period = 60.0 / float(status["tempo"])
        ahead = (int(status["next_beat_frame"]) - int(status["frame"])) / rate
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return False
    since = (now - (link.status_at + ahead)) % period
    return since < TEMPO_FLASH_S


def run_frames(pedal: Pedal, tick: Callable[[], None], fps: float,
               stop: threading.Event, seconds: float | None = None) -> None:
    """The frame loop: ``tick`` (the controls' holds) then a frame, ``fps`` times a second,
    until ``stop`` is set or ``seconds`` have passed."""
    period = 1.0 / fps
    start = time.monotonic()
    next_at = start
    while not stop.is_set():
        tick()
        pedal.frame()
        next_at += period
        now = time.monotonic()
        if seconds is not None and now - start >= seconds:
            return
        if next_at < now - period:  # fell behind (a stall): no burst of frames to catch up
            next_at = now
        stop.wait(max(0.0, next_at - now))

