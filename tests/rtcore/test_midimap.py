"""The MIDI map: its file format, lookup table, default map and learn mode (no JACK)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from rtcore import commands as C
from rtcore.commands import Command, parse_args
from rtcore.errors import CommandError, ConfigError
from rtcore.midimap import (
    CC_ON,
    DEFAULT_MAP_TOML,
    LEVEL_CC,
    PRESS,
    SWITCH_CC,
    Action,
    Binding,
    MidiMap,
    action_value,
    binding_from_message,
    default_map,
    describe_message,
    load_map,
    load_map_text,
)

ROOT = Path(__file__).resolve().parents[2]
NOTE, CC, PROGRAM = 0x90, 0xB0, 0xC0


def key(status: int, channel: int, data1: int) -> int:
    return ((status | channel) << 8) | data1


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pedal.toml"
    path.write_text(text, encoding="utf-8")
    return path


def docs_example() -> str:
    """The first TOML block of docs/midi_map.md."""
    doc = (ROOT / "docs" / "midi_map.md").read_text(encoding="utf-8")
    match = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert match is not None
    return match.group(1)


def each_channel(status: int, data1: int, *actions: Action) -> dict[int, tuple[Action, ...]]:
    return {key(status, ch, data1): actions for ch in range(16)}


@pytest.fixture
def mido_installed() -> None:
    pytest.importorskip("mido")  # the pedal extra; learn mode decodes bytes with it


# ---------------------------------------------------------------------------- the file


def test_the_docs_example_gives_exactly_these_actions(tmp_path: Path) -> None:
    m = load_map(write(tmp_path, docs_example()), columns=5, rows=5)
    ch10 = 9
    assert m.table == {
        key(NOTE, ch10, 36): ((C.OP_RECORD, 0, 0, 0.0, PRESS, 0.0, 1.0),),
        # two bindings on one input, in file order
        key(NOTE, ch10, 37): ((C.OP_PLAY, 0, 0, 0.0, PRESS, 0.0, 1.0),
                              (C.OP_PLAY, 1, 0, 0.0, PRESS, 0.0, 1.0)),
        **each_channel(CC, 7, (C.OP_MASTER_VOLUME, -1, -1, 0.0, LEVEL_CC, 0.0, 1.0)),
        **each_channel(CC, 64, (C.OP_CLICK, -1, -1, 0.0, SWITCH_CC, 0.0, 1.0)),
        key(CC, 0, 80): ((C.OP_TAP, -1, -1, 0.0, PRESS, 0.0, 1.0),),
        **each_channel(PROGRAM, 3, (C.OP_TEMPO, -1, -1, 90.0, PRESS, 0.0, 1.0)),
        key(NOTE, ch10, 38): ((C.OP_VOLUME, 1, 0, 0.5, PRESS, 0.0, 1.0),),
    }
    assert m.describe() == [
        "note 36 ch 10 -> record 0 0",
        "note 37 ch 10 -> play 0 0",
        "note 37 ch 10 -> play 1 0",
        "cc 7 any channel -> master_volume 0..1",
        "cc 64 any channel -> click off/on",
        "cc 80 ch 1 -> tap",
        "program 3 any channel -> tempo 90",
        "note 38 ch 10 -> volume 1 0 0.5",
    ]


def test_an_any_channel_binding_is_entered_under_all_16_channels() -> None:
    m = load_map_text('[[bind]]\nprogram = 5\ncmd = "tap"\n', columns=5, rows=5)
    assert sorted(m.table) == [key(PROGRAM, ch, 5) for ch in range(16)]
    assert set(m.table.values()) == {((C.OP_TAP, -1, -1, 0.0, PRESS, 0.0, 1.0),)}


def test_any_channel_and_one_channel_on_the_same_number_both_fire_in_file_order() -> None:
    m = load_map_text("""
[[bind]]
cc = 80
cmd = "record"
column = 0
row = 0
[[bind]]
cc = 80
channel = 2
cmd = "tap"
""", columns=5, rows=5)
    record = (C.OP_RECORD, 0, 0, 0.0, PRESS, 0.0, 1.0)
    tap = (C.OP_TAP, -1, -1, 0.0, PRESS, 0.0, 1.0)
    assert m.table[key(CC, 1, 80)] == (record, tap)
    assert m.table[key(CC, 0, 80)] == (record,)


def test_a_range_scales_the_cc_and_may_run_backwards() -> None:
    m = load_map_text('[[bind]]\ncc = 11\nchannel = 16\ncmd = "volume"\ncolumn = 4\n'
                      'row = 4\nrange = [2, 0.5]\n', columns=5, rows=5)
    (action,) = m.table[key(CC, 15, 11)]
    assert action == (C.OP_VOLUME, 4, 4, 0.0, LEVEL_CC, 2.0, 0.5)
    assert [action_value(action, v) for v in (0, 127)] == [2.0, 0.5]
    assert action_value(action, 64) == pytest.approx(2.0 - 1.5 * 64 / 127)
    assert m.describe() == ["cc 11 ch 16 -> volume 4 4 2..0.5"]


def test_action_values_by_mode() -> None:
    switch = (C.OP_MONITOR, -1, -1, 0.0, SWITCH_CC, 0.0, 1.0)
    assert [action_value(switch, v) for v in (0, CC_ON - 1, CC_ON, 127)] == [0, 0, 1, 1]
    fixed = (C.OP_TEMPO, -1, -1, 90.0, PRESS, 0.0, 1.0)
    assert action_value(fixed, 0) == action_value(fixed, 127) == 90.0


def test_an_empty_file_is_an_empty_map(tmp_path: Path) -> None:
    m = load_map(write(tmp_path, "# nothing bound yet\n"), columns=5, rows=5)
    assert m.bindings == () and m.table == {}


def test_to_toml_reads_back_to_the_same_bindings(tmp_path: Path) -> None:
    m = load_map_text(docs_example(), columns=5, rows=5)
    m = m.with_binding(Binding("cc", 12, 3, Command("click_volume"), lo=0.25, hi=4.0))
    m = m.with_binding(Binding("note", 40, None, Command("monitor", value=1.0)))
    again = load_map(write(tmp_path, m.to_toml()), columns=5, rows=5)
    assert again.bindings == m.bindings
    assert again.table == m.table
    assert again.to_toml() == m.to_toml()


# a valid value of each kind of command argument, so that every command can be bound below
SAMPLE_VALUES: dict[str, object] = {C.LEVEL: 0.25, C.SWITCH: 1, C.BPM: 97.5, "source": "midi"}


def test_every_command_can_be_bound_to_every_input_and_written_back() -> None:
    bindings = []
    for number, name in enumerate(C.VOCABULARY):
        args: dict[str, object] = {"cmd": name}
        if "column" in C.VOCABULARY[name].args:
            args |= {"column": 1, "row": 2}
        if name in C._VALUE_KIND:
            args["value"] = SAMPLE_VALUES[C._VALUE_KIND[name]]
        command = C.parse_mapping(args, columns=5, rows=5)
        for kind in ("note", "cc", "program"):
            b = Binding(kind, number, 3, command)
            if b.mode != PRESS:
                b = Binding(kind, number, 3, replace(command, value=0.0))
            bindings.append(b)
    m = MidiMap(bindings)
    assert load_map_text(m.to_toml(), columns=5, rows=5).bindings == m.bindings


def test_the_switch_value_is_written_as_an_integer() -> None:
    b = Binding("program", 0, 0, Command("click", value=1.0))
    assert b.to_toml() == '[[bind]]\nprogram = 0\nchannel = 1\ncmd = "click"\nvalue = 1\n'


# ---------------------------------------------------------------------------- errors


BAD = [
    ("bind = [", "not valid TOML"),
    ('title = "mine"\n', "unknown top-level key(s) 'title' (a map has only [[bind]] entries)"),
    ('[bind]\ncc = 1\ncmd = "tap"\n', "bind must be an array of [[bind]] tables"),
    ("bind = [1]\n", "[[bind]] #1 must be a table, got 1"),
    ('[[bind]]\ncc = 1\ncmd = "tap"\ncolour = "red"\n',
     "[[bind]] #2: unknown key(s) 'colour' (known: note, cc, program, channel, cmd, column, "
     "row, value, range)"),
    ('[[bind]]\ncmd = "tap"\n',
     "[[bind]] #2: no input given; give exactly one of note, cc, program"),
    ('[[bind]]\nnote = 1\ncc = 1\ncmd = "tap"\n',
     "[[bind]] #2: note and cc given; give exactly one of note, cc, program"),
    ('[[bind]]\ncc = 128\ncmd = "tap"\n', "[[bind]] #2 cc must be an integer 0..127, got 128"),
    ('[[bind]]\nnote = -1\ncmd = "tap"\n',
     "[[bind]] #2 note must be an integer 0..127, got -1"),
    ('[[bind]]\nprogram = 1.0\ncmd = "tap"\n',
     "[[bind]] #2 program must be an integer 0..127, got 1.0"),
    ('[[bind]]\ncc = true\ncmd = "tap"\n',
     "[[bind]] #2 cc must be an integer 0..127, got True"),
    ('[[bind]]\ncc = 1\nchannel = 0\ncmd = "tap"\n',
     "[[bind]] #2 channel must be an integer 1..16, got 0"),
    ('[[bind]]\ncc = 1\nchannel = 17\ncmd = "tap"\n',
     "[[bind]] #2 channel must be an integer 1..16, got 17"),
    ('[[bind]]\ncc = 1\nchannel = "1"\ncmd = "tap"\n',
     "[[bind]] #2 channel must be an integer 1..16, got '1'"),
    ("[[bind]]\ncc = 1\n", '[[bind]] #2: cmd is missing (a command name, such as "record")'),
    ("[[bind]]\ncc = 1\ncmd = 3\n", "[[bind]] #2 cmd must be a string, got 3"),
    ('[[bind]]\ncc = 1\ncmd = "recrod"\n',
     "[[bind]] #2 cmd: unknown command 'recrod' (known: record, play,"),
    ('[[bind]]\ncc = 1\ncmd = "record"\ncolumn = 5\nrow = 0\n',
     "[[bind]] #2: record: column 5 out of range 0..4"),
    ('[[bind]]\ncc = 1\ncmd = "record"\ncolumn = 0\n',
     "[[bind]] #2: record: missing argument(s) 'row'"),
    ('[[bind]]\ncc = 1\ncmd = "tap"\ncolumn = 0\n',
     "[[bind]] #2: tap: unexpected argument(s) 'column'"),
    ('[[bind]]\nnote = 1\ncmd = "volume"\ncolumn = 0\nrow = 0\nvalue = 5\n',
     "[[bind]] #2: volume: value 5 is above 4"),
    ('[[bind]]\nnote = 1\ncmd = "click"\nvalue = 0.5\n',
     "[[bind]] #2: click: value must be 0 or 1, got 0.5"),
    ('[[bind]]\ncc = 1\ncmd = "tempo"\nvalue = 400\n',
     "[[bind]] #2: tempo: tempo 400 BPM out of range 20..300"),
    ('[[bind]]\ncc = 7\ncmd = "master_volume"\nvalue = 0.5\n',
     "[[bind]] #2 value is not allowed: master_volume on a cc takes its value from the cc"),
    ('[[bind]]\ncc = 64\ncmd = "monitor"\nvalue = 1\n',
     "[[bind]] #2 value is not allowed: monitor on a cc takes its value from the cc"),
    ('[[bind]]\nnote = 1\ncmd = "master_volume"\n',
     "[[bind]] #2 value is missing: a note cannot give master_volume its value; bind a cc "
     "for that"),
    ('[[bind]]\nprogram = 1\ncmd = "click"\n',
     "[[bind]] #2 value is missing: a program cannot give click its value; bind a cc "
     "for that"),
    ('[[bind]]\ncc = 1\ncmd = "tempo"\n',
     "[[bind]] #2 value is missing: tempo is only bound with a fixed value"),
    ('[[bind]]\ncc = 64\ncmd = "click"\nrange = [0, 1]\n',
     "[[bind]] #2 range is not allowed: only a level command (volume, click_volume, "
     "master_volume) on a cc takes a range"),
    ('[[bind]]\nnote = 1\ncmd = "master_volume"\nvalue = 1\nrange = [0, 1]\n',
     "[[bind]] #2 range is not allowed"),
    ('[[bind]]\ncc = 7\ncmd = "master_volume"\nrange = [0, 5]\n',
     "[[bind]] #2 range must be [low, high], two numbers in 0..4, got [0, 5]"),
    ('[[bind]]\ncc = 7\ncmd = "master_volume"\nrange = [1]\n',
     "[[bind]] #2 range must be [low, high], two numbers in 0..4, got [1]"),
    ('[[bind]]\ncc = 7\ncmd = "master_volume"\nrange = [true, 1]\n',
     "[[bind]] #2 range must be [low, high], two numbers in 0..4, got [True, 1]"),
    ('[[bind]]\nnote = 1\ncmd = "monitor"\nvalue = 1\ngain = 0.5\n',
     "[[bind]] #2 gain: a MIDI binding cannot carry the monitor gain"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_a_bad_map_names_the_file_the_entry_and_the_key(
        tmp_path: Path, text: str, message: str) -> None:
    # a good first entry, so that the numbering of the bad one is tested too
    good = '[[bind]]\ncc = 80\ncmd = "tap"\n\n'
    path = write(tmp_path, text if text.startswith(("bind", "[bind]", "title")) else good + text)
    with pytest.raises(ConfigError) as err:
        load_map(path, columns=5, rows=5)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such MIDI map file$"):
        load_map(tmp_path / "nope.toml", columns=5, rows=5)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.toml: cannot read: "):
        load_map(path, columns=5, rows=5)


def test_the_text_loader_names_where_it_read_from() -> None:
    with pytest.raises(ConfigError, match=r"^OSC: \[\[bind\]\] #1: no input given"):
        load_map_text('[[bind]]\ncmd = "tap"\n', columns=5, rows=5, where="OSC")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Binding("pitchbend", 1, None, Command("tap")), "binding kind must be one of"),
    (lambda: Binding("cc", 128, None, Command("tap")), "cc number must be 0..127, got 128"),
    (lambda: Binding("cc", 1, 16, Command("tap")), "channel must be 0..15 or None"),
    (lambda: Binding("cc", 1, None, Command("dance")), "unknown command 'dance'"),
    (lambda: Binding("note", 1, None, Command("monitor", value=1.0, gain=0.5)),
     "monitor: a MIDI binding cannot carry a gain"),
    (lambda: Binding("note", 1, None, Command("master_volume", value=1.0), hi=2.0),
     "master_volume: only a level command on a cc takes a range"),
    (lambda: Binding("cc", 1, None, Command("master_volume"), hi=4.5),
     "master_volume: range ends must be numbers in 0..4, got 4.5"),
])
def test_a_binding_made_in_code_is_checked(make: Callable[[], Binding], message: str) -> None:
    with pytest.raises(CommandError) as err:
        make()
    assert message in str(err.value)


# ---------------------------------------------------------------------------- editing


def test_with_binding_replaces_the_same_input_in_place_and_appends_a_new_one() -> None:
    m = load_map_text(docs_example(), columns=5, rows=5)
    stop = Binding("note", 37, 9, Command("stop", 2, 0))
    replaced = m.with_binding(stop)
    assert replaced.describe()[1:3] == ["note 37 ch 10 -> stop 2 0",
                                        "cc 7 any channel -> master_volume 0..1"]
    assert replaced.table[key(NOTE, 9, 37)] == ((C.OP_STOP, 2, 0, 0.0, PRESS, 0.0, 1.0),)
    assert len(replaced.bindings) == len(m.bindings) - 1
    # same number, other channel: a new input
    added = m.with_binding(Binding("note", 37, 0, Command("stop", 2, 0)))
    assert added.bindings[:-1] == m.bindings
    assert added.describe()[-1] == "note 37 ch 1 -> stop 2 0"
    assert m.table[key(NOTE, 9, 37)][0][0] == C.OP_PLAY  # the old map is unchanged


def test_without_input_drops_every_binding_on_it() -> None:
    m = load_map_text(docs_example(), columns=5, rows=5)
    less = m.without_input("note", 37, 9)
    assert key(NOTE, 9, 37) not in less.table
    assert len(less.bindings) == len(m.bindings) - 2
    assert m.without_input("note", 37, None).bindings == m.bindings  # not the same input


# ---------------------------------------------------------------------------- the default map


def test_the_default_map_for_5x5() -> None:
    m = default_map(5, 5)
    got = {(b.kind, b.number, b.channel, b.command.name, b.command.column, b.command.row)
           for b in m.bindings}
    want = {("cc", 7, None, "master_volume", -1, -1)}
    for kind, first in (("cc", 80), ("program", 0), ("note", 36)):
        for bank, name in enumerate(("record", "play", "stop")):
            want |= {(kind, first + 5 * bank + c, None, name, c, 0) for c in range(5)}
        want.add((kind, first + 15, None, "tap", -1, -1))
    assert got == want and len(m.bindings) == len(want) == 49
    assert len(m.table) == 49 * 16
    assert m.table[key(CC, 5, 82)] == ((C.OP_RECORD, 2, 0, 0.0, PRESS, 0.0, 1.0),)
    assert m.table[key(PROGRAM, 0, 15)] == ((C.OP_TAP, -1, -1, 0.0, PRESS, 0.0, 1.0),)


def test_the_default_map_leaves_out_cells_a_2x2_matrix_lacks() -> None:
    m = default_map(2, 2)
    cells = {(b.command.column, b.command.row) for b in m.bindings if b.command.column >= 0}
    assert cells == {(0, 0), (1, 0)}
    assert sorted(b.number for b in m.bindings if b.kind == "cc") == [
        7, 80, 81, 85, 86, 90, 91, 95]  # as docs/midi_map.md says
    assert key(CC, 0, 82) not in m.table


def test_the_default_map_text_is_a_valid_map_file(tmp_path: Path) -> None:
    m = load_map(write(tmp_path, DEFAULT_MAP_TOML), columns=5, rows=5)
    assert m.bindings == default_map(5, 5).bindings
    assert load_map_text(m.to_toml(), columns=5, rows=5).bindings == m.bindings


# ---------------------------------------------------------------------------- learn mode


@pytest.mark.usefixtures("mido_installed")
def test_learning_from_a_note_a_cc_and_a_program_change() -> None:
    record = parse_args("record", [1, 2], columns=5, rows=5)
    assert binding_from_message(bytes([0x93, 60, 100]), record) == Binding(
        "note", 60, 3, record)
    assert binding_from_message([0xB0, 80, 127], record) == Binding("cc", 80, 0, record)
    b = binding_from_message((0xCF, 3), record)
    assert b == Binding("program", 3, 15, record)
    assert b.describe() == "program 3 ch 16 -> record 1 2"


@pytest.mark.usefixtures("mido_installed")
def test_a_level_command_learned_from_a_cc_follows_it_and_from_a_note_keeps_its_value() -> None:
    volume = parse_args("volume", [0, 0, 0.7], columns=5, rows=5)
    on_cc = binding_from_message([0xB0, 11, 0], volume)
    assert on_cc.mode == LEVEL_CC and on_cc.command.value == 0.0
    assert on_cc.action() == (C.OP_VOLUME, 0, 0, 0.0, LEVEL_CC, 0.0, 1.0)
    on_note = binding_from_message([0x90, 11, 1], volume)
    assert on_note.action() == (C.OP_VOLUME, 0, 0, 0.7, PRESS, 0.0, 1.0)
    monitor = parse_args("monitor", [1], columns=5, rows=5)
    assert binding_from_message([0xB2, 64, 127], monitor).mode == SWITCH_CC
    tempo = parse_args("tempo", [100], columns=5, rows=5)
    assert binding_from_message([0xB0, 20, 127], tempo).action()[3:5] == (100.0, PRESS)
    m = MidiMap([on_cc, on_note])
    assert load_map_text(m.to_toml(), columns=5, rows=5).bindings == m.bindings


@pytest.mark.usefixtures("mido_installed")
@pytest.mark.parametrize(("message", "text"), [
    ([0xF8], "cannot learn from clock: only a note on (velocity above 0), a control change "
             "or a program change can be bound"),
    ([0x80, 60, 0], "cannot learn from note_off channel=0 note=60 velocity=0: only"),
    ([0x90, 60, 0], "cannot learn from note_on channel=0 note=60 velocity=0: only"),
    ([0xE0, 0, 64], "cannot learn from pitchwheel channel=0 pitch=0: only"),
    ([0xF0, 1, 2, 0xF7], "cannot learn from sysex data=(1,2): only"),
    ([0x90, 60], "invalid MIDI bytes [90 3c]: wrong number of bytes for note_on message"),
    ([0xB0, 7, 200], "invalid MIDI bytes [b0 07 c8]: data byte must be in range 0..127"),
    (b"", "invalid MIDI bytes []: message is 0 bytes long"),
    ([60, 1], "invalid MIDI bytes [3c 01]: invalid status byte 60"),
])
def test_messages_that_cannot_be_learned(message: list[int] | bytes, text: str) -> None:
    tap = parse_args("tap", [], columns=5, rows=5)
    with pytest.raises(CommandError) as err:
        binding_from_message(message, tap)
    assert str(err.value).startswith(text)


@pytest.mark.usefixtures("mido_installed")
def test_a_monitor_gain_cannot_be_learned() -> None:
    monitor = parse_args("monitor", [1, 0.5], columns=5, rows=5)
    with pytest.raises(CommandError, match="cannot carry a gain"):
        binding_from_message([0x90, 60, 100], monitor)


@pytest.mark.usefixtures("mido_installed")
def test_describe_message() -> None:
    assert describe_message(bytes([0xB4, 7, 100])) == "control_change channel=4 control=7 value=100"
    assert describe_message([0xC0, 3]) == "program_change channel=0 program=3"
    assert describe_message([0xF8]) == "clock"
    assert describe_message([0x90, 60]) == (
        "invalid MIDI bytes [90 3c]: wrong number of bytes for note_on message")
