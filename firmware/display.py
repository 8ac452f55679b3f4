"""The OLED as a luma device: the one module of the pedal that imports luma.

:func:`open_display` opens the real SSD1306 or SH1106 on I2C or SPI from a display spec
(``firmware.pinmap.DisplaySpec`` or anything with the same attributes) and turns luma's and
the bus drivers' errors into :class:`DisplayError`\\s that name the bus and the address.
The stand-ins share luma's device API: :func:`dummy_display` (keeps the last image, for
tests and benchmarks), :func:`terminal_display` (luma.emulator's ``asciiblock``: half-block
characters in the terminal) and :func:`window_display` (luma.emulator's pygame window).
:class:`Display` draws :class:`~firmware.screen.View`\\s on any of them and skips frames
that did not change; :class:`KeptDisplay` holds the real OLED for a pedal that must go on
without it while it is missing or failing (a loose cable must not stop the footswitches).

>>> from firmware.screen import View
>>> display = Display(dummy_display())
>>> display.show(View(status=None)), display.show(View(status=None))
(True, False)
>>> display.frames_shown, display.frames_skipped
(1, 1)

:func:`decode_asciiblock` reads back what ``asciiblock`` printed, as ``tmux capture-pane
-p -e`` shows it, into an image, so a test can check the terminal pedal end to end. The
device prints the same character (``▄``) everywhere and carries the pixels in its colours
(background: the upper pixel, foreground: the lower one, xterm-256 indices), so only a
capture *with* escape sequences can be decoded; and it is pixel-exact only when the
terminal is exactly as many columns wide as the display (luma scales the image to the
terminal's width with LANCZOS, which blurs at any other width).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import luma.core.error
from luma.core.device import dummy
from PIL import Image

from firmware.errors import DisplayConfigError, DisplayError
from firmware.screen import View, render

__all__ = [
    "Display",
    "DisplayConfigError",
    "DisplayError",
    "DisplaySpecLike",
    "KeptDisplay",
    "LumaDevice",
    "decode_asciiblock",
    "display_name",
    "dummy_display",
    "open_display",
    "terminal_display",
    "window_display",
    "window_keys",
]

DRIVERS = ("ssd1306", "sh1106")
NOP = 0xE3  # the no-operation command of the SSD1306 and the SH1106
BUSES = ("i2c", "spi")


class DisplaySpecLike(Protocol):
    """What :func:`open_display` reads from a spec (``firmware.pinmap.DisplaySpec`` has
    exactly these fields). ``rotate`` is luma's: 0-3 quarter turns (90, 180 and 270 are
    taken as degrees). Only the fields of the spec's bus need to be set."""

    @property
    def driver(self) -> str: ...
    @property
    def bus(self) -> str: ...
    @property
    def i2c_port(self) -> int | None: ...
    @property
    def i2c_address(self) -> int | None: ...
    @property
    def spi_port(self) -> int | None: ...
    @property
    def spi_device(self) -> int | None: ...
    @property
    def dc(self) -> int | None: ...
    @property
    def reset(self) -> int | None: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def rotate(self) -> int: ...


class LumaDevice(Protocol):
    """The part of a luma device that :class:`Display` uses."""

    @property
    def size(self) -> tuple[int, int]: ...
    def display(self, image: Image.Image) -> None: ...


def display_name(spec: DisplaySpecLike) -> str:
    """The display as messages name it: ``ssd1306 on I2C bus 1 at address 0x3C``."""
    if spec.bus == "i2c":
        try:
            addr = f"0x{int(str(spec.i2c_address), 0):02X}"
        except ValueError:
            addr = repr(spec.i2c_address)
        return f"{spec.driver} on I2C bus {spec.i2c_port} at address {addr}"
    return (f"{spec.driver} on SPI {spec.spi_port}.{spec.spi_device} "
            f"(DC GPIO{spec.dc}, reset GPIO{spec.reset})")


def _rotation(spec: DisplaySpecLike) -> int:
    rotate = spec.rotate
    if rotate in (90, 180, 270):
        return int(rotate) // 90
    if rotate not in (0, 1, 2, 3):
        raise DisplayConfigError(f"display rotate {rotate!r}: use 0-3 quarter turns "
                                 f"(or 0, 90, 180, 270 degrees)")
    return int(rotate)


def open_display(spec: DisplaySpecLike, *, serial_interface: Any = None) -> Any:
    """Open the OLED that ``spec`` describes and return its luma device.

    ``serial_interface`` replaces the bus for tests (e.g. luma's ``noop()``: the driver is
    built and sends its start-up commands nowhere).

    Raises :class:`DisplayConfigError` for a spec no driver supports, and
    :class:`DisplayError` when the bus or the display is not there, not accessible, or
    its driver module is missing; the message says which bus and address.
    """
    if spec.driver not in DRIVERS:
        raise DisplayConfigError(f"display driver {spec.driver!r}: use one of "
                                 f"{', '.join(DRIVERS)}")
    if spec.bus not in BUSES:
        raise DisplayConfigError(f"display bus {spec.bus!r}: use one of {', '.join(BUSES)}")
    rotate = _rotation(spec)
    needed = ("i2c_port", "i2c_address") if spec.bus == "i2c" else ("spi_port", "spi_device")
    for name in needed:
        if getattr(spec, name) is None:
            raise DisplayConfigError(f"display on {spec.bus}: {name} is not set")
    where = display_name(spec)
    try:
        from luma.oled.device import sh1106, ssd1306

        serial = serial_interface
        opened = None
        if serial is None:
            serial = opened = _open_bus(spec)
        driver = ssd1306 if spec.driver == "ssd1306" else sh1106
        try:
            # luma keeps every device it builds (an atexit hook), also one whose start-up
            # failed: ~300 KB each, which a display retried every 10 s (KeptDisplay) must
            # not cost. On I2C a display that does not answer is found before that, by a
            # NOP (0xE3 on both controllers); SPI has no acknowledgement to wait for.
            if spec.bus == "i2c":
                serial.command(NOP)
            return driver(serial, width=spec.width, height=spec.height, rotate=rotate)
        except BaseException:
            if opened is not None:  # the bus's file, and an SPI display's GPIO lines
                with contextlib.suppress(Exception):
                    opened.cleanup()
            raise
    except (luma.core.error.DeviceDisplayModeError, luma.core.error.DeviceAddressError,
            AssertionError) as exc:
        raise DisplayConfigError(f"{where}: {exc or 'unsupported setting'} (size "
                                 f"{spec.width}x{spec.height})") from exc
    except luma.core.error.DevicePermissionError as exc:
        raise DisplayError(f"{where}: permission denied ({exc}); the pedal's user needs "
                           f"the i2c/spi and gpio groups") from exc
    except luma.core.error.DeviceNotFoundError as exc:
        hint = ("is I2C enabled (dtparam=i2c_arm=on) and the display wired to it? "
                "`i2cdetect -y PORT` lists what answers" if spec.bus == "i2c" else
                "is SPI enabled (dtparam=spi=on) and the display wired to it?")
        raise DisplayError(f"{where}: not found ({exc}); {hint}") from exc
    except luma.core.error.Error as exc:  # UnsupportedPlatform and the like
        raise DisplayError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except ImportError as exc:
        raise DisplayError(f"{where}: the driver module {exc.name or exc} is not installed "
                           f"(smbus2 for I2C; spidev and RPi.GPIO or rpi-lgpio for SPI)"
                           ) from exc
    except OSError as exc:
        raise DisplayError(f"{where}: {exc}") from exc


def _open_bus(spec: DisplaySpecLike) -> Any:
    from luma.core.interface.serial import i2c, spi

    if spec.bus == "i2c":
        return i2c(port=spec.i2c_port, address=spec.i2c_address)
    return spi(port=spec.spi_port, device=spec.spi_device, gpio_DC=spec.dc,
               gpio_RST=spec.reset)


def dummy_display(width: int = 128, height: int = 64, rotate: int = 0) -> Any:
    """luma's ``dummy`` device in mode ``"1"``: keeps a copy of the last image shown in
    ``.image``; for tests and ``ouro bench pedal``."""
    return dummy(width=width, height=height, rotate=rotate, mode="1")


def _quiet_pygame() -> None:
    # luma.emulator imports pygame, which greets on stdout: that would land in the middle
    # of the terminal display
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def terminal_display(width: int = 128, height: int = 64, rotate: int = 0) -> Any:
    """luma.emulator's ``asciiblock`` device: each pair of pixel rows becomes a row of
    ``▄`` characters coloured with xterm-256 colours, written to stdout, which must be a
    terminal (it asks it for its size on every frame and moves the cursor home with an
    escape sequence). The image is scaled to the terminal's width, so a terminal exactly
    ``width`` columns wide and at least ``height / 2`` rows high shows it pixel for pixel
    (``tmux new-session -x 128 -y 33``). Nothing else may write to stdout meanwhile: log
    to stderr.

    Raises :class:`DisplayError` when stdout is not a terminal or pygame (which
    luma.emulator needs even here) is missing.
    """
    if not sys.stdout.isatty():
        raise DisplayError("terminal display: stdout is not a terminal (asciiblock reads "
                           "the terminal's size and draws with escape sequences)")
    _quiet_pygame()
    try:
        from luma.emulator.device import asciiblock

        # transform "none": no scale2x before luma fits the image to the terminal
        return asciiblock(width=width, height=height, rotate=rotate, mode="1",
                          transform="none", scale=1)
    except (ImportError, RuntimeError) as exc:
        raise DisplayError(f"terminal display: {exc} (luma.emulator needs pygame, and "
                           f"curses and termios from a POSIX Python)") from exc


WINDOW_CLASS = "ouroboros-pedal"
"""The X11 class of the emulator's window."""


def window_display(width: int = 128, height: int = 64, rotate: int = 0,
                   scale: int = 4) -> Any:
    """luma.emulator's ``pygame`` device: a window showing the display ``scale`` times
    larger with square pixels. Pressing Esc or closing the window makes luma call
    ``sys.exit()``.

    Raises :class:`DisplayError` when pygame is missing or has no video device.
    """
    _quiet_pygame()
    os.environ.setdefault("SDL_VIDEO_X11_WMCLASS", WINDOW_CLASS)  # for desktops and tests
    try:
        from luma.emulator.device import pygame

        return pygame(width=width, height=height, rotate=rotate, mode="1",
                      transform="identity", scale=scale)
    except Exception as exc:  # pygame.error has no import-free name to catch
        raise DisplayError(f"window display: {type(exc).__name__}: {exc} (needs pygame "
                           f"and a desktop: DISPLAY or WAYLAND_DISPLAY)") from exc


def window_keys(title: str | None = None) -> list[tuple[str, bool]]:
    """The keys pressed (``True``) and released (``False``) in the :func:`window_display`
    window since the last call, by pygame's key names (``"a"``, ``"escape"``); the window
    being closed comes as ``("quit", True)``. ``title``, when given, becomes the window's
    caption. Call it from the thread that draws the window."""
    import pygame

    if title is not None:
        pygame.display.set_caption(title)
    events = []
    for event in pygame.event.get((pygame.KEYDOWN, pygame.KEYUP, pygame.QUIT)):
        if event.type == pygame.QUIT:
            events.append(("quit", True))
        else:
            events.append((pygame.key.name(event.key), event.type == pygame.KEYDOWN))
    return events


class Display:
    """Draws views on a luma device, pushing a frame only when it differs from the last
    one pushed (an I2C frame is ~1 KB over a 400 kHz bus: ~25 ms that the pedal should not
    spend on a frame that shows nothing new).

    ``frames_shown`` and ``frames_skipped`` count the two outcomes of :meth:`show`;
    ``last_image`` is the frame the display shows. Errors from the device while pushing
    become :class:`DisplayError` whose message starts with ``name`` (and the frame counts
    as not shown, so the next :meth:`show` tries again).
    """

    def __init__(self, device: LumaDevice,
                 renderer: Callable[[View], Image.Image] = render, *,
                 name: str = "display") -> None:
        if tuple(device.size) != (128, 64):
            raise DisplayConfigError(f"{name}: {device.size[0]}x{device.size[1]} pixels, but "
                                     f"the screens are drawn for 128x64")
        self.device = device
        self.name = name
        self._render = renderer
        self._last: bytes | None = None
        self.last_image: Image.Image | None = None
        self.frames_shown = 0
        self.frames_skipped = 0

    def show(self, view: View) -> bool:
        """Render ``view`` and push it if it changed; returns whether it was pushed."""
        image = self._render(view)
        data = image.tobytes()
        if data == self._last:
            self.frames_skipped += 1
            return False
        try:
            self.device.display(image)
        except (luma.core.error.Error, OSError) as exc:
            self._last = None
            raise DisplayError(f"{self.name}: frame not shown: {type(exc).__name__}: {exc}"
                               ) from exc
        self._last = data
        self.last_image = image
        self.frames_shown += 1
        return True

    def invalidate(self) -> None:
        """Forget the last frame, so the next :meth:`show` pushes even an unchanged one
        (after the display was reset or power-cycled)."""
        self._last = None


RETRY_S = 10.0


class KeptDisplay:
    """The OLED for as long as the pedal runs, there or not: a :class:`~firmware.pedal.
    Screen` whose :meth:`show` never raises for a display that is missing or failing.

    ``opener`` returns a new luma device (``lambda: open_display(spec)``); it is called by
    :meth:`open` and then, while there is no display, by :meth:`show` once every
    ``retry_s`` seconds of ``clock`` (never more often: a failing I2C open costs
    milliseconds that the frame loop, and the switches' holds it finds, must not lose every
    frame). A frame that fails drops the device, and the next attempt opens it anew, which
    also starts a controller that lost its power with a loose cable.

    Each outage is said once through ``say``, and its end too (``display: back``); the
    frame after it is pushed whole. A :class:`DisplayConfigError` from the first
    :meth:`open` is raised (a setting that no retry can fix); one that only appears later,
    when a display answers at last, is said and the display left alone.

    >>> said = []
    >>> kept = KeptDisplay(dummy_display, said.append)
    >>> kept.open(), kept.show(View(status=None)), said
    (True, True, [])
    """

    def __init__(self, opener: Callable[[], LumaDevice], say: Callable[[str], None], *,
                 name: str = "display", retry_s: float = RETRY_S,
                 clock: Callable[[], float] = time.monotonic,
                 renderer: Callable[[View], Image.Image] = render) -> None:
        self._opener = opener
        self._say = say
        self.name = name
        self.retry_s = retry_s
        self._clock = clock
        self._render = renderer
        self.display: Display | None = None
        self.outages = 0  # how many times the display went (or was not there at first)
        self.attempts = 0  # calls of the opener
        self._retry_at = 0.0
        self._down = False  # an outage was said and has not ended
        self._given_up = False

    @property
    def shown(self) -> bool:
        """Whether a display is there to draw on."""
        return self.display is not None

    def open(self) -> bool:
        """Open the display now; False (said once) when it cannot be. Raises
        :class:`DisplayConfigError` for a spec no driver can do."""
        self.attempts += 1
        try:
            device = self._opener()
            display = Display(device, self._render, name=self.name)
        except DisplayError as exc:
            self._lost(exc)
            return False
        display.invalidate()  # whatever the controller shows, the next frame is pushed
        self.display = display
        if self._down:
            self._down = False
            self._say("display: back")
        return True

    def show(self, view: View) -> bool:
        """Draw ``view`` if there is a display (opening it again when it is time);
        returns whether a frame was pushed."""
        if self.display is None:
            if self._given_up or self._clock() < self._retry_at:
                return False
            try:
                if not self.open():
                    return False
            except DisplayConfigError as exc:
                self._given_up = True
                self._say(f"display: {exc}; running without a screen (a setting to "
                          f"change: not trying again)")
                return False
            assert self.display is not None
        try:
            return self.display.show(view)
        except DisplayError as exc:
            self._release(self.display.device)
            self.display = None
            self._lost(exc)
            return False

    def _lost(self, exc: DisplayError) -> None:
        self._retry_at = self._clock() + self.retry_s
        if not self._down:
            self._down = True
            self.outages += 1
            self._say(f"display: {exc}; running without a screen, trying again every "
                      f"{self.retry_s:g} s")

    @staticmethod
    def _release(device: Any) -> None:
        """Close a dropped device's bus (its file, an SPI display's GPIO lines) so the next
        open can have them; without switching the display off, which would only fail."""
        with contextlib.suppress(Exception):
            device.persist = True
            device.cleanup()


# ------------------------------------------------------------------- reading asciiblock

_SGR = re.compile(r"\x1b\[([0-9;:]*)m")
_ESC = re.compile(r"\x1b\[[0-9;:?]*[A-Za-ln-z]")  # other CSI sequences (cursor moves)
_BASIC = [(0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205),
          (0, 205, 205), (229, 229, 229), (127, 127, 127), (255, 0, 0), (0, 255, 0),
          (255, 255, 0), (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255)]
_CUBE = (0x00, 0x5F, 0x87, 0xAF, 0xD7, 0xFF)


def _xterm_rgb(index: int) -> tuple[int, int, int]:
    if index < 16:
        return _BASIC[index]
    if index < 232:
        i = index - 16
        return _CUBE[i // 36], _CUBE[i // 6 % 6], _CUBE[i % 6]
    level = 8 + 10 * (index - 232)
    return level, level, level


def _lit(rgb: tuple[int, int, int] | None) -> bool:
    if rgb is None:
        return False
    r, g, b = rgb
    return 299 * r + 587 * g + 114 * b >= 128_000


def _apply_sgr(params: str, fg: Any, bg: Any) -> tuple[Any, Any]:
    codes = [int(p) if p else 0 for p in re.split(r"[;:]", params)] if params else [0]
    i = 0
    while i < len(codes):
        c = codes[i]
        if c == 0:
            fg = bg = None
        elif c in (38, 48) and i + 2 < len(codes) and codes[i + 1] == 5:
            rgb = _xterm_rgb(codes[i + 2] & 255)
            fg, bg = (rgb, bg) if c == 38 else (fg, rgb)
            i += 2
        elif c in (38, 48) and i + 4 < len(codes) and codes[i + 1] == 2:
            rgb = (codes[i + 2], codes[i + 3], codes[i + 4])
            fg, bg = (rgb, bg) if c == 38 else (fg, rgb)
            i += 4
        elif 30 <= c <= 37 or 90 <= c <= 97:
            fg = _BASIC[c - 30 if c < 90 else c - 82]
        elif 40 <= c <= 47 or 100 <= c <= 107:
            bg = _BASIC[c - 40 if c < 100 else c - 92]
        elif c == 39:
            fg = None
        elif c == 49:
            bg = None
        i += 1
    return fg, bg


def decode_asciiblock(text: str, width: int | None = None,
                      height: int | None = None) -> Image.Image:
    """The 1-bit image that luma's ``asciiblock`` device drew, from the terminal's text
    *with* its colour escapes (``tmux capture-pane -p -e``, or the raw bytes it wrote).

    Each ``▄`` is two pixels: its background the upper one, its foreground the lower one;
    a colour is lit when its luminance is at least half. Lines are terminal rows (a raw
    stream, which holds no newlines, is read from its last "cursor home" and cut every
    ``width`` characters, 128 by default). Without ``width`` and
    ``height`` the image is as large as the text (columns x 2 rows); with them, the text's
    first ``height // 2`` rows of ``width`` cells are read and anything missing is dark.

    Raises ``ValueError`` when the text holds no colour at all (a capture without ``-e``
    shows only ``▄``: the pixels are in the colours).

    >>> img = decode_asciiblock("\\x1b[38;5;16;48;5;231m▄\\x1b[38;5;231;48;5;16m▄")
    >>> img.size, [bool(img.getpixel(xy)) for xy in ((0, 0), (0, 1), (1, 0), (1, 1))]
    ((2, 2), [True, False, False, True])
    """
    if "\x1b[" not in text:
        raise ValueError("no colour escapes in the text: asciiblock's pixels are its "
                         "colours; capture with escapes (tmux capture-pane -p -e)")
    home = "\x1b[1;1H"  # the raw device output: each frame starts by going home
    raw = home in text
    if raw:
        text = text.rsplit(home, 1)[1]
    text = _ESC.sub("", text.replace("\r", ""))
    rows: list[list[tuple[bool, bool]]] = []
    fg: Any = None
    bg: Any = None
    for line in text.split("\n"):
        cells: list[tuple[bool, bool]] = []
        pos = 0
        for m in _SGR.finditer(line):
            cells.extend((_lit(bg), _lit(fg)) if ch == "▄" else (False, False)
                         for ch in line[pos:m.start()])
            fg, bg = _apply_sgr(m.group(1), fg, bg)
            pos = m.end()
        cells.extend((_lit(bg), _lit(fg)) if ch == "▄" else (False, False)
                     for ch in line[pos:])
        if raw:  # one stream that the terminal wrapped at its width
            step = width or 128
            rows.extend(cells[i:i + step] for i in range(0, len(cells), step))
        elif cells:
            rows.append(cells)
    w = width or max((len(r) for r in rows), default=0)
    h = height or 2 * len(rows)
    img = Image.new("1", (w, h), 0)
    px = img.load()
    assert px is not None
    for y2, row in enumerate(rows[: (h + 1) // 2]):
        for x, (upper, lower) in enumerate(row[:w]):
            if upper:
                px[x, 2 * y2] = 1
            if lower and 2 * y2 + 1 < h:
                px[x, 2 * y2 + 1] = 1
    return img
