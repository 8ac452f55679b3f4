"""The one command vocabulary of the looper, as data.

Every transport (OSC, the MIDI map, footswitch gestures, the offline performance script)
builds the same :class:`Command` through :func:`parse_mapping` or :func:`parse_args`, so a
command is added once, here.

>>> parse_mapping({"cmd": "volume", "column": 1, "row": 0, "value": 0.5}, columns=5, rows=5)
Command(name='volume', column=1, row=0, value=0.5, gain=1.0)
>>> parse_args("record", [0, 2], columns=5, rows=5).op == OP_RECORD
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rtcore.config import SYNC_SOURCES, TEMPO_MAX_BPM, TEMPO_MIN_BPM, VOLUME_MAX
from rtcore.errors import CommandError

# Opcodes: small ints so the audio thread compares ints, not strings.
OP_RECORD = 1
OP_PLAY = 2
OP_STOP = 3
OP_SOLO = 4
OP_CLEAR = 5
OP_UNDO = 6
OP_REDO = 7
OP_VOLUME = 8
OP_SELECT = 9
OP_TEMPO = 10
OP_TAP = 11
OP_CLICK = 12
OP_CLICK_VOLUME = 13
OP_MASTER_VOLUME = 14
OP_MONITOR = 15
OP_SYNC = 16
OP_CLOCK_OUT = 17
OP_COUNT_IN = 18

# Argument kinds
CELL = "cell"  # column:int, row:int
LEVEL = "level"  # value: float in [0, VOLUME_MAX]
SWITCH = "switch"  # value: 0 or 1
BPM = "bpm"  # value: float in [TEMPO_MIN_BPM, TEMPO_MAX_BPM]
SOURCE = "source"  # value: a name of SYNC_SOURCES, held as its index


@dataclass(frozen=True, slots=True)
class Spec:
    """What one command takes and how the engine applies it."""

    op: int
    args: tuple[str, ...]  # argument names, in OSC order
    quantized: bool  # True: takes effect at the next beat boundary
    help: str


VOCABULARY: dict[str, Spec] = {
    "record": Spec(OP_RECORD, ("column", "row"), True,
                   "start recording the cell; on a first recording, end it"),
    "play": Spec(OP_PLAY, ("column", "row"), True,
                 "play the cell's loop (ends a first recording, un-solos)"),
    "stop": Spec(OP_STOP, ("column", "row"), True,
                 "stop the cell; during a recording, cancel it"),
    "solo": Spec(OP_SOLO, ("column", "row"), True,
                 "play only this cell; every other cell is silent"),
    "clear": Spec(OP_CLEAR, ("column", "row"), True, "empty the cell (undo brings it back)"),
    "undo": Spec(OP_UNDO, ("column", "row"), True, "step back to the cell's previous take"),
    "redo": Spec(OP_REDO, ("column", "row"), True, "step forward again after undo"),
    "volume": Spec(OP_VOLUME, ("column", "row", "value"), False,
                   f"cell volume, 0..{VOLUME_MAX:g}, smoothed"),
    "select": Spec(OP_SELECT, ("column", "row"), False, "select the cell for the pedal"),
    "tempo": Spec(OP_TEMPO, ("value",), True,
                  f"tempo in BPM, {TEMPO_MIN_BPM:g}..{TEMPO_MAX_BPM:g}; only with no loops"),
    "tap": Spec(OP_TAP, (), False, "tap tempo: the average of the last taps sets the tempo"),
    "click": Spec(OP_CLICK, ("value",), False, "click on (1) or off (0)"),
    "click_volume": Spec(OP_CLICK_VOLUME, ("value",), False,
                         f"click volume, 0..{VOLUME_MAX:g}, smoothed"),
    "master_volume": Spec(OP_MASTER_VOLUME, ("value",), False,
                          f"master volume, 0..{VOLUME_MAX:g}, smoothed"),
    "monitor": Spec(OP_MONITOR, ("value", "gain"), False,
                    "input monitoring on (1) or off (0), with an optional gain (default 1)"),
    "sync": Spec(OP_SYNC, ("value",), False,
                 "where tempo and beat come from: internal, or an external MIDI clock (midi)"),
    "clock_out": Spec(OP_CLOCK_OUT, ("value",), False,
                      "send MIDI clock, Start/Stop/Continue and song position (1) or not (0)"),
    "count_in": Spec(OP_COUNT_IN, ("value",), False,
                     "one bar of click before a recording that starts from silence (1) or not"),
}

OPTIONAL_ARGS = {"gain"}
_VALUE_KIND = {
    "volume": LEVEL, "click_volume": LEVEL, "master_volume": LEVEL,
    "click": SWITCH, "monitor": SWITCH, "tempo": BPM, "sync": SOURCE,
    "clock_out": SWITCH, "count_in": SWITCH,
}
NAMES = {spec.op: name for name, spec in VOCABULARY.items()}


@dataclass(frozen=True, slots=True)
class Command:
    """One validated command. Build it with :func:`parse_mapping` or :func:`parse_args`."""

    name: str
    column: int = -1
    row: int = -1
    value: float = 0.0
    gain: float = 1.0

    @property
    def op(self) -> int:
        return VOCABULARY[self.name].op

    @property
    def quantized(self) -> bool:
        return VOCABULARY[self.name].quantized

    def to_mapping(self) -> dict[str, Any]:
        """The JSON form, as a performance script writes it."""
        out: dict[str, Any] = {"cmd": self.name}
        for arg in VOCABULARY[self.name].args:
            out[arg] = getattr(self, arg)
        if _VALUE_KIND.get(self.name) == SOURCE:
            out["value"] = SYNC_SOURCES[int(self.value)]
        return out


def parse_mapping(obj: Mapping[str, Any], *, columns: int, rows: int) -> Command:
    """A command from its JSON form ``{"cmd": name, "column": .., "row": .., "value": ..}``."""
    if not isinstance(obj, Mapping):
        raise CommandError(f"a command must be an object, got {type(obj).__name__}")
    name = obj.get("cmd")
    spec = _spec(name)
    assert isinstance(name, str)
    extra = sorted(set(obj) - {"cmd", *spec.args})
    if extra:
        raise CommandError(f"{name}: unexpected argument(s) {', '.join(map(repr, extra))}")
    missing = [a for a in spec.args if a not in obj and a not in OPTIONAL_ARGS]
    if missing:
        raise CommandError(f"{name}: missing argument(s) {', '.join(map(repr, missing))}")
    return _build(name, {a: obj[a] for a in spec.args if a in obj}, columns, rows)


def parse_args(name: str, args: Sequence[Any], *, columns: int, rows: int) -> Command:
    """A command from positional arguments, as OSC delivers them: ``/ouro/volume 0 1 0.5``."""
    spec = _spec(name)
    required = [a for a in spec.args if a not in OPTIONAL_ARGS]
    if not len(required) <= len(args) <= len(spec.args):
        want = " ".join(spec.args) or "no arguments"
        raise CommandError(f"{name}: takes {want}, got {len(args)} argument(s)")
    return _build(name, dict(zip(spec.args, args, strict=False)), columns, rows)


def _spec(name: object) -> Spec:
    if not isinstance(name, str):
        raise CommandError(f"command name must be a string, got {name!r}")
    try:
        return VOCABULARY[name]
    except KeyError:
        raise CommandError(
            f"unknown command {name!r} (known: {', '.join(VOCABULARY)})"
        ) from None


def _build(name: str, args: dict[str, Any], columns: int, rows: int) -> Command:
    kw: dict[str, Any] = {}
    if "column" in args:
        kw["column"] = _index(name, "column", args["column"], columns)
        kw["row"] = _index(name, "row", args["row"], rows)
    if "value" in args:
        kind = _VALUE_KIND[name]
        kw["value"] = _value(name, kind, args["value"])
    if "gain" in args:
        kw["gain"] = _value(name, LEVEL, args["gain"], "gain")
    return Command(name=name, **kw)


def _index(name: str, what: str, value: Any, size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"{name}: {what} must be an integer, got {value!r}")
    if not 0 <= value < size:
        raise CommandError(f"{name}: {what} {value} out of range 0..{size - 1}")
    return value


def _value(name: str, kind: str, value: Any, what: str = "value") -> float:
    if kind == SOURCE:
        if value not in SYNC_SOURCES:
            raise CommandError(f"{name}: {what} must be one of {', '.join(SYNC_SOURCES)}, "
                               f"got {value!r}")
        return float(SYNC_SOURCES.index(value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError(f"{name}: {what} must be a number, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise CommandError(f"{name}: {what} is NaN")
    if kind == SWITCH:
        if v not in (0.0, 1.0):
            raise CommandError(f"{name}: {what} must be 0 or 1, got {value!r}")
    elif kind == BPM:
        if not TEMPO_MIN_BPM <= v <= TEMPO_MAX_BPM:
            raise CommandError(
                f"{name}: tempo {v:g} BPM out of range {TEMPO_MIN_BPM:g}..{TEMPO_MAX_BPM:g}"
            )
    elif not 0.0 <= v <= VOLUME_MAX:
        what_is = "negative" if v < 0 else f"above {VOLUME_MAX:g}"
        raise CommandError(f"{name}: {what} {v:g} is {what_is}")
    return v
