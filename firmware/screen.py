"""What the pedal's 128x64 OLED shows: pure drawing with Pillow, no luma.

Everything a frame depends on is one :class:`View`; :func:`render` turns it into a 1-bit
128x64 image and nothing else, so a test (or ``ouro bench pedal``) draws screens without a
display, and :mod:`firmware.display` only pushes the image to a luma device.

Which screen shows, first match wins:

1. the pairing code (``View.pairing_code``), because the musician asked for it;
2. an alert (``View.alert``), large and inverted; ``"HEADLINE\\ndetail"`` puts the
   detail in small type under the headline (with no status and no detail, the detail is
   "reconnecting...");
3. "ENGINE UNREACHABLE" when there is no status (``View.status is None``);
4. a menu (``View.menu``);
5. the performance screen.

A toast (``View.message``) is drawn over the bottom of any of them.

The fonts are pixel fonts defined as data in this module (5x7 with one descender row, and
3x5 capitals), drawn by pasting cached glyph masks; large text is the same glyphs scaled by
an integer factor with NEAREST. Nothing depends on system fonts or anti-aliasing, so the
reference images in ``tests/firmware/screens/`` are exact on any machine.

>>> img = render(View(status=None))
>>> img.size, img.mode
((128, 64), '1')
>>> alerts_of({"jack": {"state": "lost", "lost_reason": "server shut down"}})
['JACK LOST\\nserver shut down']
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image, ImageDraw

__all__ = [
    "HEIGHT",
    "WIDTH",
    "Menu",
    "PixelFont",
    "View",
    "alerts_of",
    "bench_render",
    "busy_status",
    "cell_name",
    "menu_window",
    "render",
]

WIDTH = 128
HEIGHT = 64

# ------------------------------------------------------------------------------ fonts

# One glyph per line: the character, then its rows left to right ('#' lit). Rows may be
# fewer than the font's height (the rest are blank); all rows of a glyph have one width,
# which is its advance minus the spacing, so the fonts are proportional except for the
# digits, which share one width so that a running counter does not jitter.
_FONT_5X7 = r"""
A .###. #...# #...# ##### #...# #...# #...#
B ####. #...# #...# ####. #...# #...# ####.
C .###. #...# #.... #.... #.... #...# .###.
D ####. #...# #...# #...# #...# #...# ####.
E ##### #.... #.... ####. #.... #.... #####
F ##### #.... #.... ####. #.... #.... #....
G .###. #...# #.... #.### #...# #...# .####
H #...# #...# #...# ##### #...# #...# #...#
I ### .#. .#. .#. .#. .#. ###
J ..### ...#. ...#. ...#. ...#. #..#. .##..
K #...# #..#. #.#.. ##... #.#.. #..#. #...#
L #.... #.... #.... #.... #.... #.... #####
M #...# ##.## #.#.# #.#.# #...# #...# #...#
N #...# #...# ##..# #.#.# #..## #...# #...#
O .###. #...# #...# #...# #...# #...# .###.
P ####. #...# #...# ####. #.... #.... #....
Q .###. #...# #...# #...# #.#.# #..#. .##.#
R ####. #...# #...# ####. #.#.. #..#. #...#
S .#### #.... #.... .###. ....# ....# ####.
T ##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..
U #...# #...# #...# #...# #...# #...# .###.
V #...# #...# #...# #...# #...# .#.#. ..#..
W #...# #...# #...# #.#.# #.#.# #.#.# .#.#.
X #...# #...# .#.#. ..#.. .#.#. #...# #...#
Y #...# #...# .#.#. ..#.. ..#.. ..#.. ..#..
Z ##### ....# ...#. ..#.. .#... #.... #####
a ..... ..... .###. ....# .#### #...# .####
b #.... #.... ####. #...# #...# #...# ####.
c .... .... .### #... #... #... .###
d ....# ....# .#### #...# #...# #...# .####
e ..... ..... .###. #...# ##### #.... .###.
f ..## .#.. #### .#.. .#.. .#.. .#..
g ..... ..... .#### #...# #...# .#### ....# .###.
h #.... #.... ####. #...# #...# #...# #...#
i # . # # # # #
j ..# ... ..# ..# ..# ..# ..# ##.
k #... #... #..# #.#. ##.. #.#. #..#
l #. #. #. #. #. #. .#
m ..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#
n ..... ..... ####. #...# #...# #...# #...#
o ..... ..... .###. #...# #...# #...# .###.
p ..... ..... ####. #...# #...# ####. #.... #....
q ..... ..... .#### #...# #...# .#### ....# ....#
r .... .... #.## ##.. #... #... #...
s ..... ..... .#### #.... .###. ....# ####.
t .#.. .#.. #### .#.. .#.. .#.. ..##
u ..... ..... #...# #...# #...# #..## .##.#
v ..... ..... #...# #...# #...# .#.#. ..#..
w ..... ..... #...# #...# #.#.# #.#.# .#.#.
x ..... ..... #...# .#.#. ..#.. .#.#. #...#
y ..... ..... #...# #...# #...# .#### ....# .###.
z ..... ..... ##### ...#. ..#.. .#... #####
0 .###. #...# #...# #...# #...# #...# .###.
1 ..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.
2 .###. #...# ....# ...#. ..#.. .#... #####
3 ##### ...#. ..#.. ...#. ....# #...# .###.
4 ...#. ..##. .#.#. #..#. ##### ...#. ...#.
5 ##### #.... ####. ....# ....# #...# .###.
6 ..##. .#... #.... ####. #...# #...# .###.
7 ##### ....# ...#. ..#.. .#... .#... .#...
8 .###. #...# #...# .###. #...# #...# .###.
9 .###. #...# #...# .#### ....# ...#. .##..
. . . . . . . #
, .. .. .. .. .. .# #.
: . . # . . # .
; .. .. .# .. .. .# #.
! # # # # # . #
? .###. #...# ....# ...#. ..#.. ..... ..#..
- .... .... .... #### .... .... ....
+ ..... ..#.. ..#.. ##### ..#.. ..#.. .....
/ ....# ....# ...#. ..#.. .#... #.... #....
\ #.... #.... .#... ..#.. ...#. ....# ....#
% ##..# ##..# ...#. ..#.. .#... #..## #..##
( ..# .#. #.. #.. #.. .#. ..#
) #.. .#. ..# ..# ..# .#. #..
[ ### #.. #.. #.. #.. #.. ###
] ### ..# ..# ..# ..# ..# ###
< ...# ..#. .#.. #... .#.. ..#. ...#
> #... .#.. ..#. ...# ..#. .#.. #...
= ..... ..... ##### ..... ##### ..... .....
_ ..... ..... ..... ..... ..... ..... #####
' # # . . . . .
" #.# #.# ... ... ... ... ...
# .#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.
* ..... ..#.. #.#.# .###. #.#.# ..#.. .....
& .##.. #..#. #.#.. .#... #.#.# #..#. .##.#
@ .###. #...# #.### #.#.# #.### #.... .####
^ ..#.. .#.#. #...# ..... ..... ..... .....
| # # # # # # #
"""

_FONT_3X5 = r"""
A .#. #.# ### #.# #.#
B ##. #.# ##. #.# ##.
C .## #.. #.. #.. .##
D ##. #.# #.# #.# ##.
E ### #.. ##. #.. ###
F ### #.. ##. #.. #..
G .## #.. #.# #.# .##
H #.# #.# ### #.# #.#
I ### .#. .#. .#. ###
J ..# ..# ..# #.# .#.
K #.# #.# ##. #.# #.#
L #.. #.. #.. #.. ###
M #...# ##.## #.#.# #...# #...#
N #..# ##.# #.## #..# #..#
O .#. #.# #.# #.# .#.
P ##. #.# ##. #.. #..
Q .#. #.# #.# ##. .##
R ##. #.# ##. #.# #.#
S .## #.. .#. ..# ##.
T ### .#. .#. .#. .#.
U #.# #.# #.# #.# ###
V #.# #.# #.# #.# .#.
W #...# #...# #.#.# ##.## #...#
X #.# #.# .#. #.# #.#
Y #.# #.# .#. .#. .#.
Z ### ..# .#. #.. ###
0 ### #.# #.# #.# ###
1 .#. ##. .#. .#. ###
2 ### ..# ### #.. ###
3 ### ..# .## ..# ###
4 #.# #.# ### ..# ..#
5 ### #.. ### ..# ###
6 ### #.. ### #.# ###
7 ### ..# ..# .#. .#.
8 ### #.# ### #.# ###
9 ### #.# ### ..# ###
. . . . . #
, .. .. .. .# #.
: . # . # .
! # # # . #
? ### ..# .## ... .#.
- ... ... ### ... ...
+ ... .#. ### .#. ...
/ ..# ..# .#. #.. #..
% #.# ..# .#. #.. #.#
( .# #. #. #. .#
) #. .# .# .# #.
< ..# .#. #.. .#. ..#
> #.. .#. ..# .#. #..
= ... ### ... ### ...
_ ... ... ... ... ###
' # # . . .
"""


class PixelFont:
    """A bitmap font from rows of ``#`` and ``.`` (see ``_FONT_5X7`` in this module).

    Glyph masks are built once per scale and cached; drawing pastes them, so text costs a
    few microseconds a character. Characters the font lacks are drawn as ``?`` (after
    trying the other case, so the capitals-only 3x5 font shows lowercase as capitals).

    >>> FONT.text_width("12.3")
    19
    >>> FONT.text_width("12.3", scale=3)
    57
    """

    def __init__(self, data: str, height: int, space: int, spacing: int = 1) -> None:
        self.height = height
        self.spacing = spacing
        self._rows: dict[str, tuple[str, ...]] = {" ": ("." * space,)}
        for line in data.strip("\n").splitlines():
            ch, *rows = line.split(" ")
            if len(rows) > height or len({len(r) for r in rows}) != 1:
                raise ValueError(f"glyph {ch!r}: rows {rows} do not fit {height} rows "
                                 f"of one width")
            self._rows[ch] = tuple(rows)
        self._masks: dict[tuple[str, int], Image.Image] = {}

    def _glyph(self, ch: str) -> str:
        if ch in self._rows:
            return ch
        for other in (ch.upper(), ch.lower()):
            if other in self._rows:
                return other
        return "?"

    def glyph_width(self, ch: str) -> int:
        """The glyph's width in pixels at scale 1, without the spacing after it."""
        return len(self._rows[self._glyph(ch)][0])

    def text_width(self, text: str, scale: int = 1, spacing: int | None = None) -> int:
        """Pixels ``text`` covers at ``scale`` (``spacing`` between glyphs defaults to the
        font's spacing times the scale)."""
        if not text:
            return 0
        gap = self.spacing * scale if spacing is None else spacing
        return sum(self.glyph_width(c) * scale for c in text) + gap * (len(text) - 1)

    def mask(self, ch: str, scale: int = 1) -> Image.Image:
        """The glyph's 1-bit mask at ``scale`` (NEAREST, so pixels stay square and sharp)."""
        key = (self._glyph(ch), scale)
        found = self._masks.get(key)
        if found is None:
            rows = self._rows[key[0]]
            img = Image.new("1", (len(rows[0]), self.height), 0)
            img.putdata([1 if ch == "#" else 0
                         for row in rows + ("." * len(rows[0]),) * (self.height - len(rows))
                         for ch in row])
            if scale > 1:
                img = img.resize((img.width * scale, img.height * scale),
                                 Image.Resampling.NEAREST)
            found = self._masks[key] = img
        return found

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, *,
             fill: int = 1, scale: int = 1, spacing: int | None = None) -> int:
        """Draw ``text`` with its top-left corner at ``xy``; returns the x after it."""
        x, y = xy
        gap = self.spacing * scale if spacing is None else spacing
        for ch in text:
            m = self.mask(ch, scale)
            draw.bitmap((x, y), m, fill=fill)
            x += m.width + gap
        return x - gap if text else x


FONT = PixelFont(_FONT_5X7, height=8, space=3)  # 5x7 capitals, one descender row
SMALL = PixelFont(_FONT_3X5, height=5, space=2)  # 3x5 capitals and digits

# ------------------------------------------------------------------------------- view


@dataclass(frozen=True)
class Menu:
    """A list to pick from: ``items`` on the left, ``values`` (if any) right-aligned, the
    item at ``index`` highlighted; the list scrolls to keep it in view (see
    :func:`menu_window`)."""

    title: str
    items: tuple[str, ...]
    index: int = 0
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class View:
    """Everything a frame depends on; equal views render equal images.

    ``status`` is the engine's status document (``None``: the engine is unreachable);
    ``selected`` the selected cell (column, row) as the pedal knows it; ``mode`` the
    footswitch map's mode name; ``alert`` an alert from the pedal process itself
    (``"HEADLINE"`` or ``"HEADLINE\\ndetail"``); ``blink`` the phase of blinking elements
    (the pedal toggles it); ``pairing_code`` a code to type into the companion app;
    ``message`` a short toast shown at the bottom.
    """

    status: Mapping[str, Any] | None = None
    selected: tuple[int, int] = (0, 0)
    mode: str = ""
    menu: Menu | None = None
    alert: str | None = None
    blink: bool = True
    pairing_code: str | None = None
    message: str | None = None


class _Canvas(Protocol):
    """What the drawing helpers need: an image and its ImageDraw."""

    img: Image.Image
    draw: ImageDraw.ImageDraw


@dataclass
class _Frame:
    img: Image.Image
    draw: ImageDraw.ImageDraw = field(init=False)

    def __post_init__(self) -> None:
        self.draw = ImageDraw.Draw(self.img)


# ------------------------------------------------------------------- status accessors
# The status comes over the network from another process and may be partial, from an
# older engine or plain wrong: every read checks its type and falls back.


def _map(d: Any, key: str) -> Mapping[str, Any]:
    v = d.get(key) if isinstance(d, Mapping) else None
    return v if isinstance(v, Mapping) else {}


def _num(d: Any, key: str, default: float | None = None) -> float | None:
    v = d.get(key) if isinstance(d, Mapping) else None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return default
    return float(v)


def _str(d: Any, key: str) -> str | None:
    v = d.get(key) if isinstance(d, Mapping) else None
    return v if isinstance(v, str) else None


def _list(d: Any, key: str) -> Sequence[Any]:
    v = d.get(key) if isinstance(d, Mapping) else None
    return v if isinstance(v, list | tuple) else ()


def cell_name(column: int, row: int) -> str:
    """The name the pedal shows for a cell: the column as a letter, the row from 1.

    >>> cell_name(1, 0), cell_name(4, 4), cell_name(30, 2)
    ('B1', 'E5', 'C31R3')
    """
    if 0 <= column < 26:
        return f"{chr(ord('A') + column)}{row + 1}"
    return f"C{column + 1}R{row + 1}"


# ------------------------------------------------------------------------------ alerts

_NO_SPACE = ("enospc", "no space", "disk space", "disk full")


def alerts_of(status: Mapping[str, Any] | None) -> list[str]:
    """The alerts the engine's status calls for, most serious first, each
    ``"HEADLINE\\ndetail"`` (detail optional). ``None`` (no status) is the engine being
    unreachable.

    >>> alerts_of(None)
    ['ENGINE UNREACHABLE\\nreconnecting...']
    >>> alerts_of({"sync": "midi", "midi": {"clock_in": {"state": "waiting"}}})
    ['NO MIDI CLOCK\\nsync is MIDI; nothing received']
    >>> alerts_of({"recorder": {"running": False, "reason": "stopped"}})
    []
    """
    if status is None:
        return ["ENGINE UNREACHABLE\nreconnecting..."]
    out: list[str] = []
    jack = _map(status, "jack")
    state = _str(jack, "state")
    if state is not None and state != "running":
        reason = _str(jack, "lost_reason") or f"JACK client {state}"
        out.append(f"JACK LOST\n{reason}")
    recorder = _map(status, "recorder")
    reason = _str(recorder, "reason") or ""
    problem = _str(_map(status, "session"), "problem") or ""
    if any(s in problem.lower() for s in _NO_SPACE):
        out.append(f"DISK FULL\nsession not saved: {problem}")
    elif problem:
        out.append(f"SESSION NOT SAVED\n{problem}")
    if any(s in reason.lower() for s in _NO_SPACE):
        out.append(f"DISK LOW\nrecorder {reason}")
    elif reason.startswith("stopped:") and recorder.get("running") is not True:
        out.append(f"RECORDER STOPPED\n{reason.removeprefix('stopped:').strip()}")
    if _str(status, "sync") == "midi":
        clock = _str(_map(_map(status, "midi"), "clock_in"), "state") or ""
        if clock.startswith("lost"):
            out.append("MIDI CLOCK LOST\nkeeping the last tempo")
        elif clock in ("waiting", "off"):
            out.append("NO MIDI CLOCK\nsync is MIDI; nothing received")
    if _map(status, "pool").get("exhausted") is True:
        out.append("LOOP MEMORY FULL\nrecordings end early")
    return out


# ------------------------------------------------------------------------------- menu


def menu_window(count: int, index: int, visible: int) -> tuple[int, int]:
    """The items ``[first, last)`` a menu of ``count`` items shows in ``visible`` rows with
    ``index`` selected: the selection is kept in the middle row where the ends allow, so
    the window depends only on the index (the pedal keeps no scroll state).

    >>> menu_window(3, 2, 6), menu_window(10, 0, 6), menu_window(10, 5, 6)
    ((0, 3), (0, 6), (3, 9))
    >>> menu_window(10, 9, 6)
    (4, 10)
    """
    if count <= visible:
        return 0, max(count, 0)
    index = min(max(index, 0), count - 1)
    first = min(max(index - (visible - 1) // 2, 0), count - visible)
    return first, first + visible


# ------------------------------------------------------------------------- cell glyphs

# 7x7, one per state; "overdub" is a recording in a column that already has a length.
_GLYPH_ROWS = {
    "empty": ("", "", "", "...#", "", "", ""),
    "idle": (".#####.", "#.....#", "#.....#", "#.....#", "#.....#", "#.....#", ".#####."),
    "playing": ("##", "####", "######", "#######", "######", "####", "##"),
    "recording": ("..###", ".#####", "#######", "#######", "#######", ".#####", "..###"),
    "overdub": ("..###", ".#...#", "#.###.#", "#.###.#", "#.###.#", ".#...#", "..###"),
    "solo": ("#######", "#.#####", "#...###", "#.....#", "#...###", "#.#####", "#######"),
    "unknown": ("..###", ".#...#", ".....#", "....#", "...#", "", "...#"),
}


def _glyph_mask(rows: tuple[str, ...]) -> Image.Image:
    img = Image.new("1", (7, 7), 0)
    img.putdata([1 if (x < len(r) and r[x] == "#") else 0 for r in rows for x in range(7)])
    return img


_GLYPHS = {name: _glyph_mask(rows) for name, rows in _GLYPH_ROWS.items()}
_STATE_GLYPH = {"empty": "empty", "idle": "idle", "stopped": "idle", "playing": "playing",
                "recording": "recording", "overdubbing": "overdub", "solo": "solo"}


def _cell_glyph(state: Any, column_has_length: bool) -> str:
    name = _STATE_GLYPH.get(state, "unknown") if isinstance(state, str) else "unknown"
    if name == "recording" and column_has_length:
        return "overdub"
    return name


# ------------------------------------------------------------------------------ drawing


def _text_fit(font: PixelFont, text: str, width: int) -> str:
    """``text`` cut (with '..') to fit ``width`` pixels at scale 1."""
    if font.text_width(text) <= width:
        return text
    while text and font.text_width(text + "..") > width:
        text = text[:-1]
    return text + ".."


def _wrap(font: PixelFont, text: str, width: int, scale: int = 1,
          spacing: int | None = None) -> list[str]:
    """Greedy word wrap; a word longer than the line is cut."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split():
            cand = f"{line} {word}" if line else word
            if font.text_width(cand, scale, spacing) <= width:
                line = cand
                continue
            if line:
                lines.append(line)
            while font.text_width(word, scale, spacing) > width and len(word) > 1:
                word = word[:-1]
            line = word
        lines.append(line)
    return lines


def _inverted_label(f: _Canvas, x: int, y: int, text: str, font: PixelFont = SMALL) -> int:
    """Small text in a lit box (for states that are "on"); returns the x after it."""
    w = font.text_width(text)
    f.draw.rectangle((x, y, x + w + 1, y + font.height + 1), fill=1)
    font.draw(f.draw, (x + 1, y + 1), text, fill=0)
    return x + w + 2


def _draw_toast(f: _Canvas, text: str) -> None:
    text = _text_fit(FONT, text, WIDTH - 6)
    w = FONT.text_width(text)
    top = HEIGHT - 12
    f.draw.rectangle((0, top - 1, WIDTH - 1, HEIGHT - 1), fill=0)  # a clear edge above it
    f.draw.rectangle((0, top, WIDTH - 1, HEIGHT - 1), fill=1)
    FONT.draw(f.draw, ((WIDTH - w) // 2, top + 2), text, fill=0)


def _draw_alert(f: _Canvas, text: str, blink: bool) -> None:
    headline, _, detail = text.partition("\n")
    f.draw.rectangle((0, 0, WIDTH - 1, HEIGHT - 1), fill=1)
    # a warning triangle, drawn black on the lit screen
    f.draw.polygon(((2, 14), (10, 1), (18, 14)), fill=0)
    f.draw.rectangle((9, 5, 11, 9), fill=1)
    f.draw.rectangle((9, 11, 11, 12), fill=1)
    inner = WIDTH - 4
    head_lines: list[str] = []
    scale, spacing = 1, 1
    for scale, spacing in ((2, 2), (2, 1), (1, 1)):
        head_lines = _wrap(FONT, headline.upper(), inner, scale, spacing)
        whole = all(FONT.text_width(w, scale, spacing) <= inner for w in headline.split())
        if len(head_lines) <= 2 and whole:
            break
    y = 18 if scale == 2 else 20
    line_h = FONT.height * scale + 1
    for line in head_lines[:2]:
        w = FONT.text_width(line, scale, spacing)
        FONT.draw(f.draw, ((WIDTH - w) // 2, y), line, fill=0, scale=scale, spacing=spacing)
        y += line_h
    # the detail in what room is left, in the 5x7 font, cut at the last line
    room = max((HEIGHT - 1 - y) // 9, 0)
    lines = _wrap(FONT, detail, inner) if detail else []
    if len(lines) > room:
        lines = lines[:room]
        if lines:
            lines[-1] = _text_fit(FONT, lines[-1] + " ...", inner)
    for line in lines:
        FONT.draw(f.draw, ((WIDTH - FONT.text_width(line)) // 2, y + 1), line, fill=0)
        y += 9
    if blink:  # a blinking corner so a frozen pedal is told apart from a steady alert
        f.draw.rectangle((WIDTH - 5, 1, WIDTH - 2, 4), fill=0)


def _draw_pairing(f: _Canvas, code: str) -> None:
    FONT.draw(f.draw, (0, 0), "PAIR COMPANION")
    f.draw.line((0, 9, WIDTH - 1, 9), fill=1)
    scale = 1
    for s in (4, 3, 2):
        if FONT.text_width(code, s) <= WIDTH - 4:
            scale = s
            break
    w = FONT.text_width(code, scale)
    h = 7 * scale
    y = 12 + (40 - h) // 2
    FONT.draw(f.draw, ((WIDTH - w) // 2, y), code, scale=scale)
    hint = "enter it in the app"
    FONT.draw(f.draw, ((WIDTH - FONT.text_width(hint)) // 2, HEIGHT - 9), hint)


def _draw_menu(f: _Canvas, menu: Menu) -> None:
    f.draw.rectangle((0, 0, WIDTH - 1, 8), fill=1)
    FONT.draw(f.draw, (2, 1), _text_fit(FONT, menu.title, WIDTH - 4), fill=0)
    row_h, top, visible = 9, 10, 6
    count = len(menu.items)
    first, last = menu_window(count, menu.index, visible)
    scroll = count > visible
    right = WIDTH - 1 - (4 if scroll else 0)
    for i in range(first, last):
        y = top + (i - first) * row_h
        on = i == menu.index
        if on:
            f.draw.rectangle((0, y, right, y + row_h - 1), fill=1)
        ink = 0 if on else 1
        value = menu.values[i] if i < len(menu.values) else ""
        value = _text_fit(FONT, value, (right - 4) // 2) if value else ""
        vw = FONT.text_width(value)
        label = _text_fit(FONT, menu.items[i], right - 4 - (vw + 4 if value else 0))
        FONT.draw(f.draw, (2, y + 1), label, fill=ink)
        if value:
            FONT.draw(f.draw, (right - 1 - vw, y + 1), value, fill=ink)
    if scroll:
        track = HEIGHT - top
        thumb = max(track * visible // count, 4)
        pos = top + (track - thumb) * first // (count - visible)
        f.draw.line((WIDTH - 2, top, WIDTH - 2, HEIGHT - 1), fill=1)
        f.draw.rectangle((WIDTH - 3, pos, WIDTH - 1, pos + thumb - 1), fill=1)


# -- the performance screen

_GRID_PITCH = 11  # 7x7 glyph, a pixel of air, the selection outline


def _bar_beat(status: Mapping[str, Any]) -> str:
    count_in = _map(status, "count_in")
    left = _num(count_in, "beats_left", 0) or 0
    if count_in.get("on") is True and left > 0:
        return f"-{int(left)}"
    beat = _num(status, "beat")
    if beat is None:
        return "-.-"
    bpb = max(int(_num(status, "beats_per_bar", 4) or 4), 1)
    in_bar = _num(status, "beat_in_bar")
    beat_i = int(beat)
    b = int(in_bar) if in_bar is not None else beat_i % bpb
    return f"{beat_i // bpb + 1}.{b + 1}"


def _tempo(status: Mapping[str, Any]) -> str:
    tempo = _num(status, "tempo")
    if tempo is None:
        return "---"
    return f"{tempo:.0f}" if abs(tempo - round(tempo)) < 0.05 else f"{tempo:.1f}"


def _input_peaks(status: Mapping[str, Any]) -> list[float | None]:
    """Input peaks in dBFS per channel (``None`` is silence): the engine's own input meter
    when it has one, else the session recorder's peaks of its ``in_*`` channels."""
    peaks = status.get("input_peak_dbfs")
    if isinstance(peaks, list | tuple):
        chosen: Sequence[Any] = peaks
    else:
        rec = _map(status, "recorder")
        names = _list(rec, "channels")
        dbfs = _list(rec, "peaks_dbfs")
        chosen = [p for n, p in zip(names, dbfs, strict=False)
                  if isinstance(n, str) and n.startswith("in")]
    return [float(p) if isinstance(p, int | float) and not isinstance(p, bool) else None
            for p in chosen[:2]]


_METER_FLOOR_DB = -48.0


def _draw_meter(f: _Canvas, x: int, y: int, width: int, peaks: list[float | None]) -> None:
    """Horizontal bars, one 2-pixel bar per channel, -48..0 dBFS; a clip box at the end
    lights at 0 dBFS and above."""
    d = f.draw
    bar_w = width - 4
    for i, p in enumerate(peaks or [None]):
        yy = y + i * 3
        if p is not None and p > _METER_FLOOR_DB:
            n = round(bar_w * min(1.0, (p - _METER_FLOOR_DB) / -_METER_FLOOR_DB))
            if n > 0:
                d.rectangle((x, yy, x + n - 1, yy + 1), fill=1)
        if p is not None and p >= -0.1:
            d.rectangle((x + width - 2, yy, x + width - 1, yy + 1), fill=1)
    # ticks at -24, -12 and -6 dBFS under the bars
    base = y + 3 * max(len(peaks), 1) - 1
    for db in (-24.0, -12.0, -6.0):
        tx = x + round(bar_w * (db - _METER_FLOOR_DB) / -_METER_FLOOR_DB)
        d.point((tx, base), fill=1)
    d.point((x, base), fill=1)
    d.point((x + bar_w, base), fill=1)


def _draw_grid(f: _Canvas, status: Mapping[str, Any], selected: tuple[int, int],
               blink: bool) -> bool:
    """The matrix, right-aligned; returns whether any cell is recording (or set to)."""
    d = f.draw
    cells = _list(status, "cells")
    columns = _list(status, "columns")
    ncols = len(cells)
    nrows = max((len(c) for c in cells if isinstance(c, list | tuple)), default=0)
    if ncols == 0 or nrows == 0:
        return False
    pitch = max(min(_GRID_PITCH, 56 // ncols, 58 // nrows), 3)
    x0 = WIDTH - ncols * pitch
    y0 = 3
    recording = False
    for c, col_cells in enumerate(cells):
        col = columns[c] if c < len(columns) and isinstance(columns[c], Mapping) else {}
        length = _num(col, "length_frames", 0) or 0
        pos = _num(col, "position", 0) or 0
        running = col.get("running") is True
        cx = x0 + c * pitch
        # the column's progress above it: the fraction of the loop played, or a dotted
        # bar while its first loop is being recorded (no length yet)
        bar_w = pitch - 2
        if running and length > 0:
            n = min(max(round(bar_w * (pos % length) / length), 1), bar_w)
            d.rectangle((cx + 1, 0, cx + n, 1), fill=1)
        elif running:
            for px in range(cx + 1, cx + bar_w + 1, 2):
                d.point((px, 0), fill=1)
                d.point((px + 1, 1), fill=1)
        if not isinstance(col_cells, list | tuple):
            continue
        for r, cell in enumerate(col_cells):
            cy = y0 + r * pitch
            state = cell.get("state") if isinstance(cell, Mapping) else None
            nxt = cell.get("next_state", state) if isinstance(cell, Mapping) else None
            shown = state
            if nxt != state:
                shown = nxt if blink else state
            if "recording" in (state, nxt) or "overdubbing" in (state, nxt):
                recording = True
            glyph = _cell_glyph(shown, length > 0)
            if pitch >= 9:
                d.bitmap((cx + (pitch - 7) // 2, cy + (pitch - 7) // 2), _GLYPHS[glyph],
                         fill=1)
            else:  # small matrices: a filled, hollow or dotted square per cell
                s = pitch - 2
                box = (cx + 1, cy + 1, cx + s, cy + s)
                if glyph in ("playing", "solo", "recording", "overdub"):
                    d.rectangle(box, fill=1)
                elif glyph != "empty":
                    d.rectangle(box, outline=1)
                else:
                    d.point((cx + pitch // 2, cy + pitch // 2), fill=1)
    sc, sr = selected
    if 0 <= sc < ncols and 0 <= sr < nrows:
        sx, sy = x0 + sc * pitch, y0 + sr * pitch
        d.rectangle((sx - 1, sy - 1, sx + pitch - 1, sy + pitch - 1), outline=1)
    return recording


def _draw_performance(f: _Canvas, view: View, status: Mapping[str, Any]) -> None:
    d = f.draw
    blink = view.blink
    recording = _draw_grid(f, status, view.selected, blink)
    left_w = 70

    # bar.beat as large as fits the left side
    bb = _bar_beat(status)
    scale = 3 if FONT.text_width(bb, 3) <= left_w else 2
    FONT.draw(d, (0, 0 if scale == 3 else 4), bb, scale=scale)

    # the selected cell, twice size, and the REC indicator
    col, row = view.selected
    FONT.draw(d, (0, 25), cell_name(col, row), scale=2)
    if recording:
        dub = any(_cell_glyph(c.get("state"), True) == "overdub"
                  for cs in _list(status, "cells") if isinstance(cs, list | tuple)
                  for c in cs if isinstance(c, Mapping))
        if blink:
            d.ellipse((36, 27, 46, 37), fill=1)
        SMALL.draw(d, (50, 30), "DUB" if dub and not _any_first(status) else "REC")

    # tempo and sync
    x = FONT.draw(d, (0, 41), _tempo(status))
    SMALL.draw(d, (x + 2, 43), "BPM")
    sync = _str(status, "sync")
    sync_text = {"internal": "INT", "midi": "MIDI"}.get(sync or "", (sync or "?")[:4].upper())
    if sync == "midi":  # following another clock is worth noticing: inverted
        _inverted_label(f, left_w - SMALL.text_width(sync_text) - 1, 42, sync_text)
    else:
        SMALL.draw(d, (left_w - SMALL.text_width(sync_text), 43), sync_text)

    # input level
    _draw_meter(f, 0, 50, left_w, _input_peaks(status))

    # the bottom line, under the grid too: mode, click, xruns, "!" when the status
    # carries an alert
    y = HEIGHT - 5
    if view.mode:
        SMALL.draw(d, (0, y), _text_fit(SMALL, view.mode.upper(), 30))
    click = _map(status, "click").get("on") is True
    SMALL.draw(d, (34, y), "CLK ON" if click else "CLK OFF")
    xruns = _num(status, "xruns")
    if xruns:
        text = f"XRUN {int(xruns)}"
        SMALL.draw(d, (118 - SMALL.text_width(text), y), text)
    if blink and alerts_of(status):
        SMALL.draw(d, (WIDTH - 2, y), "!")


def _any_first(status: Mapping[str, Any]) -> bool:
    """Whether a column's first loop is being recorded (recording in a column with no
    length yet)."""
    columns = _list(status, "columns")
    for c, cs in enumerate(_list(status, "cells")):
        col = columns[c] if c < len(columns) else {}
        if (_num(col, "length_frames", 0) or 0) > 0 or not isinstance(cs, list | tuple):
            continue
        if any(isinstance(cell, Mapping) and cell.get("state") == "recording" for cell in cs):
            return True
    return False


def _draw_error(f: _Canvas, exc: BaseException) -> None:
    FONT.draw(f.draw, (0, 0), "DISPLAY ERROR")
    for i, line in enumerate(_wrap(FONT, type(exc).__name__, WIDTH)[:5]):
        FONT.draw(f.draw, (0, 12 + 9 * i), line)


def render(view: View, *, strict: bool = False) -> Image.Image:
    """The frame for ``view``: a new mode ``"1"`` image of 128x64.

    It never raises on an odd status (wrong types, missing keys, unknown states, other
    matrix sizes): the screen shows what it can. Should drawing fail anyway, the frame
    says "DISPLAY ERROR" and names the exception, unless ``strict`` (for tests) re-raises
    it.
    """
    frame = _Frame(Image.new("1", (WIDTH, HEIGHT), 0))
    try:
        if view.pairing_code:
            _draw_pairing(frame, view.pairing_code)
        elif view.alert:
            alert = view.alert
            if view.status is None and "\n" not in alert:
                alert += "\nreconnecting..."  # with no status the link is always retrying
            _draw_alert(frame, alert, view.blink)
        elif view.status is None:
            _draw_alert(frame, alerts_of(None)[0], view.blink)
        elif view.menu is not None:
            _draw_menu(frame, view.menu)
        else:
            _draw_performance(frame, view, view.status)
        if view.message:
            _draw_toast(frame, view.message)
    except Exception as exc:
        if strict:
            raise
        frame = _Frame(Image.new("1", (WIDTH, HEIGHT), 0))
        _draw_error(frame, exc)
    return frame.img


# ------------------------------------------------------------------------------ bench


def busy_status(step: int = 0) -> dict[str, Any]:
    """A status with everything on the performance screen busy (recording, overdubbing,
    queued cells, MIDI sync, xruns, input level), advanced by ``step`` frames of 1/30 s;
    for :func:`bench_render` and the tests."""
    states = [["playing", "playing", "idle", "empty", "empty"],
              ["playing", "overdubbing", "empty", "empty", "empty"],
              ["recording", "empty", "empty", "empty", "empty"],
              ["idle", "idle", "solo", "empty", "empty"],
              ["empty", "empty", "empty", "empty", "empty"]]
    nexts = {(0, 2): "playing", (3, 0): "playing", (0, 1): "idle"}
    lengths = [96000, 96000, 0, 192000, 0]
    frame = 243712 + step * 1600
    cells = [[{"state": "recording" if s == "overdubbing" else s,
               "next_state": nexts.get((c, r), "recording" if s == "overdubbing" else s),
               "volume": 1.0, "beats": 4 if s != "empty" else 0}
              for r, s in enumerate(col)] for c, col in enumerate(states)]
    return {
        "tempo": 120.0, "beats_per_bar": 4, "beat": 41 + step // 15,
        "beat_in_bar": (41 + step // 15) % 4, "sync": "midi", "selected": [1, 1],
        "click": {"on": True}, "xruns": 3,
        "columns": [{"beats": 4, "length_frames": n, "position": frame % n if n else frame,
                     "running": c != 4} for c, n in enumerate(lengths)],
        "cells": cells,
        "jack": {"state": "running"},
        "midi": {"clock_in": {"state": "following"}},
        "recorder": {"running": True, "reason": None},
        "input_peak_dbfs": [-12.0 - (step % 20), -3.0 + (step % 4)],
    }


class _Device(Protocol):
    def display(self, image: Image.Image) -> None: ...


def bench_render(frames: int = 1000, device: _Device | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Time :func:`render` of a busy performance view (and ``device.display(image)`` when a
    device is given, e.g. luma's dummy) over ``frames`` frames, each with a new status.

    Returns ``{"p50_ms", "p99_ms", "max_ms", "frames"}``.

    >>> sorted(bench_render(5))
    ['frames', 'max_ms', 'p50_ms', 'p99_ms']
    """
    statuses = [busy_status(i) for i in range(min(frames, 60))]
    times: list[float] = []
    for i in range(frames):
        view = View(status=statuses[i % len(statuses)], selected=(1, 1), mode="PLAY",
                    blink=bool(i // 8 % 2))
        t0 = clock()
        img = render(view)
        if device is not None:
            device.display(img)
        times.append((clock() - t0) * 1000.0)
    times.sort()
    if not times:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "frames": 0}
    return {"p50_ms": round(statistics.median(times), 3),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
            "max_ms": round(times[-1], 3), "frames": frames}
