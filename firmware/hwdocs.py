"""Hardware drawings generated from data: one wiring diagram per shipped pin map and the
enclosure's 1:1 drilling template.

``python -m firmware.hwdocs`` writes ``hw/wiring-<map>.svg`` and ``hw/drill-template.svg``;
``python -m firmware.hwdocs --check`` writes nothing and exits 1, naming each committed file
that differs from what this code makes (a test runs the same comparison). The output is plain
SVG built with :mod:`xml.etree.ElementTree`, with no dates or random ids, so the same pin map
always gives the same bytes and the files diff cleanly in review.

>>> svg = wiring_svg(builtin_pinmap("rpi4"))
>>> svg.startswith("<?xml") and "GPIO17" in svg and "fs1" in svg
True
>>> led_resistor_ohms(2.0, 0.005)
270
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from firmware.pinmap import HAT_PINS, HW_DIR, PinMap, board_header, builtin_boards, builtin_pinmap

__all__ = [
    "ENCLOSURE",
    "LEDS",
    "Hole",
    "drill_holes",
    "drill_template_svg",
    "generate",
    "led_resistor_ohms",
    "main",
    "wiring_svg",
]

SVG_NS = "http://www.w3.org/2000/svg"
SUPPLY_V = 3.3  # the Pi's GPIOs drive 3.3 V
LED_CURRENT_A = 0.005  # bright enough behind a 5 mm diffused lens, far below a GPIO's limit
E12 = (10, 12, 15, 18, 22, 27, 33, 39, 47, 56, 68, 82)

# LED colour and typical forward voltage at a few mA (datasheet figures for standard red,
# yellow-green GaP and yellow parts; blue and white need about 3 V and will not light well
# from 3.3 V through a resistor).
LEDS: dict[str, tuple[str, float]] = {
    "record": ("red", 2.0),
    "play": ("green", 2.1),
    "tempo": ("yellow", 2.1),
}


def led_resistor_ohms(forward_v: float, current_a: float = LED_CURRENT_A,
                      supply_v: float = SUPPLY_V) -> int:
    """The E12 series resistor at or above (supply - Vf) / I, so the current stays at or
    under ``current_a``."""
    exact = (supply_v - forward_v) / current_a
    decade = 1
    while True:
        for value in E12:
            if value * decade >= exact - 1e-9:
                return value * decade
        decade *= 10


def _n(value: float) -> str:
    """A coordinate as short, stable text: 12.5, 3, -0.25."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


class _Svg:
    """A small SVG document builder: elements in insertion order, numbers formatted once."""

    def __init__(self, width: float, height: float, unit: str = "", style: str = ""):
        self.root = ET.Element("svg", {
            "xmlns": SVG_NS, "version": "1.1",
            "width": f"{_n(width)}{unit}", "height": f"{_n(height)}{unit}",
            "viewBox": f"0 0 {_n(width)} {_n(height)}",
        })
        if style:
            ET.SubElement(self.root, "style").text = style

    def add(self, tag: str, parent: ET.Element | None = None, text: str | None = None, /,
            **attrs: float | str) -> ET.Element:
        """A child element; ``stroke_width=`` becomes ``stroke-width``."""
        element = ET.SubElement(self.root if parent is None else parent, tag, {
            key.rstrip("_").replace("_", "-"): _n(v) if isinstance(v, int | float) else v
            for key, v in attrs.items()})
        if text is not None:
            element.text = text
        return element

    def group(self, parent: ET.Element | None = None, /, **attrs: float | str) -> ET.Element:
        return self.add("g", parent, **attrs)

    def text(self, x: float, y: float, text: str, parent: ET.Element | None = None, /,
             **attrs: float | str) -> ET.Element:
        return self.add("text", parent, text, x=x, y=y, **attrs)

    def line(self, x1: float, y1: float, x2: float, y2: float,
             parent: ET.Element | None = None, /, **attrs: float | str) -> ET.Element:
        return self.add("line", parent, x1=x1, y1=y1, x2=x2, y2=y2, **attrs)

    def tostring(self) -> str:
        ET.indent(self.root, space=" ")
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                + ET.tostring(self.root, encoding="unicode") + "\n")


# ---------------------------------------------------------------------- wiring diagram

_WIRING_STYLE = """
text { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; font-size: 11px; fill: #222; }
.title { font-size: 20px; font-weight: bold; }
.sub { font-size: 12px; fill: #555; }
.num { font-size: 8px; text-anchor: middle; }
.role { font-size: 11px; font-weight: bold; }
.note { font-size: 11px; fill: #444; }
.wire { stroke: #333; stroke-width: 1.5; fill: none; }
.sym { stroke: #222; stroke-width: 1.5; fill: #fff; }
.gnd { stroke: #222; stroke-width: 1.5; }
.pin { stroke: #222; stroke-width: 1; }
.free { fill: #fff; }
.power { fill: #f4b183; }
.ground { fill: #777; }
.hat { fill: #e06666; }
.switch { fill: #6aa84f; }
.encoder { fill: #3c78d8; }
.led { fill: #f6b26b; }
.display { fill: #8e7cc3; }
.reserved { fill: #bbbbbb; }
.board { fill: #1f5f3f; }
"""

_ROW = 34  # px between header rows: room for a caption above each wire and a note below
_TOP = 130  # y of the header's first row
_CX = 600  # the header's centre line
_PITCH = 24  # px between the two header columns


@dataclass(frozen=True)
class _Wire:
    """What one header pin connects to: the part's caption, its kind and symbol."""

    caption: str
    kind: str  # a CSS class: switch, encoder, led, display, reserved, hat, power, ground
    symbol: str  # "switch", "led", "box" or "" (no wire drawn)
    box: str = ""  # text inside a box symbol
    detail: str = ""  # small text under the wire


def _connections(pm: PinMap) -> dict[int, _Wire]:
    """Physical header pin -> what the pin map (and its HAT and display) puts on it."""
    header = board_header(pm.board)
    physical = {int(label[4:]): number for number, label in header.items()
                if label.startswith("GPIO")}
    out: dict[int, _Wire] = {}
    for gpio, what in pm.bus_pins().items():
        short = what.split(" (")[0]
        if gpio in HAT_PINS:
            out[physical[gpio]] = _Wire(f"{short} (HAT)", "hat", "")
        else:  # taken by the SPI0 driver; the OLED's own SPI0 pins are wired below
            out[physical[gpio]] = _Wire(f"{short} (SPI0, leave free)", "display", "")
    d = pm.display
    if d.bus == "i2c":
        out[physical[2]] = _Wire("OLED SDA, shared with codec", "display", "box",
                                 "OLED SDA", f"{d.driver} at 0x{d.i2c_address or 0:02X}")
        out[physical[3]] = _Wire("OLED SCL, shared with codec", "display", "box",
                                 "OLED SCL")
        vcc, gnd = 1, 9
    else:
        out[physical[8 if d.spi_device == 0 else 7]] = _Wire(
            f"OLED CS (SPI0 CE{d.spi_device})", "display", "box", "OLED CS")
        out[physical[10]] = _Wire("OLED DIN (SPI0 MOSI)", "display", "box", "OLED DIN")
        out[physical[11]] = _Wire("OLED CLK (SPI0 SCLK)", "display", "box", "OLED CLK")
        vcc, gnd = 17, 25
    out[vcc] = _Wire("OLED VCC (3.3 V)", "power", "box", "OLED VCC")
    out[gnd] = _Wire("OLED GND", "ground", "box", "OLED GND")
    for gpio, role in pm.pins().items():
        section, name = role.split(".", 1)
        pin = physical[gpio]
        if section == "switches":
            sw = next(s for s in pm.switches if s.name == name)
            pull = "internal pull-up" if sw.pull_up else "external pull-down"
            out[pin] = _Wire(f"footswitch {name}", "switch", "switch", detail=f"to GND, {pull}")
        elif section == "encoder":
            caption = {"a": "encoder A", "b": "encoder B", "push": "encoder push"}[name]
            detail = "other leg to GND" if name == "push" else "common (C) to GND"
            out[pin] = _Wire(caption, "encoder", "switch", detail=detail)
        elif section == "leds":
            colour, vf = LEDS.get(name, ("red", 2.0))
            ohms = led_resistor_ohms(vf)
            ma = (SUPPLY_V - vf) / ohms * 1000
            out[pin] = _Wire(f"LED {name} ({colour})", "led", "led", f"{ohms} Ω",
                             f"{ohms} Ω, {ma:.1f} mA at Vf {vf:.1f} V")
        elif section == "display":
            label = {"dc": "OLED DC", "reset": "OLED RES"}[name]
            out[pin] = _Wire(f"{label} (display.{name})", "display", "box", label)
        else:
            out[pin] = _Wire(f"reserved: {name}", "reserved", "")
    return out


def _pin_class(label: str, wire: _Wire | None) -> str:
    if label == "GND":
        return "ground"
    if label in ("3V3", "5V"):
        return "power"
    return wire.kind if wire is not None else "free"


def wiring_svg(pm: PinMap) -> str:
    """The wiring diagram of ``pm``: the 40-pin header with every pin labelled, a wire from
    each used pin to its part (switches and LEDs to GND, the LEDs through their resistors),
    and the audio HAT's pins marked."""
    header = board_header(pm.board)
    wires = _connections(pm)
    width, height = 1200, _TOP + 20 * _ROW + 170
    svg = _Svg(width, height, style=_WIRING_STYLE)
    svg.add("rect", x=0, y=0, width=width, height=height, fill="#ffffff")
    name = pm.path.stem
    svg.text(30, 40, f"Ouroboros wiring: {name}", class_="title")
    model = {"rpi4": "Raspberry Pi 4", "rpi5": "Raspberry Pi 5"}[pm.board]
    d = pm.display
    bus = (f"I2C{d.i2c_port} at 0x{d.i2c_address or 0:02X}" if d.bus == "i2c"
           else f"SPI{d.spi_port} CE{d.spi_device}, DC GPIO{d.dc}"
           + (f", RES GPIO{d.reset}" if d.reset is not None else ""))
    svg.text(30, 62, f"{model} · {pm.hat} · OLED {d.driver} {d.width}x{d.height} on {bus}",
             class_="sub")
    svg.text(30, 80, f"Generated from hw/pinmaps/{name}.toml by firmware/hwdocs.py. "
             "The 40-pin header seen from above, pin 1 (3V3) square.", class_="sub")

    top = _TOP - _ROW / 2 - 8
    svg.add("rect", x=_CX - _PITCH / 2 - 13, y=top, width=_PITCH + 26,
            height=20 * _ROW + 16, rx=4, class_="board")
    for number, label in header.items():
        row = (number - 1) // 2
        left = number % 2 == 1
        y = _TOP + row * _ROW
        x = _CX - _PITCH / 2 if left else _CX + _PITCH / 2
        wire = wires.get(number)
        pin_class = f"pin {_pin_class(label, wire)}"
        if number == 1:
            svg.add("rect", x=x - 8, y=y - 8, width=16, height=16, class_=pin_class)
        else:
            svg.add("circle", cx=x, cy=y, r=8, class_=pin_class)
        svg.text(x, y + 3, str(number), class_="num")
        side = -1 if left else 1
        text_x = x + side * 18
        anchor = "end" if left else "start"
        svg.text(text_x, y + 4, label, text_anchor=anchor,
                 font_weight="bold" if wire is not None else "normal")
        if wire is not None:
            _draw_wire(svg, wire, x + side * 80, y, side)
    _legend(svg, pm, _TOP + 20 * _ROW + 10)
    return svg.tostring()


def _draw_wire(svg: _Svg, wire: _Wire, x0: float, y: float, side: int) -> None:
    """The caption and, for wired parts, a line from ``x0`` outward to the part's symbol."""
    group = svg.group(class_=wire.kind)
    anchor = "end" if side < 0 else "start"
    if not wire.symbol:
        svg.text(x0, y + 4, wire.caption, group, class_="role", text_anchor=anchor)
        return
    x_sym = x0 + side * 250  # where the part's symbol starts
    svg.line(x0 - side * 14, y, x_sym, y, group, class_="wire")
    svg.text(x0 + side * 10, y - 5, wire.caption, group, class_="role", text_anchor=anchor)
    if wire.detail:
        svg.text(x0 + side * 10, y + 13, wire.detail, group, class_="note", text_anchor=anchor,
                 font_size=9)
    if wire.symbol == "box":
        w = 74
        bx = x_sym if side > 0 else x_sym - w
        svg.add("rect", group, x=bx, y=y - 9, width=w, height=18, rx=3, class_="sym")
        svg.text(bx + w / 2, y + 4, wire.box, group, text_anchor="middle", font_size=10)
        return
    if wire.symbol == "switch":
        # A normally-open contact: two terminals and a lifted blade.
        a, b = x_sym + side * 6, x_sym + side * 30
        svg.line(x_sym, y, a, y, group, class_="wire")
        svg.add("circle", group, cx=a, cy=y, r=2.5, class_="sym")
        svg.add("circle", group, cx=b, cy=y, r=2.5, class_="sym")
        svg.line(a, y, b - side * 2, y - 9, group, class_="wire")
        end = b
    else:
        # Resistor, then the LED (anode towards the GPIO), cathode to ground.
        r0, r1 = x_sym, x_sym + side * 34
        rx = min(r0, r1)
        svg.add("rect", group, x=rx, y=y - 5, width=34, height=10, class_="sym")
        svg.text(rx + 17, y - 9, wire.box, group, text_anchor="middle", font_size=9)
        t0, t1 = r1 + side * 10, r1 + side * 24
        svg.line(r1, y, t0, y, group, class_="wire")
        svg.add("polygon", group, points=f"{_n(t0)},{_n(y - 7)} {_n(t0)},{_n(y + 7)} "
                f"{_n(t1)},{_n(y)}", class_="sym")
        svg.line(t1, y - 7, t1, y + 7, group, class_="wire")
        for k in (0, 6):  # the light leaving the LED
            ax = (t0 + t1) / 2 + side * k
            svg.line(ax, y - 9, ax + side * 6, y - 16, group, class_="wire", stroke_width=1)
        end = t1
    g = end + side * 16
    svg.line(end, y, g, y, group, class_="wire")
    svg.line(g, y - 7, g, y + 7, group, class_="gnd")
    svg.line(g + side * 4, y - 4, g + side * 4, y + 4, group, class_="gnd")
    svg.line(g + side * 8, y - 1.5, g + side * 8, y + 1.5, group, class_="gnd")


def _legend(svg: _Svg, pm: PinMap, y: float) -> None:
    grounds = ", ".join(str(n) for n, label in board_header(pm.board).items()
                        if label == "GND")
    parts = []
    for name in pm.leds:
        colour, vf = LEDS.get(name, ("red", 2.0))
        parts.append(f"{name} {colour} {led_resistor_ohms(vf)} Ω")
    leds = "; ".join(parts)
    lines = [
        f"Ground symbols: any header GND pin ({grounds}); keep the audio jacks' ground on the HAT.",
        "Footswitches, encoder A/B and push: the contact closes to GND; the firmware turns on "
        "the GPIO's internal pull-up.",
        f"LEDs: GPIO → resistor → anode, cathode to GND ({leds or 'none'}).",
        "Red pins belong to the audio HAT (I2S, I2C1 for its codec, the ID EEPROM): nothing "
        "else may use them.",
    ]
    if pm.reserved:
        lines.append("Grey pins are reserved by this map: "
                     + ", ".join(f"{name} (GPIO{pin})" for name, pin in pm.reserved.items())
                     + "; see hw/README.md.")
    for i, text in enumerate(lines):
        svg.text(30, y + 30 + i * 18, text, class_="note")


# ---------------------------------------------------------------------- drilling template

@dataclass(frozen=True)
class Enclosure:
    """An enclosure's outside dimensions in mm (top face: width x depth; walls: height)."""

    name: str
    width: float
    depth: float
    height: float


ENCLOSURE = Enclosure("Hammond 1590XX (or same-size die-cast box)", 145.0, 121.0, 39.0)
"""The box the template is drawn for. Measure yours: die-cast sizes vary by a millimetre."""


@dataclass(frozen=True)
class Hole:
    """One hole or cut-out. ``face`` is "top", "back", "left" or "right". On the top, x runs
    from the left edge and y from the back edge; on a wall, x runs along the wall (from the
    back edge for the side walls, from the left for the back) and y down from the top face.
    ``d`` is a diameter; a cut-out has ``w`` and ``h`` instead."""

    label: str
    face: str
    x: float
    y: float
    d: float = 0.0
    w: float = 0.0
    h: float = 0.0


# An SSD1306 0.96" module: active area 21.74 x 10.86 mm on a glass of 26.7 x 19.26 mm; the
# common breakout board is about 27.3 x 27.8 mm with 2 mm holes on 23.5 x 23.7 mm centres.
OLED_WINDOW = (25.0, 14.0)  # the active area plus about 1.6 mm each side, inside the glass
OLED_HOLES = (23.5, 23.7)
FOOTSWITCH_PITCH = 36.0  # the widest four 12 mm switches get in 145 mm with nuts clear


def drill_holes(box: Enclosure = ENCLOSURE) -> tuple[Hole, ...]:
    """Every hole of the enclosure, in the template's coordinates (see :class:`Hole`)."""
    holes: list[Hole] = []
    first = box.width / 2 - 1.5 * FOOTSWITCH_PITCH
    for i in range(4):
        holes.append(Hole(f"FS{i + 1}", "top", first + i * FOOTSWITCH_PITCH, 97.0, d=12.0))
    for name, x in (("REC", 36.5), ("PLAY", 72.5), ("TEMPO", 108.5)):
        holes.append(Hole(f"LED {name}", "top", x, 70.0, d=5.0))
    ox, oy = 45.0, 40.0
    holes.append(Hole("OLED window", "top", ox, oy, w=OLED_WINDOW[0], h=OLED_WINDOW[1]))
    for sx in (-1, 1):
        for sy in (-1, 1):
            holes.append(Hole("M2", "top", ox + sx * OLED_HOLES[0] / 2,
                              oy + sy * OLED_HOLES[1] / 2, d=2.2))
    holes.append(Hole("ENCODER", "top", 110.0, 40.0, d=7.0))
    for face, name in (("right", "IN"), ("left", "OUT")):
        for side, along in (("L", 40.0), ("R", 80.0)):
            holes.append(Hole(f"{name} {side}", face, along, 15.0, d=9.5))
    holes.append(Hole("MIDI IN", "back", 28.0, 19.0, d=15.5))
    holes.append(Hole("MIDI OUT", "back", 60.0, 19.0, d=15.5))
    holes.append(Hole("USB-C", "back", 118.0, 19.0, w=12.0, h=7.0))
    return tuple(holes)


_DRILL_STYLE = """
text { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; font-size: 2.6px; fill: #000; }
.title { font-size: 4.5px; font-weight: bold; }
.small { font-size: 2.1px; }
.face { fill: none; stroke: #000; stroke-width: 0.3; }
.fold { fill: none; stroke: #000; stroke-width: 0.2; stroke-dasharray: 2 1; }
.hole { fill: none; stroke: #000; stroke-width: 0.25; }
.mark { stroke: #000; stroke-width: 0.12; }
.dim { stroke: #000; stroke-width: 0.15; fill: none; }
.bar { stroke: #000; stroke-width: 0.4; }
"""

_PAGE = (297.0, 210.0)  # A4 landscape, in mm: the document's user unit is one millimetre


def drill_template_svg(box: Enclosure = ENCLOSURE) -> str:
    """The 1:1 drilling template: the top face with the four walls unfolded around it, every
    hole with a centre mark and its size, overall dimensions and a 100 mm scale bar."""
    page_w, page_h = _PAGE
    svg = _Svg(page_w, page_h, unit="mm", style=_DRILL_STYLE)
    svg.add("rect", x=0, y=0, width=page_w, height=page_h, fill="#ffffff")
    ox = (page_w - box.width) / 2
    oy = 16.0 + box.height
    svg.text(8, 9, "Ouroboros drilling template (1:1, millimetres)", class_="title")
    svg.text(8, 13.5, f"{box.name}: top {_n(box.width)} x {_n(box.depth)} mm, walls "
             f"{_n(box.height)} mm. Print at 100 % (no fit to page) and check the scale bar.",
             class_="small")

    faces = {
        "top": (ox, oy, box.width, box.depth),
        "back": (ox, oy - box.height, box.width, box.height),
        "left": (ox - box.height, oy, box.height, box.depth),
        "right": (ox + box.width, oy, box.height, box.depth),
    }
    for face, (x, y, w, h) in faces.items():
        svg.add("rect", x=x, y=y, width=w, height=h,
                class_="face" if face == "top" else "fold")
    svg.text(ox + 2, oy - 2, "BACK WALL (unfolded): MIDI, power", class_="small")
    svg.text(ox - box.height / 2, oy + box.depth + 4, "LEFT WALL: outputs",
             class_="small", text_anchor="middle")
    svg.text(ox + box.width + box.height / 2, oy + box.depth + 4, "RIGHT WALL: inputs",
             class_="small", text_anchor="middle")
    svg.text(ox + 2, oy + 4, "TOP FACE (the player's side at the bottom)", class_="small")

    for hole in drill_holes(box):
        cx, cy = _on_page(hole, faces)
        group = svg.group()
        if hole.d:
            svg.add("circle", group, cx=cx, cy=cy, r=hole.d / 2, class_="hole")
            reach = hole.d / 2 + 2
            size = f"Ø{_n(hole.d)}"
        else:
            svg.add("rect", group, x=cx - hole.w / 2, y=cy - hole.h / 2, width=hole.w,
                    height=hole.h, rx=min(1.0, hole.h / 2), class_="hole")
            reach = max(hole.w, hole.h) / 2 + 2
            size = f"{_n(hole.w)} x {_n(hole.h)}"
        svg.line(cx - reach, cy, cx + reach, cy, group, class_="mark")
        svg.line(cx, cy - reach, cx, cy + reach, group, class_="mark")
        if hole.label == "M2":
            continue  # the OLED window's label names its screws
        label_y = cy + (hole.d / 2 if hole.d else hole.h / 2) + 3
        svg.text(cx, label_y, f"{hole.label} {size}", group, class_="small",
                 text_anchor="middle")
        svg.text(cx, label_y + 2.5, f"({_n(hole.x)}, {_n(hole.y)})", group, class_="small",
                 text_anchor="middle")
    svg.text(45.0 + ox, 40.0 + oy - OLED_HOLES[1] / 2 - 2.5,
             f"4 x Ø2.2 on {_n(OLED_HOLES[0])} x {_n(OLED_HOLES[1])}", class_="small",
             text_anchor="middle")

    # Overall dimensions of the top face, below and to the right of it.
    _dimension(svg, ox, oy + box.depth + 8, ox + box.width, oy + box.depth + 8,
               f"{_n(box.width)}")
    _dimension(svg, ox + box.width + box.height + 6, oy, ox + box.width + box.height + 6,
               oy + box.depth, f"{_n(box.depth)}")
    fs = [h for h in drill_holes(box) if h.label.startswith("FS")]
    _dimension(svg, ox + fs[0].x, oy + fs[0].y + 16, ox + fs[1].x, oy + fs[0].y + 16,
               f"{_n(FOOTSWITCH_PITCH)}")

    # The scale bar: exactly 100 user units, which the document's size makes 100 mm.
    bx, by = 20.0, page_h - 12
    svg.line(bx, by, bx + 100, by, id="scale-bar", class_="bar")
    for k in range(11):
        tick = 3.0 if k % 5 == 0 else 1.5
        svg.line(bx + 10 * k, by - tick, bx + 10 * k, by, class_="mark")
    svg.text(bx + 50, by + 4, "100 mm: measure this after printing", class_="small",
             text_anchor="middle")
    svg.text(bx + 110, by - 2, "Coordinates (x, y) in mm. Top: from the left and back edges. "
             "Walls: along the wall, then down from the top face.", class_="small")
    svg.text(bx + 110, by + 1.5, "Centre-punch each cross, pilot with 3 mm, then step up. "
             "Check part clearances inside before drilling.", class_="small")
    return svg.tostring()


def _on_page(hole: Hole, faces: dict[str, tuple[float, float, float, float]]
             ) -> tuple[float, float]:
    """A hole's centre on the page: walls are unfolded away from the top face."""
    x, y, w, h = faces[hole.face]
    if hole.face == "top":
        return x + hole.x, y + hole.y
    if hole.face == "back":
        return x + hole.x, y + h - hole.y
    if hole.face == "left":
        return x + w - hole.y, y + hole.x
    return x + hole.y, y + hole.x


def _dimension(svg: _Svg, x1: float, y1: float, x2: float, y2: float, text: str) -> None:
    group = svg.group()
    svg.line(x1, y1, x2, y2, group, class_="dim")
    horizontal = abs(y2 - y1) < abs(x2 - x1)
    for x, y, sign in ((x1, y1, 1), (x2, y2, -1)):
        if horizontal:
            svg.line(x, y - 1.5, x, y + 1.5, group, class_="dim")
            svg.add("polygon", group, points=f"{_n(x)},{_n(y)} {_n(x + sign * 1.6)},"
                    f"{_n(y - 0.6)} {_n(x + sign * 1.6)},{_n(y + 0.6)}", fill="#000")
        else:
            svg.line(x - 1.5, y, x + 1.5, y, group, class_="dim")
            svg.add("polygon", group, points=f"{_n(x)},{_n(y)} {_n(x - 0.6)},"
                    f"{_n(y + sign * 1.6)} {_n(x + 0.6)},{_n(y + sign * 1.6)}", fill="#000")
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    if horizontal:
        svg.text(mx, my - 1, text, group, class_="small", text_anchor="middle")
    else:
        svg.text(mx + 1.2, my, text, group, class_="small")


# ---------------------------------------------------------------------- command line


def generate() -> dict[Path, str]:
    """Every generated file: path (under ``hw/``) -> its content."""
    out = {HW_DIR / f"wiring-{name}.svg": wiring_svg(builtin_pinmap(name))
           for name in builtin_boards()}
    out[HW_DIR / "drill-template.svg"] = drill_template_svg()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Write the drawings, or with ``--check`` report those that differ (exit status 1)."""
    parser = argparse.ArgumentParser(prog="python -m firmware.hwdocs", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing files that differ from the code")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate().items():
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        shown = path.relative_to(HW_DIR.parent)
        if args.check:
            stale.append(shown)
            print(f"{shown}: {'missing' if current is None else 'differs from the generator'}",
                  file=sys.stderr)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {shown}")
    if stale:
        print("run: python -m firmware.hwdocs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
