"""Pin maps: which GPIO each footswitch, encoder, LED and the OLED use (``hw/pinmaps/*.toml``).

A pin map is data the firmware reads at start; :func:`load_pinmap` checks it completely before
anything touches a pin, so a wiring mistake is a message that names the file, the line and
the key, not a dead switch or a silent HAT. The checks know what the audio HAT needs: the I2S
pins (GPIO 18..21), I2C1 (GPIO 2/3, the codec's control bus, always on), the HAT ID EEPROM
(GPIO 0/1) and, when the OLED is on SPI, SPI0 (GPIO 7..11). The schema is described at the
top of each built-in map and in ``hw/README.md``.

This module does not import gpiozero (only ``firmware/controls.py`` does); the numbers it
returns are BCM GPIO numbers, which is what gpiozero takes.

>>> pm = builtin_pinmap("rpi4")
>>> [(s.name, s.pin) for s in pm.switches]
[('fs1', 17), ('fs2', 27), ('fs3', 22), ('fs4', 23)]
>>> pm.display.bus, hex(pm.display.i2c_address or 0)
('i2c', '0x3c')
>>> header_pin(17)
11
>>> try:
...     loads_pinmap('board = "rpi4"\\nhat = "x"\\n[switches]\\nfs1 = { pin = 19 }\\n'
...                  '[display]\\ndriver = "ssd1306"\\nbus = "i2c"\\n', "x.toml")
... except PinMapError as exc:
...     print(exc)  # doctest: +NORMALIZE_WHITESPACE
x.toml:4: switches.fs1.pin: GPIO 19 is I2S LRCLK (the audio HAT's frame clock);
pick a free pin such as GPIO 4, 5, 6 or 7
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.errors import PinMapError
from firmware.tomlfile import Key, Lines, dotted, load, loads

__all__ = [
    "BOARDS",
    "HAT_PINS",
    "HW_DIR",
    "SPI0_PINS",
    "DisplaySpec",
    "EncoderPins",
    "PinMap",
    "SwitchPin",
    "board_header",
    "builtin_boards",
    "builtin_pinmap",
    "header_pin",
    "load_pinmap",
    "loads_pinmap",
]



def _hw_dir() -> Path:
    """The repository's ``hw/`` beside the package when run from a checkout; in an
    installed copy, the ``share/ouroboros/hw`` that the wheel's data files put under the
    environment's prefix. ``OURO_HW_DIR`` overrides both."""
    if env := os.environ.get("OURO_HW_DIR"):
        return Path(env)
    checkout = Path(__file__).resolve().parents[1] / "hw"
    if (checkout / "pinmaps").is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "ouroboros" / "hw"


HW_DIR = _hw_dir()
"""The ``hw/`` folder: pin maps, diagrams, BOM (pin maps only, in an installed copy)."""

PINMAP_DIR = HW_DIR / "pinmaps"

BOARDS = ("rpi4", "rpi5")
"""Boards a pin map may name. Both have the same 40-pin header with the same BCM numbers."""

MAX_SWITCHES = 8

# The 40-pin header, physical pin -> what is on it; identical on the Pi 4 and Pi 5 (the Pi 5's
# GPIOs come from its RP1 chip but keep the BCM numbers and the header positions).
_HEADER_40: dict[int, str] = {
    1: "3V3", 2: "5V", 3: "GPIO2", 4: "5V", 5: "GPIO3", 6: "GND", 7: "GPIO4", 8: "GPIO14",
    9: "GND", 10: "GPIO15", 11: "GPIO17", 12: "GPIO18", 13: "GPIO27", 14: "GND",
    15: "GPIO22", 16: "GPIO23", 17: "3V3", 18: "GPIO24", 19: "GPIO10", 20: "GND",
    21: "GPIO9", 22: "GPIO25", 23: "GPIO11", 24: "GPIO8", 25: "GND", 26: "GPIO7",
    27: "GPIO0", 28: "GPIO1", 29: "GPIO5", 30: "GND", 31: "GPIO6", 32: "GPIO12",
    33: "GPIO13", 34: "GND", 35: "GPIO19", 36: "GPIO16", 37: "GPIO26", 38: "GPIO20",
    39: "GND", 40: "GPIO21",
}
_HEADER_GPIOS = range(0, 28)

HAT_PINS: dict[int, str] = {
    0: "ID_SD (the HAT ID EEPROM's data line)",
    1: "ID_SC (the HAT ID EEPROM's clock line)",
    2: "I2C1 SDA (the bus the audio HAT's codec is configured over)",
    3: "I2C1 SCL (the bus the audio HAT's codec is configured over)",
    18: "I2S BCLK (the audio HAT's bit clock)",
    19: "I2S LRCLK (the audio HAT's frame clock)",
    20: "I2S DIN (audio from the HAT's ADC into the Pi)",
    21: "I2S DOUT (audio from the Pi to the HAT's DAC)",
}
"""GPIOs the audio HAT always needs, with what each carries."""

SPI0_PINS: dict[int, str] = {
    7: "SPI0 CE1 (claimed by the kernel's SPI0 driver when the OLED is on SPI)",
    8: "SPI0 CE0 (the OLED's chip select)",
    9: "SPI0 MISO (claimed by the kernel's SPI0 driver when the OLED is on SPI)",
    10: "SPI0 MOSI (the OLED's data line)",
    11: "SPI0 SCLK (the OLED's clock)",
}
"""GPIOs SPI0 takes once ``dtparam=spi=on``, with what each carries."""

DRIVERS = ("ssd1306", "sh1106")
BUSES = ("i2c", "spi")
# SSD1306 and SH1106 both answer at 0b011110 + SA0: 0x3C, or 0x3D with SA0 tied high.
I2C_ADDRESSES = (0x3C, 0x3D)
LED_NAMES = ("record", "play", "tempo")

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class SwitchPin:
    """One footswitch: its name (used by gesture maps), BCM pin and pull resistor."""

    name: str
    pin: int
    pull_up: bool = True


@dataclass(frozen=True)
class EncoderPins:
    """The rotary encoder's quadrature pins and its optional push switch."""

    a: int
    b: int
    push: int | None = None


@dataclass(frozen=True)
class DisplaySpec:
    """The OLED: controller, bus and geometry. Only the fields of its bus are set."""

    driver: str
    bus: str
    i2c_port: int | None = None
    i2c_address: int | None = None
    spi_port: int | None = None
    spi_device: int | None = None
    dc: int | None = None
    reset: int | None = None
    width: int = 128
    height: int = 64
    rotate: int = 0


@dataclass(frozen=True)
class PinMap:
    """A checked pin map. ``switches`` keep the file's order; ``leds`` and ``reserved`` map
    names to BCM pins."""

    board: str
    hat: str
    path: Path
    switches: tuple[SwitchPin, ...]
    encoder: EncoderPins | None
    leds: dict[str, int]
    display: DisplaySpec
    reserved: dict[str, int] = field(default_factory=dict)

    def pins(self) -> dict[int, str]:
        """Every GPIO the map assigns, BCM pin -> dotted key (``17: "switches.fs1"``), in the
        order of the file: switches, encoder, LEDs, display DC/RESET, reserved."""
        out: dict[int, str] = {}
        for sw in self.switches:
            out[sw.pin] = f"switches.{sw.name}"
        if self.encoder is not None:
            for key in ("a", "b", "push"):
                pin = getattr(self.encoder, key)
                if pin is not None:
                    out[pin] = f"encoder.{key}"
        for name, pin in self.leds.items():
            out[pin] = f"leds.{name}"
        for key in ("dc", "reset"):
            pin = getattr(self.display, key)
            if pin is not None:
                out[pin] = f"display.{key}"
        for name, pin in self.reserved.items():
            out[pin] = f"reserved.{name}"
        return out

    def bus_pins(self) -> dict[int, str]:
        """The GPIOs the HAT and the display's bus take, BCM pin -> what each carries."""
        out = dict(HAT_PINS)
        if self.display.bus == "spi":
            out.update(SPI0_PINS)
        return dict(sorted(out.items()))


# ---------------------------------------------------------------------- the header


def board_header(board: str = "rpi4") -> dict[int, str]:
    """The 40-pin header of ``board``: physical pin (1..40) -> ``"GPIO17"``, ``"3V3"``,
    ``"5V"`` or ``"GND"``.

    >>> board_header("rpi5")[11]
    'GPIO17'
    """
    _check_board_name(board)
    return dict(_HEADER_40)


def header_pin(gpio: int, board: str = "rpi4") -> int:
    """The physical header pin of BCM ``gpio`` (``ValueError`` if it is not on the header)."""
    for number, label in board_header(board).items():
        if label == f"GPIO{gpio}":
            return number
    raise ValueError(f"GPIO {gpio} is not on the 40-pin header of {board}")


def _check_board_name(board: str) -> None:
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known: {', '.join(BOARDS)}")


# ---------------------------------------------------------------------- loading


def builtin_boards() -> tuple[str, ...]:
    """The names of the pin maps shipped in ``hw/pinmaps`` (``"rpi4"``, ``"rpi4-spi"``...)."""
    return tuple(sorted(p.stem for p in PINMAP_DIR.glob("*.toml")))


def builtin_pinmap(board: str = "rpi4") -> PinMap:
    """The shipped pin map ``hw/pinmaps/<board>.toml``, checked."""
    known = builtin_boards()
    if board not in known:
        raise PinMapError(f"no built-in pin map {board!r}; there are: {', '.join(known)}")
    return load_pinmap(PINMAP_DIR / f"{board}.toml")


def load_pinmap(path: str | Path) -> PinMap:
    """Read and check the pin map at ``path``; any problem raises :class:`PinMapError` whose
    message starts ``path:line: key:``."""
    doc, lines = load(path, PinMapError)
    return _Checker(doc, lines, Path(path)).pinmap()


def loads_pinmap(text: str, name: str = "<pinmap>") -> PinMap:
    """Check a pin map given as TOML text (``name`` stands for the file in messages)."""
    doc, lines = loads(text, name, PinMapError)
    return _Checker(doc, lines, Path(name)).pinmap()


class _Checker:
    """One pass over a parsed pin map; the first problem raises."""

    def __init__(self, doc: dict[str, Any], lines: Lines, path: Path):
        self.doc = doc
        self.lines = lines
        self.path = path
        self.taken: dict[int, Key] = {}  # pin -> the key that took it first
        self.forbidden: dict[int, str] = dict(HAT_PINS)

    def error(self, key: Key, problem: str) -> PinMapError:
        return PinMapError(f"{self.lines.where(key)}: {problem}")

    def pinmap(self) -> PinMap:
        self.keys((), self.doc, required=("board", "hat", "switches", "display"),
                  optional=("encoder", "leds", "reserved"))
        board = self.choice(("board",), BOARDS)
        hat = self.text(("hat",))
        # The display decides whether SPI0 is taken, so it is read before any pin is placed.
        display = self.display()
        switches = self.switches()
        encoder = self.encoder()
        leds = self.leds()
        for name in ("dc", "reset"):  # read with the display; placed here, in file order
            if getattr(display, name) is not None:
                self.pin(("display", name))
        reserved = self.reserved()
        return PinMap(board=board, hat=hat, path=self.path, switches=switches,
                      encoder=encoder, leds=leds, display=display, reserved=reserved)

    # -------------------------------------------------------------- sections

    def switches(self) -> tuple[SwitchPin, ...]:
        table = self.table(("switches",))
        if not table:
            raise self.error(("switches",), "needs at least one footswitch, "
                             "e.g. fs1 = { pin = 17, pull_up = true }")
        if len(table) > MAX_SWITCHES:
            raise self.error(("switches",), f"has {len(table)} footswitches; "
                             f"at most {MAX_SWITCHES} are supported")
        out = []
        for name in table:
            key: Key = ("switches", name)
            if not _NAME.match(name):
                raise self.error(key, "a switch name starts with a letter and holds only "
                                 "letters, digits, '_' and '-'")
            entry = self.table(key, "a table such as { pin = 17, pull_up = true }")
            self.keys(key, entry, required=("pin",), optional=("pull_up",))
            pull_up = self.flag((*key, "pull_up")) if "pull_up" in entry else True
            out.append(SwitchPin(name, self.pin((*key, "pin")), pull_up))
        return tuple(out)

    def encoder(self) -> EncoderPins | None:
        if "encoder" not in self.doc:
            return None
        table = self.table(("encoder",))
        self.keys(("encoder",), table, required=("a", "b"), optional=("push",))
        a = self.pin(("encoder", "a"))
        b = self.pin(("encoder", "b"))
        push = self.pin(("encoder", "push")) if "push" in table else None
        return EncoderPins(a, b, push)

    def leds(self) -> dict[str, int]:
        if "leds" not in self.doc:
            return {}
        table = self.table(("leds",))
        self.keys(("leds",), table, required=(), optional=LED_NAMES)
        return {name: self.pin(("leds", name)) for name in table}

    def reserved(self) -> dict[str, int]:
        if "reserved" not in self.doc:
            return {}
        table = self.table(("reserved",))
        out = {}
        for name in table:
            if not _NAME.match(name):
                raise self.error(("reserved", name), "a reserved pin's name starts with a "
                                 "letter and holds only letters, digits, '_' and '-'")
            out[name] = self.pin(("reserved", name))
        return out

    def display(self) -> DisplaySpec:
        key: Key = ("display",)
        table = self.table(key)
        common = ("width", "height", "rotate")
        self.keys(key, table, required=("driver", "bus"),
                  optional=(*common, "i2c_port", "i2c_address", "spi_port", "spi_device",
                            "dc", "reset"))
        driver = self.choice((*key, "driver"), DRIVERS)
        bus = self.choice((*key, "bus"), BUSES)
        own = {"i2c": ("i2c_port", "i2c_address"),
               "spi": ("spi_port", "spi_device", "dc", "reset")}
        for other, names in own.items():
            for name in names:
                if other != bus and name in table:
                    raise self.error((*key, name), f'applies only to bus = "{other}"; '
                                     f'this display has bus = "{bus}"')
        width = self.integer((*key, "width"), table.get("width", 128), (128,),
                             "the screen is drawn for 128x64")
        height = self.integer((*key, "height"), table.get("height", 64), (64,),
                              "the screen is drawn for 128x64")
        rotate = self.integer((*key, "rotate"), table.get("rotate", 0), (0, 2),
                              "0 = as mounted, 2 = upside down (1 and 3 would make it 64x128)")
        if bus == "i2c":
            port = self.integer((*key, "i2c_port"), table.get("i2c_port", 1), (1,),
                                "I2C1 on GPIO 2/3 is the header's I2C bus (I2C0 on GPIO 0/1 "
                                "belongs to the HAT ID EEPROM)")
            address = self.integer((*key, "i2c_address"), table.get("i2c_address", 0x3C),
                                   I2C_ADDRESSES, f"an {driver} answers at 0x3C, or 0x3D "
                                   "with its SA0 pin high", hexadecimal=True)
            return DisplaySpec(driver, bus, i2c_port=port, i2c_address=address,
                               width=width, height=height, rotate=rotate)
        self.forbidden.update(SPI0_PINS)
        spi_port = self.integer((*key, "spi_port"), table.get("spi_port", 0), (0,),
                                "SPI1 would need GPIO 18..21, which carry I2S")
        device = self.integer((*key, "spi_device"), table.get("spi_device", 0), (0, 1),
                              "0 = CE0 (GPIO 8), 1 = CE1 (GPIO 7)")
        if "dc" not in table:
            raise self.error(key, 'missing key dc: an OLED on SPI needs a data/command pin, '
                             'e.g. dc = 24')
        dc = self.raw_pin((*key, "dc"))
        reset = self.raw_pin((*key, "reset")) if "reset" in table else None
        return DisplaySpec(driver, bus, spi_port=spi_port, spi_device=device, dc=dc,
                           reset=reset, width=width, height=height, rotate=rotate)

    # -------------------------------------------------------------- values

    def keys(self, key: Key, table: Mapping[str, Any], required: tuple[str, ...],
             optional: tuple[str, ...]) -> None:
        known = (*required, *optional)
        for name in table:
            if name not in known:
                raise self.error((*key, name), f"unknown key; expected {_either(known)}")
        for name in required:
            if name not in table:
                raise self.error(key, f"missing key {name}")

    def value(self, key: Key) -> Any:
        node: Any = self.doc
        for part in key:
            node = node[part]
        return node

    def table(self, key: Key, kind: str = "a table") -> Mapping[str, Any]:
        node = self.value(key)
        if not isinstance(node, Mapping):
            raise self.error(key, f"must be {kind}, not {_kind(node)}")
        return node

    def text(self, key: Key) -> str:
        value = self.value(key)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, not {_kind(value)}")
        return value

    def choice(self, key: Key, allowed: tuple[str, ...]) -> str:
        value = self.value(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, one of {_either(allowed, quote=True)}; "
                             f"not {_kind(value)}")
        if value not in allowed:
            raise self.error(key, f"{value!r} is not one of {_either(allowed, quote=True)}")
        return value

    def flag(self, key: Key) -> bool:
        value = self.value(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_kind(value)}")
        return value

    def integer(self, key: Key, value: Any, allowed: tuple[int, ...], why: str,
                hexadecimal: bool = False) -> int:
        show = (lambda n: f"0x{n:02X}") if hexadecimal else str
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_kind(value)}")
        if value not in allowed:
            options = " or ".join(show(n) for n in allowed)
            raise self.error(key, f"{show(value)} is not supported; use {options} ({why})")
        return value

    def raw_pin(self, key: Key) -> int:
        """A BCM number on the header, before its place is checked."""
        value = self.value(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be a BCM GPIO number (an integer), not {_kind(value)}")
        if value not in _HEADER_GPIOS:
            raise self.error(key, f"GPIO {value} is not on the 40-pin header (BCM GPIO "
                             f"{_HEADER_GPIOS.start}..{_HEADER_GPIOS.stop - 1})")
        return value

    def pin(self, key: Key) -> int:
        """A BCM number that is on the header, free of the buses and not used before."""
        value = self.raw_pin(key)
        why = self.forbidden.get(value)
        if why is not None:
            raise self.error(key, f"GPIO {value} is {why}; pick a free pin such as "
                             f"{self.suggestions()}")
        first = self.taken.get(value)
        if first is not None:
            line = self.lines.at(first)
            at = f" (line {line})" if line is not None else ""
            raise self.error(key, f"GPIO {value} is already used by "
                             f"{dotted(first)}{at}; pick a free pin such "
                             f"as {self.suggestions()}")
        self.taken[value] = key
        return value

    def suggestions(self) -> str:
        free = [n for n in _HEADER_GPIOS
                if n not in self.forbidden and n not in self.taken
                and n not in _written_pins(self.doc)]
        if not free:
            return "none: every header GPIO is taken"
        names = [f"GPIO {free[0]}"] + [str(n) for n in free[1:4]]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _written_pins(doc: Mapping[str, Any]) -> set[int]:
    """Every integer pin written anywhere in the document (so a suggestion is not a pin that
    a later key already holds)."""
    out: set[int] = set()

    def walk(node: Any, depth: int) -> None:
        if isinstance(node, Mapping):
            for name, value in node.items():
                if name in ("i2c_port", "i2c_address", "spi_port", "spi_device", "width",
                            "height", "rotate"):
                    continue
                walk(value, depth + 1)
        elif isinstance(node, int) and not isinstance(node, bool) and depth > 1:
            out.add(node)

    walk(doc, 0)
    return out


def _either(options: tuple[str, ...], quote: bool = False) -> str:
    shown = [f'"{o}"' if quote else o for o in options]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _kind(value: Any) -> str:
    """How a TOML value is called in messages."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
