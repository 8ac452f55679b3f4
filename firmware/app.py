"""``ouro pedal``: the pedal process, on the Pi or emulated on a desk.

On the Pi it opens the GPIO on the Raspberry Pi's own pin controller (the gpiochip that
:mod:`firmware.gpio` finds by its label) and the OLED named by the pin map, which the pedal
does without, saying so, while it is missing or failing (:class:`~firmware.display.
KeptDisplay`). With ``--headless-without-gpio``, a machine without that pin controller runs
the pedal as ``--emulate headless`` does.

With ``--emulate`` the same code runs on gpiozero's mock pins: in a terminal the keys move
the mock pins (see :data:`KEYS`) and the screen is drawn with block characters
(luma.emulator); ``window`` draws it in a pygame window whose keys are the switches
themselves (a key held down is a switch held down); ``headless`` draws on luma's dummy
device (for tests and CI).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from firmware.controls import Controls, mock_factory, pi_factory
from firmware.display import (
    Display,
    KeptDisplay,
    display_name,
    dummy_display,
    open_display,
    terminal_display,
    window_display,
    window_keys,
)
from firmware.errors import PedalError
from firmware.gpio import (
    PI_PIN_CONTROLLERS,
    GpioChip,
    board_revision,
    choose_pi_chip,
    describe_chips,
    list_gpiochips,
    read_device_tree,
)
from firmware.keymap import DEFAULT_KEYMAP, KeyMap, load_keymap
from firmware.link import EngineLink, engine_address
from firmware.pedal import Pedal, run_frames
from firmware.pinmap import PinMap, builtin_boards, builtin_pinmap, load_pinmap

__all__ = ["EMULATIONS", "KEYS", "key_legend", "load_pinmap_arg", "run_pedal"]

EMULATIONS = ("terminal", "window", "headless")
DEFAULT_FPS = 30.0
TAP_DOWN_S = 0.06  # how long an emulated tap keeps the switch down
# key -> (control, gesture) in the emulated pedal: the home row are the four footswitches
KEYS: dict[str, tuple[str, str]] = {
    "a": ("fs1", "tap"), "s": ("fs2", "tap"), "d": ("fs3", "tap"), "f": ("fs4", "tap"),
    "A": ("fs1", "hold"), "S": ("fs2", "hold"), "D": ("fs3", "hold"), "F": ("fs4", "hold"),
    "j": ("encoder", "ccw"), "k": ("encoder", "cw"), "l": ("encoder", "push"),
}
QUIT_KEYS = ("q", "\x1b")


def load_pinmap_arg(value: str | None) -> PinMap:
    """A pin map from ``--pinmap``: a built-in board name (``rpi4``) or a file."""
    if value is None:
        return builtin_pinmap("rpi4")
    if value in builtin_boards():
        return builtin_pinmap(value)
    return load_pinmap(value)


def key_legend(keymap: KeyMap, mode: str) -> list[str]:
    """The emulator's key map for ``mode``: which key does what."""
    lines = [f"{keymap.modes[mode].label} mode"]
    for key, (control, gesture) in KEYS.items():
        action = keymap.action(mode, control, gesture)
        if action is not None:
            lines.append(f"{key:<3} {control.upper()} {gesture}: {action}")
        double = keymap.action(mode, control, "double") if gesture == "tap" else None
        if double is not None:
            lines.append(f"{key * 2:<3} {control.upper()} double: {double}")
    lines.append("(capitals hold a switch down; a key twice quickly is a double)  q: quit")
    return lines


class KeyboardPedal:
    """Keys in a terminal moving the mock pins of ``controls`` (a thread)."""

    def __init__(self, controls: Controls, stream: TextIO, hold_time_s: float,
                 stop: threading.Event):
        self.controls = controls
        self.stream = stream
        self.hold_time_s = hold_time_s
        self.stop = stop
        self._thread = threading.Thread(target=self._run, name="ouro-pedal-keys", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        fd = self.stream.fileno()
        while not self.stop.is_set():
            try:
                ch = os.read(fd, 1).decode(errors="replace")
            except OSError:
                return
            if not ch:  # end of input
                return
            if ch in QUIT_KEYS:
                self.stop.set()
                return
            self.press(ch)

    def press(self, ch: str) -> None:
        hit = KEYS.get(ch)
        if hit is None:
            return
        control, gesture = hit
        c = self.controls
        if gesture in ("cw", "ccw"):
            if c.encoder is not None:
                c.turn(1 if gesture == "cw" else -1)
            return
        if control not in c.buttons:
            return
        down = self.hold_time_s + 0.15 if gesture == "hold" else TAP_DOWN_S
        c.drive(control, True)
        threading.Timer(down, c.drive, (control, False)).start()


class WindowPedal:
    """Keys in the emulator's window moving the mock pins of ``controls``: the same keys as
    in a terminal, but a key is down exactly as long as it is held, so holds and doubles
    are played, not simulated. Polled from the frame loop (pygame wants its events read
    by the thread that draws)."""

    TITLE = "Ouroboros pedal: a s d f switches (hold = hold), j k encoder, l push, q quit"

    def __init__(self, controls: Controls, stop: threading.Event):
        self.controls = controls
        self.stop = stop
        self._titled = False

    def poll(self) -> None:
        events = window_keys(None if self._titled else self.TITLE)
        self._titled = True
        c = self.controls
        for key, down in events:
            if key in ("q", "escape", "quit"):
                self.stop.set()
                continue
            hit = KEYS.get(key)
            if hit is None:
                continue
            control, gesture = hit
            if gesture in ("cw", "ccw"):
                if down and c.encoder is not None:
                    c.turn(1 if gesture == "cw" else -1)
            elif control in c.buttons:
                c.drive(control, down)


@contextlib.contextmanager
def cbreak(stream: TextIO) -> Iterator[None]:
    """Keys arrive one at a time, unechoed; the terminal is restored afterwards."""
    fd = stream.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run_pedal(*, engine: str | None = None, data_dir: Path | None = None,
              pinmap: str | None = None, keymap: str | None = None,
              emulate: str | None = None, fps: float = DEFAULT_FPS,
              seconds: float | None = None, out: Callable[[str], None] = print,
              headless_without_gpio: bool = False, pin_factory: Any = None,
              open_screen: Callable[[], Any] | None = None,
              gpiochips: list[GpioChip] | None = None,
              device_tree: Path = Path("/proc/device-tree")) -> int:
    """Run the pedal until SIGINT/SIGTERM (or ``seconds``); returns the exit code.

    Without ``emulate`` the pins are the Raspberry Pi's (see :func:`_choose_pins`: among
    ``gpiochips``, by default those of ``/dev``, on the board ``device_tree`` names), or
    ``pin_factory``'s when one is given (tests); ``open_screen`` replaces the OLED's opener
    (default: :func:`~firmware.display.open_display` on the pin map's display).
    """
    try:
        pm = load_pinmap_arg(pinmap)
        km = load_keymap(keymap or DEFAULT_KEYMAP)
        km.check_controls([s.name for s in pm.switches], pm.encoder is not None)
        host, port, port_file = engine_address(engine, data_dir)
    except (PedalError, ValueError) as exc:
        out(f"ouro pedal: error: {exc}")
        return 2
    make_factory: Callable[[], Any] | None = None  # None: gpiozero's own choice
    if emulate is not None:
        make_factory = mock_factory
    elif pin_factory is None:
        choice = _choose_pins(headless_without_gpio, gpiochips, device_tree, out)
        if choice is None:
            return 2
        emulate, make_factory = choice
    stop = threading.Event()
    link = EngineLink(host, port, port_file=port_file)
    pedal = Pedal(link, km, data_dir=data_dir)
    link.on_error = pedal.on_error
    factory: Any = None  # the pin factory made here (closed here)
    controls: Controls | None = None
    keyboard = None
    terminal = emulate == "terminal" and sys.stdin.isatty()
    previous: dict[int, Any] = {}

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    def close_pins() -> None:
        if controls is not None:
            controls.close()
        if factory is not None:
            factory.close()

    try:
        if make_factory is not None:
            factory = make_factory()
        controls = Controls(pm, pedal.on_gesture, hold_time_s=km.hold_time_s,
                            double_tap_s=km.double_tap_s,
                            pin_factory=factory if pin_factory is None else pin_factory)
        pedal.set_led = controls.set_led
        if emulate is None:
            spec = pm.display
            kept = KeptDisplay(open_screen or (lambda: open_display(spec)),
                               lambda line: out(f"ouro pedal: {line}"),
                               name=display_name(spec))
            kept.open()  # a wrong setting stops here; a missing display does not
            pedal.screen = kept
        elif emulate == "terminal":
            pedal.screen = Display(terminal_display() if terminal else dummy_display())
        elif emulate == "window":
            pedal.screen = Display(window_display())
        else:
            pedal.screen = Display(dummy_display())
    except (PedalError, ValueError) as exc:
        close_pins()
        out(f"ouro pedal: error: {exc}")
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    link.start()
    where = f"{host}:{port}" + (f" (from {port_file})" if port_file else "")
    if not terminal:
        out(f"ouro pedal: {pm.board} pin map {pm.path.name}, gestures {km.path}; "
            f"engine at {where}; {fps:g} frames a second"
            + (f"; emulated ({emulate})" if emulate else ""))
    try:
        if terminal:
            with cbreak(sys.stdin):
                shown = [pedal.mode]
                _legend(km, pedal.mode)

                def tick() -> None:
                    controls.tick()
                    if pedal.mode != shown[0]:  # the key map follows the mode
                        shown[0] = pedal.mode
                        _legend(km, pedal.mode)

                keyboard = KeyboardPedal(controls, sys.stdin, km.hold_time_s, stop)
                keyboard.start()
                run_frames(pedal, tick, fps, stop, seconds)
        elif emulate == "window":
            window = WindowPedal(controls, stop)

            def poll_then_tick() -> None:
                window.poll()
                controls.tick()

            with contextlib.suppress(SystemExit):  # luma exits on Esc held while drawing
                run_frames(pedal, poll_then_tick, fps, stop, seconds)
        else:
            run_frames(pedal, controls.tick, fps, stop, seconds)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        close_pins()
        link.close()
    if not terminal:
        out(f"ouro pedal: stopped after {pedal.frames} frames, {pedal.gestures} gestures; "
            f"{link.statuses} status pushes, {link.reconnects} reconnects")
    return 0


def _choose_pins(headless_without_gpio: bool, gpiochips: list[GpioChip] | None,
                 device_tree: Path, out: Callable[[str], None]
                 ) -> tuple[str | None, Callable[[], Any] | None] | None:
    """Where the pins of a pedal that is not emulated come from: ``(emulate, make the pin
    factory)``, or None when the pedal cannot run (said on ``out``).

    The Raspberry Pi's pin controller, the gpiochip with its label among ``gpiochips`` (by
    default those of ``/dev``), on the board that ``device_tree`` names. Where there is
    none, the pedal stops, or with ``headless_without_gpio`` runs as ``--emulate
    headless``. GPIOZERO_PIN_FACTORY=mock gives PWM-capable mock pins (the real OLED with
    them: the Pi's path on a desk); any other factory it names but lgpio is left to
    gpiozero.
    """
    chosen = os.environ.get("GPIOZERO_PIN_FACTORY", "").lower()
    if chosen == "mock":
        out("ouro pedal: GPIO: mock pins (GPIOZERO_PIN_FACTORY=mock)")
        return None, mock_factory
    if chosen and chosen != "lgpio":
        out(f"ouro pedal: GPIO: gpiozero's {chosen} pin factory (GPIOZERO_PIN_FACTORY), no "
            f"gpiochip search")
        return None, None
    chips = list_gpiochips() if gpiochips is None else gpiochips
    chip = choose_pi_chip(chips)
    found = describe_chips(chips)
    if chip is None and not headless_without_gpio:
        out(f"ouro pedal: error: no Raspberry Pi GPIO pin controller (a gpiochip labelled "
            f"{', '.join(PI_PIN_CONTROLLERS)}) here ({found}); on a desk, run 'ouro pedal "
            f"--emulate', or add --headless-without-gpio to run on mock pins where there is "
            f"none")
        return None
    if chip is None:
        out(f"ouro pedal: no Raspberry Pi GPIO here ({found}): headless (mock pins)")
        return "headless", mock_factory
    tree = read_device_tree(device_tree)
    out(f"ouro pedal: GPIO {chip.path} ({chip.label}, {chip.lines} lines), board "
        f"{tree.board}")
    number, revision = chip.number, board_revision(tree.compatible)
    return None, lambda: pi_factory(number, revision)


def _legend(keymap: KeyMap, mode: str) -> None:
    """The key map under the emulated screen (which takes the first 32 rows)."""
    sys.stdout.write("\x1b[34;1H\x1b[J" + "\r\n".join(key_legend(keymap, mode)) + "\r\n")
    sys.stdout.flush()

