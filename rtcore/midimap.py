"""MIDI input mapped to looper commands: a TOML map file, a default map, and learn mode.

A map is a list of :class:`Binding` (one MIDI input -> one command). :class:`MidiMap` turns
the list into :attr:`MidiMap.table`, plain data the audio thread can look a message up in
without building anything. The file format and the trigger rules are in docs/midi_map.md.

mido is imported only by the two functions that decode raw bytes (:func:`describe_message`
and :func:`binding_from_message`): it comes with the ``pedal`` extra, and reading or
building a map does not need it.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rtcore.commands import (
    _VALUE_KIND,
    LEVEL,
    SWITCH,
    VOCABULARY,
    Command,
    parse_mapping,
)
from rtcore.config import VOLUME_MAX
from rtcore.errors import CommandError, ConfigError

# How an action takes its value (the ``mode`` slot of an action).
PRESS = 0  # the value stored in the action; a cc fires it when it rises to CC_ON or above
LEVEL_CC = 1  # every cc value v: lo + (hi - lo) * v / 127
SWITCH_CC = 2  # every cc value v: 1.0 if v >= CC_ON else 0.0
CC_ON = 64  # the MIDI convention for on/off controllers (sustain pedal and the like)

KINDS = ("note", "cc", "program")
_STATUS = {"note": 0x90, "cc": 0xB0, "program": 0xC0}
_ENTRY_KEYS = (*KINDS, "channel", "cmd", "column", "row", "value", "range")
_LEVELS = tuple(name for name, kind in _VALUE_KIND.items() if kind == LEVEL)

Action = tuple[int, int, int, float, int, float, float]
"""``(op, column, row, value, mode, lo, hi)``: what one binding does, as the engine reads it."""


def _mode(kind: str, name: str) -> int:
    if kind == "cc":
        value_kind = _VALUE_KIND.get(name)
        if value_kind == LEVEL:
            return LEVEL_CC
        if value_kind == SWITCH:
            return SWITCH_CC
    return PRESS


@dataclass(frozen=True, slots=True)
class Binding:
    """One MIDI input and the command it fires.

    ``channel`` counts from 0 (the map file counts from 1); None is any channel. For a
    :data:`LEVEL_CC` or :data:`SWITCH_CC` binding the command's value is unused: the cc
    gives it. ``lo`` and ``hi`` are the range a level command's cc is scaled into; ``lo``
    above ``hi`` turns the pedal round.

    >>> Binding("cc", 7, None, Command("master_volume")).describe()
    'cc 7 any channel -> master_volume 0..1'
    """

    kind: str
    number: int
    channel: int | None
    command: Command
    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _STATUS:
            raise CommandError(f"binding kind must be one of {', '.join(KINDS)}, "
                               f"got {self.kind!r}")
        if not _is_int(self.number) or not 0 <= self.number <= 127:
            raise CommandError(f"{self.kind} number must be 0..127, got {self.number!r}")
        if self.channel is not None and not (_is_int(self.channel) and 0 <= self.channel <= 15):
            raise CommandError(f"channel must be 0..15 or None (any), got {self.channel!r}")
        if self.command.name not in VOCABULARY:
            raise CommandError(f"unknown command {self.command.name!r}")
        # the engine's action has no slot for a gain: refuse it rather than drop it quietly
        if self.command.gain != 1.0:
            raise CommandError(f"{self.command.name}: a MIDI binding cannot carry a gain")
        if self.mode == LEVEL_CC:
            for end in (self.lo, self.hi):
                if not (_is_number(end) and 0.0 <= end <= VOLUME_MAX):
                    raise CommandError(f"{self.command.name}: range ends must be numbers in "
                                       f"0..{VOLUME_MAX:g}, got {end!r}")
        elif (self.lo, self.hi) != (0.0, 1.0):
            raise CommandError(f"{self.command.name}: only a level command on a cc takes a "
                               f"range")

    @property
    def mode(self) -> int:
        """:data:`PRESS`, :data:`LEVEL_CC` or :data:`SWITCH_CC`."""
        return _mode(self.kind, self.command.name)

    @property
    def input(self) -> tuple[str, int, int | None]:
        """``(kind, number, channel)``: what :meth:`MidiMap.with_binding` matches on."""
        return (self.kind, self.number, self.channel)

    def action(self) -> Action:
        """The binding as the engine applies it; see :attr:`MidiMap.table`."""
        mode = self.mode
        cmd = self.command
        value = cmd.value if mode == PRESS else 0.0
        return (cmd.op, cmd.column, cmd.row, value, mode, float(self.lo), float(self.hi))

    def describe(self) -> str:
        """One line for a person: ``note 60 ch 1 -> record 0 0``."""
        channel = "any channel" if self.channel is None else f"ch {self.channel + 1}"
        words = [self.kind, str(self.number), channel, "->", self.command.name]
        mode = self.mode
        words += [f"{value:g}" if isinstance(value, float) else str(value)
                  for arg, value in self._args() if arg != "value" or mode == PRESS]
        if mode == LEVEL_CC:
            words.append(f"{self.lo:g}..{self.hi:g}")
        elif mode == SWITCH_CC:
            words.append("off/on")
        return " ".join(words)

    def to_toml(self) -> str:
        """The binding as one ``[[bind]]`` entry of a map file."""
        lines = ["[[bind]]", f"{self.kind} = {self.number}"]
        if self.channel is not None:
            lines.append(f"channel = {self.channel + 1}")
        lines.append(f'cmd = "{self.command.name}"')
        mode = self.mode
        for arg, value in self._args():
            if arg in ("column", "row"):
                lines.append(f"{arg} = {value}")
            elif mode == PRESS:
                lines.append(f"value = {_toml_value(self.command.name, value)}")
        if mode == LEVEL_CC:
            lines.append(f"range = [{float(self.lo)!r}, {float(self.hi)!r}]")
        return "\n".join(lines) + "\n"

    def _args(self) -> list[tuple[str, Any]]:
        """The command's arguments but gain, as (name, value), in vocabulary order.

        Taken from the command's JSON form, which is what parse_mapping reads back (a value
        may be held as a number but written as a name)."""
        return [(arg, value) for arg, value in self.command.to_mapping().items()
                if arg not in ("cmd", "gain")]


def _toml_value(name: str, value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of plain text is a TOML basic string
    if _VALUE_KIND[name] == SWITCH:
        return str(int(value))  # reads best as 0 or 1
    return repr(float(value))  # repr keeps the float exact in TOML


class MidiMap:
    """A list of bindings, fixed once made, and the lookup table built from it.

    :attr:`table` maps ``(status << 8) | data1`` to the actions of every binding on that
    input, in map order. ``status`` is ``0x90 | channel`` (note on), ``0xB0 | channel``
    (control change) or ``0xC0 | channel`` (program change), channel counted from 0; a
    binding on any channel is entered under all 16. An action is
    ``(op, column, row, value, mode, lo, hi)`` with ``op`` one of ``rtcore.commands.OP_*``;
    :func:`action_value` says what value it applies. The table holds only ints, floats
    and tuples, built once, so the audio thread reads it without allocating.

    The caller keeps the trigger rules: a note-on with velocity 0 is a note off and fires
    nothing; a :data:`PRESS` action on a cc fires only when that channel's controller goes
    from below :data:`CC_ON` to :data:`CC_ON` or above.
    """

    __slots__ = ("bindings", "table")

    bindings: tuple[Binding, ...]
    table: dict[int, tuple[Action, ...]]

    def __init__(self, bindings: Iterable[Binding]) -> None:
        self.bindings = tuple(bindings)
        table: dict[int, list[Action]] = {}
        for binding in self.bindings:
            action = binding.action()
            status = _STATUS[binding.kind]
            channels = range(16) if binding.channel is None else (binding.channel,)
            for channel in channels:
                table.setdefault(((status | channel) << 8) | binding.number, []).append(action)
        self.table = {key: tuple(actions) for key, actions in table.items()}

    def __repr__(self) -> str:
        return f"<MidiMap: {len(self.bindings)} bindings>"

    def with_binding(self, binding: Binding) -> MidiMap:
        """A new map where ``binding`` replaces every binding on the same input (kind,
        number and channel; any channel is an input of its own), in the place of the first
        of them; or, when there are none, is added at the end."""
        out: list[Binding] = []
        placed = False
        for b in self.bindings:
            if b.input != binding.input:
                out.append(b)
            elif not placed:
                out.append(binding)
                placed = True
        if not placed:
            out.append(binding)
        return MidiMap(out)

    def without_input(self, kind: str, number: int, channel: int | None) -> MidiMap:
        """A new map without the bindings on this input (channel from 0, None = any)."""
        return MidiMap(b for b in self.bindings if b.input != (kind, number, channel))

    def to_toml(self) -> str:
        """The map as a file that :func:`load_map_text` reads back to the same bindings."""
        entries = "\n".join(b.to_toml() for b in self.bindings)
        return "# Ouroboros MIDI map: see docs/midi_map.md\n\n" + entries

    def describe(self) -> list[str]:
        """One line per binding, as :meth:`Binding.describe` gives it."""
        return [b.describe() for b in self.bindings]


def action_value(action: Action, data2: int) -> float:
    """The value ``action`` applies for a message whose second data byte is ``data2``.

    >>> action_value((14, -1, -1, 0.0, LEVEL_CC, 0.0, 2.0), 127)
    2.0
    """
    mode = action[4]
    if mode == LEVEL_CC:
        # written so that 0 and 127 give lo and hi exactly: a pedal at heel or toe is
        # exactly at its stop, whatever the rounding in between
        t = data2 / 127
        return action[5] * (1.0 - t) + action[6] * t
    if mode == SWITCH_CC:
        return 1.0 if data2 >= CC_ON else 0.0
    return action[3]


# ---------------------------------------------------------------------------- map files


def load_map_text(text: str, *, columns: int, rows: int, where: str = "MIDI map") -> MidiMap:
    """A map from the text of a map file, for a matrix of ``columns`` x ``rows`` cells.

    Raises :class:`ConfigError` naming ``where``, the entry and the key of the first
    problem.

    >>> m = load_map_text('''
    ... [[bind]]
    ... note = 60
    ... channel = 1
    ... cmd = "record"
    ... column = 0
    ... row = 0
    ... ''', columns=5, rows=5)
    >>> m.describe()
    ['note 60 ch 1 -> record 0 0']
    >>> m.table[(0x90 << 8) | 60]
    ((1, 0, 0, 0.0, 0, 0.0, 1.0),)
    >>> load_map_text('[[bind]]\\ncc = 128\\ncmd = "tap"', columns=5, rows=5)
    Traceback (most recent call last):
    ...
    rtcore.errors.ConfigError: MIDI map: [[bind]] #1 cc must be an integer 0..127, got 128
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    return MidiMap(_read_doc(doc, columns, rows, where))


def load_map(path: Path, *, columns: int, rows: int) -> MidiMap:
    """A map from a file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such MIDI map file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return load_map_text(text, columns=columns, rows=rows, where=str(path))


def _read_doc(doc: Mapping[str, Any], columns: int, rows: int, where: str) -> list[Binding]:
    unknown = sorted(set(doc) - {"bind"})
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(map(repr, unknown))} "
                          f"(a map has only [[bind]] entries)")
    entries = doc.get("bind", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: bind must be an array of [[bind]] tables, "
                          f"got {entries!r}")
    out = []
    for n, entry in enumerate(entries, 1):
        at = f"{where}: [[bind]] #{n}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at} must be a table, got {entry!r}")
        out.append(_read_entry(entry, at, columns, rows))
    return out


def _read_entry(entry: dict[str, Any], at: str, columns: int, rows: int) -> Binding:
    if "gain" in entry:
        raise ConfigError(f"{at} gain: a MIDI binding cannot carry the monitor gain")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(_ENTRY_KEYS)})")
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        given = f"{' and '.join(kinds)} given" if kinds else "no input given"
        raise ConfigError(f"{at}: {given}; give exactly one of note, cc, program")
    kind = kinds[0]
    number = _entry_int(entry, kind, 0, 127, at)
    channel = _entry_int(entry, "channel", 1, 16, at) - 1 if "channel" in entry else None

    if "cmd" not in entry:
        raise ConfigError(f'{at}: cmd is missing (a command name, such as "record")')
    name = entry["cmd"]
    if not isinstance(name, str):
        raise ConfigError(f"{at} cmd must be a string, got {name!r}")
    if name not in VOCABULARY:
        raise ConfigError(f"{at} cmd: unknown command {name!r} (known: {', '.join(VOCABULARY)})")

    mode = _mode(kind, name)
    args: dict[str, Any] = {k: entry[k] for k in ("column", "row", "value") if k in entry}
    if mode != PRESS:
        if "value" in entry:
            raise ConfigError(f"{at} value is not allowed: {name} on a cc takes its value "
                              f"from the cc")
        args["value"] = 0  # a placeholder, so that parse_mapping checks the other arguments
    elif name in _VALUE_KIND and "value" not in entry:
        why = (f"a {kind} cannot give {name} its value; bind a cc for that"
               if _mode("cc", name) != PRESS else f"{name} is only bound with a fixed value")
        raise ConfigError(f"{at} value is missing: {why}")
    lo, hi = 0.0, 1.0
    if "range" in entry:
        if mode != LEVEL_CC:
            raise ConfigError(f"{at} range is not allowed: only a level command "
                              f"({', '.join(_LEVELS)}) on a cc takes a range")
        lo, hi = _entry_range(entry["range"], at)
    try:
        command = parse_mapping({"cmd": name, **args}, columns=columns, rows=rows)
    except CommandError as exc:
        raise ConfigError(f"{at}: {exc}") from None
    return Binding(kind, number, channel, command, lo, hi)


def _entry_int(entry: Mapping[str, Any], key: str, lo: int, hi: int, at: str) -> int:
    value = entry[key]
    if not _is_int(value) or not lo <= value <= hi:
        raise ConfigError(f"{at} {key} must be an integer {lo}..{hi}, got {value!r}")
    assert isinstance(value, int)
    return value


def _entry_range(value: Any, at: str) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2
            and all(_is_number(v) and 0.0 <= v <= VOLUME_MAX for v in value)):
        raise ConfigError(f"{at} range must be [low, high], two numbers in "
                          f"0..{VOLUME_MAX:g}, got {value!r}")
    return float(value[0]), float(value[1])


def _is_int(value: object) -> bool:
    # a TOML true is a Python bool, and bool is an int: refuse it explicitly
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


# ---------------------------------------------------------------------------- the default map


def _default_map_toml() -> str:
    # Built from the bindings so that it is in exactly the format to_toml writes; a user
    # who copies it can append learned entries below it.
    families = (
        ("cc", 80, "Footswitches sending control changes (set them to momentary)"),
        ("program", 0, "Footswitches sending program changes"),
        ("note", 36, "A pad controller: notes 36..51, a 4x4 grid"),
    )
    parts = [
        "# Ouroboros default MIDI map: any channel, for a generic foot controller.\n"
        "# On each kind of input, three banks of five switches act on row 0, one switch per\n"
        "# column: record, then play, then stop; the sixteenth switch taps the tempo.\n"
        "# Bindings to cells the matrix does not have are left out when the map is loaded.\n"
    ]
    for kind, first, title in families:
        binds = [Binding(kind, first + 5 * bank + column, None, Command(name, column, 0))
                 for bank, name in enumerate(("record", "play", "stop"))
                 for column in range(5)]
        binds.append(Binding(kind, first + 15, None, Command("tap")))
        parts.append(f"# {title}\n\n" + "\n".join(b.to_toml() for b in binds))
    pedal = Binding("cc", 7, None, Command("master_volume"))
    parts.append("# An expression pedal: master volume, heel silent, toe unity\n\n"
                 + pedal.to_toml())
    return "\n".join(parts)


DEFAULT_MAP_TOML = _default_map_toml()
"""The default map as a file: a starting point to copy and edit."""


def default_map(columns: int, rows: int) -> MidiMap:
    """The default map, less the bindings to cells beyond ``columns`` x ``rows``.

    >>> len(default_map(5, 5).bindings), len(default_map(2, 2).bindings)
    (49, 22)
    """
    doc = tomllib.loads(DEFAULT_MAP_TOML)
    doc["bind"] = [e for e in doc["bind"]
                   if e.get("column", 0) < columns and e.get("row", 0) < rows]
    return MidiMap(_read_doc(doc, columns, rows, "default MIDI map"))


# ---------------------------------------------------------------------------- learn mode


def describe_message(message: bytes | Sequence[int]) -> str:
    """Raw MIDI bytes in words, as mido names them.

    >>> describe_message(bytes([0x90, 60, 100]))
    'note_on channel=0 note=60 velocity=100'
    >>> describe_message([0x90, 60])
    'invalid MIDI bytes [90 3c]: wrong number of bytes for note_on message'
    """
    import mido  # here, not at the top: see the module docstring

    try:
        msg = _decode(message)
    except CommandError as exc:
        return str(exc)
    return str(mido.format_as_string(msg, include_time=False))


def binding_from_message(message: bytes | Sequence[int], command: Command) -> Binding:
    """Learn mode: bind ``command`` to the input that sent ``message``, on its channel.

    A note on (velocity above 0), a control change or a program change can be bound.
    On a cc, a level command (volume, click_volume, master_volume) follows the cc over
    0..1 and an on/off command (click, monitor...) is on from 64 up: the command's value
    is not used. On a note or a program change, and for the other commands with a value
    (tempo), the command's value is kept as the fixed value to apply.

    Raises :class:`CommandError` (a ``ValueError``) naming the message when it is
    anything else (note off, clock, sysex, pitch bend, broken bytes), or when the
    command carries a monitor gain.

    >>> from rtcore.commands import parse_args
    >>> cmd = parse_args("record", [0, 0], columns=5, rows=5)
    >>> binding_from_message(bytes([0xB1, 80, 127]), cmd).describe()
    'cc 80 ch 2 -> record 0 0'
    """
    msg = _decode(message)
    if msg.type == "note_on" and msg.velocity > 0:
        kind, number = "note", msg.note
    elif msg.type == "control_change":
        kind, number = "cc", msg.control
    elif msg.type == "program_change":
        kind, number = "program", msg.program
    else:
        raise CommandError(f"cannot learn from {describe_message(message)}: only a note on "
                           f"(velocity above 0), a control change or a program change "
                           f"can be bound")
    if _mode(kind, command.name) != PRESS:
        command = replace(command, value=0.0)  # the cc gives it; keep to_toml round-trips
    return Binding(kind, number, msg.channel, command)


def _decode(message: bytes | Sequence[int]) -> Any:
    """A mido Message from raw bytes; CommandError naming the bytes if they are not one."""
    import mido

    try:
        return mido.Message.from_bytes(message)
    except (ValueError, TypeError) as exc:
        shown = " ".join(f"{b:02x}" if _is_int(b) else repr(b) for b in message)
        raise CommandError(f"invalid MIDI bytes [{shown}]: {exc}") from None


def configured_map(setting: str, *, columns: int, rows: int) -> MidiMap:
    """The map an engine setting names: ``"default"``, ``"none"`` or a TOML file's path."""
    if setting == "none":
        return MidiMap([])
    if setting == "default":
        return default_map(columns, rows)
    return load_map(Path(setting), columns=columns, rows=rows)
