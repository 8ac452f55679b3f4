"""The pedal against a real engine: gpiozero's mock pins in, a real ``ouro engine`` on
``jackd -d dummy`` receiving the commands, the status coming back by subscription; the
engine killed and restarted under the pedal.

The switches' gestures are timed on a clock the test moves (:class:`SwitchClock`): what a
press is (a tap, a double, a hold) is tested without clocks in tests/firmware/test_gestures.py,
and here it must not depend on how promptly a busy machine runs the test's thread (a tap
held down 0.6 s by a stalled thread is a hold). Everything else runs in real time, and the
test waits for what it expects to see rather than sleeping a fixed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.controls import Controls, mock_factory
from firmware.display import Display, dummy_display
from firmware.keymap import default_keymap
from firmware.link import EngineLink
from firmware.pedal import Pedal, run_frames
from firmware.pinmap import builtin_pinmap
from rtcore.client import EngineProcess
from rtcore.host import SignalClient
from rtcore.jackd import JackServer, unique_server_name
from tests.rtcore.test_live import wait_until

pytestmark = pytest.mark.jack


class SwitchClock:
    """The controls' clock, moved by the test alone (read by the frame loop's thread)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_for(check: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    return wait_until(check, timeout_s, describe=lambda: what or None)


@pytest.fixture(scope="module")
def server() -> Iterator[JackServer]:
    with JackServer(unique_server_name("test-pedal"), period_frames=256) as srv:
        yield srv


class PedalRig:
    """Engine process, player on its inputs, and the pedal (mock pins, dummy OLED) with its
    frame loop running in a thread."""

    def __init__(self, server: JackServer, data: Path):
        self.server = server
        self.data = data
        self.engine = EngineProcess(server.name, data).start()
        self.player = SignalClient(server.name, "player", outputs=2)
        self.connect_player()
        km = default_keymap()
        self.link = EngineLink("127.0.0.1", self.engine.osc_port, timeout_s=0.6,
                               retry_s=0.2, port_file=data / "engine.json").start()
        self.display = Display(dummy_display())
        self.pedal = Pedal(self.link, km, screen=self.display, data_dir=data)
        self.link.on_error = self.pedal.on_error
        self.clock = SwitchClock()
        self.controls = Controls(builtin_pinmap("rpi4"), self.pedal.on_gesture,
                                 hold_time_s=km.hold_time_s, double_tap_s=km.double_tap_s,
                                 pin_factory=mock_factory(), clock=self.clock)
        self.pedal.set_led = self.controls.set_led
        self.stop = threading.Event()
        self.frames = threading.Thread(target=run_frames, args=(
            self.pedal, self.controls.tick, 30.0, self.stop), daemon=True)
        self.frames.start()
        assert self.link.wait_reachable(10)

    def connect_player(self) -> None:
        for i in (1, 2):
            self.player.connect(f"player:out_{i}", f"ouroboros:in_{i}")

    def tap(self, switch: str, down_s: float = 0.05, then_s: float = 0.35) -> None:
        """Press (the tap acts at once, in this thread), release ``down_s`` later on the
        switches' clock, which then moves on ``then_s``: by default past the double-tap
        window, so that the next press is a new tap."""
        self.controls.drive(switch, True)
        self.clock.advance(down_s)
        self.controls.drive(switch, False)
        self.clock.advance(then_s)

    def hold(self, switch: str) -> None:
        """A press held past the hold time: the hold comes from the frame loop's thread, or
        from the release if that came first; either way it has acted when this returns."""
        gestures = self.pedal.gestures
        self.tap(switch, down_s=0.8)
        wait_for(lambda: self.pedal.gestures >= gestures + 2, what=f"{switch}'s hold")

    def select(self, c: int, r: int) -> None:
        """Select a cell from the pedal and wait for the engine to show it: until then the
        pedal would take the engine's older selection back after half a second."""
        self.pedal.select(c, r)
        wait_for(lambda: self.engine_selected() == (c, r), what=f"the selection of {(c, r)}")

    def cell(self, c: int, r: int) -> dict[str, Any]:
        status = self.link.status
        assert status is not None
        cell = status["cells"][c][r]
        assert isinstance(cell, dict)
        return cell

    def engine_selected(self) -> tuple[int, int] | None:
        st = self.link.status
        return tuple(st["selected"]) if st else None  # type: ignore[return-value]

    def close(self) -> None:
        self.stop.set()
        self.frames.join(5)
        self.controls.close()
        self.link.close()
        self.player.close()
        self.engine.stop()


def test_four_switches_run_a_session_on_the_real_engine(server: JackServer,
                                                        tmp_path: Path) -> None:
    rig = PedalRig(server, tmp_path / "data")
    try:
        # FS1 tap: record (0, 0); the REC LED lights while it records
        rig.tap("fs1")
        wait_for(lambda: rig.cell(0, 0)["state"] == "recording", what="recording")
        wait_for(lambda: rig.controls.led_value("record") == 1.0, what="the REC LED")
        time.sleep(1.2)
        rig.tap("fs1")  # closes the first recording: it plays
        wait_for(lambda: rig.cell(0, 0)["state"] == "playing", what="playing")
        # the selection moved to the next empty row, in the pedal and in the engine
        wait_for(lambda: rig.pedal.selected == (0, 1), what="selection to row 1")
        wait_for(lambda: rig.engine_selected() == (0, 1), what="the engine's selection")
        wait_for(lambda: rig.controls.led_value("play") == 1.0, what="the PLAY LED")
        # a layer: FS1 again records row 1 for the column's length, then it plays
        rig.tap("fs1")
        wait_for(lambda: rig.cell(0, 1)["state"] == "recording", what="layer recording")
        wait_for(lambda: rig.cell(0, 1)["state"] == "playing", 10, "layer playing")
        wait_for(lambda: rig.pedal.selected == (0, 2), what="selection to row 2")
        # FS4 tap: next row; FS4 double: next column (its first empty row)
        rig.tap("fs4")
        wait_for(lambda: rig.engine_selected() == (0, 3), what="next row")
        rig.tap("fs4", then_s=0.05)
        rig.tap("fs4")  # the second press inside the window: a double
        wait_for(lambda: rig.engine_selected() == (1, 0), what="next column")
        # back to (0, 1) with the encoder... there is none on rpi4: walk with FS4
        rig.select(0, 1)
        # FS3 tap: undo on (0, 1) takes the layer away; FS3 hold: clear (0, 0)
        rig.tap("fs3")
        wait_for(lambda: rig.cell(0, 1)["state"] == "empty", what="undo")
        rig.select(0, 0)
        # FS2 tap toggles (0, 0): stop, then play again
        rig.tap("fs2")
        wait_for(lambda: rig.cell(0, 0)["state"] == "idle", what="stopped")
        rig.tap("fs2")
        wait_for(lambda: rig.cell(0, 0)["state"] == "playing", what="playing again")
        # FS2 hold: stop everything
        rig.hold("fs2")
        wait_for(lambda: rig.cell(0, 0)["state"] == "idle", what="stop all")
        # FS4 hold: EDIT mode; FS1 hold there: click on
        rig.hold("fs4")
        assert rig.pedal.mode == "edit"
        rig.hold("fs1")
        wait_for(lambda: rig.link.status and rig.link.status["click"]["on"], what="click on")
        # every frame went to the OLED device, and the engine refused nothing
        assert rig.display.frames_shown > 10
        assert not [e for e in rig.link.errors if "select" in e], list(rig.link.errors)
    finally:
        rig.close()


def test_the_pedal_survives_an_engine_restart(server: JackServer, tmp_path: Path) -> None:
    rig = PedalRig(server, tmp_path / "data")
    try:
        assert rig.pedal.frame().alert is None
        rig.engine.stop()  # the engine goes away: SIGTERM, it saves and exits
        wait_for(lambda: rig.pedal.frame().alert == "ENGINE UNREACHABLE", 5, "the alert")
        rig.tap("fs1")  # a press meanwhile is lost, not fatal
        # it comes back (on another OSC port): the pedal finds it from engine.json
        rig.engine = EngineProcess(server.name, rig.data).start()
        rig.connect_player()
        wait_for(lambda: rig.link.reachable, 10, "reconnection")
        wait_for(lambda: rig.pedal.frame().alert is None, 5, "the alert to clear")
        assert rig.link.reconnects >= 1
        rig.tap("fs1")
        wait_for(lambda: rig.cell(0, 0)["state"] == "recording", what="recording after")
    finally:
        rig.close()


def test_the_encoder_and_the_menu_set_click_sync_tempo_and_show_the_pairing_code(
        server: JackServer, tmp_path: Path) -> None:
    rig = PedalRig(server, tmp_path / "data")
    try:
        c = rig.controls
        assert c.encoder is not None  # the rpi4 map has one
        c.turn(2)  # two detents clockwise: two rows down
        wait_for(lambda: rig.engine_selected() == (0, 2), what="the encoder's rows")
        c.turn(-1)
        wait_for(lambda: rig.engine_selected() == (0, 1), what="back one row")
        rig.tap("encoder")  # push: the menu
        view = rig.pedal.frame()
        assert view.menu is not None and view.menu.items[0] == "Click"
        rig.tap("fs3")  # enter on Click: on
        wait_for(lambda: rig.link.status and rig.link.status["click"]["on"], what="click on")
        rig.tap("fs2")
        rig.tap("fs2")  # down to Sync... then Sync: MIDI
        assert rig.pedal.frame().menu.items[rig.pedal.menu.stack[-1][2]] == "Sync"  # type: ignore[union-attr]
        rig.tap("fs3")
        wait_for(lambda: rig.link.status and rig.link.status["sync"] == "midi", what="sync")
        rig.tap("fs3")  # and back to internal, so the tempo can be set
        wait_for(lambda: rig.link.status and rig.link.status["sync"] == "internal",
                 what="sync internal")
        c.turn(1)  # the encoder moves the menu too: Tempo
        rig.tap("fs3")  # open the tempo, three up (FS1), enter
        for _ in range(3):
            rig.tap("fs1")
        assert rig.pedal.menu_view().values[3] == "123<>"  # type: ignore[union-attr]
        rig.tap("fs3")
        wait_for(lambda: rig.link.status and rig.link.status["tempo"] == 123.0, what="tempo")
        for _ in range(2):
            c.turn(1)  # Sessions, Pairing
        rig.tap("encoder")  # push = enter: the pairing code, kept in the data directory
        code = rig.pedal.frame().pairing_code
        assert code is not None and len(code) == 6 and code.isdigit()
        assert code in (rig.data / "pairing.json").read_text()
        rig.tap("fs4")  # back: the code goes; hold FS4: the menu closes
        assert rig.pedal.frame().pairing_code is None
        rig.hold("fs4")
        assert rig.pedal.frame().menu is None
    finally:
        rig.close()
