"""The command vocabulary: parsing every command, and refusing bad ones with a clear message
(rtcore.commands; Engine.submit for the commands that make no sense in the current state)."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from rtcore import commands as C
from rtcore.commands import VOCABULARY, Command, parse_args, parse_mapping
from rtcore.config import TEMPO_MAX_BPM, TEMPO_MIN_BPM, VOLUME_MAX
from rtcore.errors import CommandError
from tests.rtcore.conftest import Rig, command, ramp

# name -> (mapping args, positional args, expected fields, opcode, quantized)
EVERY = {
    "record": ({"column": 1, "row": 2}, [1, 2], {"column": 1, "row": 2}, C.OP_RECORD, True),
    "play": ({"column": 0, "row": 4}, [0, 4], {"column": 0, "row": 4}, C.OP_PLAY, True),
    "stop": ({"column": 4, "row": 0}, [4, 0], {"column": 4, "row": 0}, C.OP_STOP, True),
    "solo": ({"column": 2, "row": 2}, [2, 2], {"column": 2, "row": 2}, C.OP_SOLO, True),
    "clear": ({"column": 3, "row": 1}, [3, 1], {"column": 3, "row": 1}, C.OP_CLEAR, True),
    "undo": ({"column": 0, "row": 0}, [0, 0], {"column": 0, "row": 0}, C.OP_UNDO, True),
    "redo": ({"column": 1, "row": 3}, [1, 3], {"column": 1, "row": 3}, C.OP_REDO, True),
    "volume": ({"column": 1, "row": 0, "value": 0.5}, [1, 0, 0.5],
               {"column": 1, "row": 0, "value": 0.5}, C.OP_VOLUME, False),
    "select": ({"column": 4, "row": 4}, [4, 4], {"column": 4, "row": 4}, C.OP_SELECT, False),
    "tempo": ({"value": 97.5}, [97.5], {"value": 97.5}, C.OP_TEMPO, True),
    "tap": ({}, [], {}, C.OP_TAP, False),
    "click": ({"value": 1}, [1], {"value": 1.0}, C.OP_CLICK, False),
    "click_volume": ({"value": 0.25}, [0.25], {"value": 0.25}, C.OP_CLICK_VOLUME, False),
    "master_volume": ({"value": 2}, [2], {"value": 2.0}, C.OP_MASTER_VOLUME, False),
    "monitor": ({"value": 1, "gain": 0.5}, [1, 0.5], {"value": 1.0, "gain": 0.5},
                C.OP_MONITOR, False),
    "sync": ({"value": "midi"}, ["midi"], {"value": 1.0}, C.OP_SYNC, False),
    "clock_out": ({"value": 1}, [1], {"value": 1.0}, C.OP_CLOCK_OUT, False),
    "count_in": ({"value": 0}, [0], {"value": 0.0}, C.OP_COUNT_IN, False),
}


def test_the_table_covers_the_whole_vocabulary() -> None:
    assert set(EVERY) == set(VOCABULARY)


@pytest.mark.parametrize("name", list(EVERY))
def test_parse_mapping_every_command(name: str) -> None:
    mapping, _, fields, op, quantized = EVERY[name]
    cmd = parse_mapping({"cmd": name, **mapping}, columns=5, rows=5)
    assert isinstance(cmd, Command)
    assert cmd.name == name
    for key, value in fields.items():
        assert getattr(cmd, key) == value, key
    assert (cmd.op, cmd.quantized) == (op, quantized)
    # the JSON form goes round
    assert parse_mapping(cmd.to_mapping(), columns=5, rows=5) == cmd


@pytest.mark.parametrize("name", list(EVERY))
def test_parse_args_every_command(name: str) -> None:
    mapping, args, _, op, _ = EVERY[name]
    cmd = parse_args(name, args, columns=5, rows=5)
    assert cmd == parse_mapping({"cmd": name, **mapping}, columns=5, rows=5)
    assert cmd.op == op


def test_monitor_gain_is_optional() -> None:
    assert parse_args("monitor", [1], columns=5, rows=5).gain == 1.0
    assert parse_mapping({"cmd": "monitor", "value": 0}, columns=5, rows=5).gain == 1.0


def test_integral_floats_and_ints_are_numbers() -> None:
    assert parse_args("volume", [0, 0, 1], columns=5, rows=5).value == 1.0
    assert parse_args("tempo", [120], columns=5, rows=5).value == 120.0
    assert parse_args("tempo", [np.float64(120.5)], columns=5, rows=5).value == 120.5


def test_matrix_size_is_configurable() -> None:
    assert parse_args("record", [15, 9], columns=16, rows=10).column == 15
    with pytest.raises(CommandError, match=r"column 5 out of range 0\.\.4"):
        parse_args("record", [5, 0], columns=5, rows=10)


@pytest.mark.parametrize("value", [0.0, VOLUME_MAX, 1e-9])
def test_volume_bounds_are_inclusive(value: float) -> None:
    assert parse_args("volume", [0, 0, value], columns=5, rows=5).value == value


@pytest.mark.parametrize("value", [TEMPO_MIN_BPM, TEMPO_MAX_BPM, 20, 300])
def test_tempo_bounds_are_inclusive(value: float) -> None:
    assert parse_args("tempo", [value], columns=5, rows=5).value == value


# ---------------------------------------------------------------------------- rejections

REJECT: list[tuple[str, Any, str]] = [
    # (how, the command, regex the message must match)
    ("unknown name", {"cmd": "recrod", "column": 0, "row": 0}, r"unknown command 'recrod'"),
    ("unknown name", {"cmd": "", "column": 0, "row": 0}, r"unknown command ''"),
    ("name not a string", {"cmd": 5}, r"command name must be a string"),
    ("no name", {"column": 0, "row": 0}, r"command name must be a string, got None"),
    ("column out of range", {"cmd": "record", "column": 5, "row": 0},
     r"record: column 5 out of range 0\.\.4"),
    ("row out of range", {"cmd": "play", "column": 0, "row": 7},
     r"play: row 7 out of range 0\.\.4"),
    ("negative column", {"cmd": "stop", "column": -1, "row": 0},
     r"stop: column -1 out of range"),
    ("column a string", {"cmd": "record", "column": "0", "row": 0},
     r"record: column must be an integer, got '0'"),
    ("column a float", {"cmd": "record", "column": 1.0, "row": 0},
     r"record: column must be an integer, got 1\.0"),
    ("row a bool", {"cmd": "solo", "column": 0, "row": True},
     r"solo: row must be an integer, got True"),
    ("column None", {"cmd": "clear", "column": None, "row": 0},
     r"clear: column must be an integer"),
    ("volume a string", {"cmd": "volume", "column": 0, "row": 0, "value": "loud"},
     r"volume: value must be a number, got 'loud'"),
    ("volume a bool", {"cmd": "volume", "column": 0, "row": 0, "value": True},
     r"volume: value must be a number"),
    ("volume NaN", {"cmd": "volume", "column": 0, "row": 0, "value": math.nan},
     r"volume: value is NaN"),
    ("volume negative", {"cmd": "volume", "column": 0, "row": 0, "value": -0.1},
     r"volume: value -0\.1 is negative"),
    ("volume too large", {"cmd": "volume", "column": 0, "row": 0, "value": 4.5},
     r"volume: value 4\.5 is above 4"),
    ("volume infinite", {"cmd": "volume", "column": 0, "row": 0, "value": math.inf},
     r"volume: value inf is above 4"),
    ("master NaN", {"cmd": "master_volume", "value": math.nan}, r"master_volume: value is NaN"),
    ("master negative", {"cmd": "master_volume", "value": -1}, r"master_volume: .*negative"),
    ("master too large", {"cmd": "master_volume", "value": 100}, r"master_volume: .*above 4"),
    ("click volume too large", {"cmd": "click_volume", "value": 5},
     r"click_volume: .*above 4"),
    ("monitor gain negative", {"cmd": "monitor", "value": 1, "gain": -2},
     r"monitor: gain -2 is negative"),
    ("click not a switch", {"cmd": "click", "value": 0.5},
     r"click: value must be 0 or 1, got 0\.5"),
    ("monitor not a switch", {"cmd": "monitor", "value": 2}, r"monitor: value must be 0 or 1"),
    ("tempo too slow", {"cmd": "tempo", "value": 19.9},
     r"tempo: tempo 19\.9 BPM out of range 20\.\.300"),
    ("tempo too fast", {"cmd": "tempo", "value": 300.5},
     r"tempo: tempo 300\.5 BPM out of range 20\.\.300"),
    ("tempo zero", {"cmd": "tempo", "value": 0}, r"tempo: tempo 0 BPM out of range"),
    ("tempo negative", {"cmd": "tempo", "value": -120}, r"tempo: tempo -120 BPM out of range"),
    ("tempo NaN", {"cmd": "tempo", "value": math.nan}, r"tempo: value is NaN"),
    ("tempo infinite", {"cmd": "tempo", "value": math.inf}, r"tempo: tempo inf BPM out of range"),
    ("tempo a string", {"cmd": "tempo", "value": "120"}, r"tempo: value must be a number"),
    ("missing row", {"cmd": "record", "column": 0}, r"record: missing argument\(s\) 'row'"),
    ("missing value", {"cmd": "volume", "column": 0, "row": 0},
     r"volume: missing argument\(s\) 'value'"),
    ("extra argument", {"cmd": "play", "column": 0, "row": 0, "value": 1},
     r"play: unexpected argument\(s\) 'value'"),
    ("extra argument", {"cmd": "tap", "x": 1}, r"tap: unexpected argument\(s\) 'x'"),
]


@pytest.mark.parametrize(("how", "obj", "message"), REJECT,
                         ids=[f"{i}-{r[0]}" for i, r in enumerate(REJECT)])
def test_parse_mapping_rejects_with_a_clear_message(how: str, obj: Any, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_mapping(obj, columns=5, rows=5)


def test_a_command_must_be_an_object() -> None:
    with pytest.raises(CommandError, match="a command must be an object, got list"):
        parse_mapping(["record", 0, 0], columns=5, rows=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("recrod", [0, 0], r"unknown command 'recrod' \(known: record, play"),
        ("record", [0], r"record: takes column row, got 1 argument\(s\)"),
        ("record", [0, 0, 0], r"record: takes column row, got 3 argument\(s\)"),
        ("tap", [1], r"tap: takes no arguments, got 1 argument\(s\)"),
        ("volume", [0, 0], r"volume: takes column row value, got 2"),
        ("monitor", [], r"monitor: takes value gain, got 0"),
        ("record", [0, 5], r"record: row 5 out of range 0\.\.4"),
        ("volume", [0, 0, math.nan], r"volume: value is NaN"),
        ("volume", [0, 0, -1], r"volume: value -1 is negative"),
        ("volume", [0, 0, 4.01], r"volume: value 4\.01 is above 4"),
        ("tempo", [10], r"tempo: tempo 10 BPM out of range 20\.\.300"),
        ("tempo", [301], r"tempo: tempo 301 BPM out of range 20\.\.300"),
        ("play", ["0", 0], r"play: column must be an integer, got '0'"),
    ],
)
def test_parse_args_rejects_with_a_clear_message(name: str, args: list, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_args(name, args, columns=5, rows=5)


def test_command_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown command"):
        parse_args("nope", [], columns=5, rows=5)


# ---------------------------------------------------------------------------- engine.submit


def _snapshot(rig: Rig) -> tuple[dict, int]:
    return copy.deepcopy(rig.status()), len(rig.eng.commands)


def _rig_with_loop(total: int = 24000 * 6) -> Rig:
    rig = Rig(total, ramp(total))
    rig.run_to(100)
    rig.submit("record", 0, 0)
    rig.run_to(24000 + 100)
    rig.submit("record", 0, 0)
    rig.run_to(24000 * 3)
    assert rig.cell(0, 0)["state"] == "playing"
    return rig


def _refused(rig: Rig, name: str, *args: Any, match: str) -> None:
    before = _snapshot(rig)
    with pytest.raises(CommandError, match=match):
        rig.eng.submit(command(name, *args))
    assert _snapshot(rig) == before, "a refused command changes nothing"


@pytest.mark.parametrize("args", [("tempo", 100), ("tap",)])
def test_tempo_change_refused_while_a_loop_exists(args: tuple) -> None:
    rig = _rig_with_loop()
    _refused(rig, *args, match=rf"{args[0]}: tempo cannot change while loops exist")
    rig.run_to(rig.total)
    assert rig.status()["tempo"] == 120


def test_tempo_change_refused_while_recording_or_about_to() -> None:
    total = 24000 * 4
    rig = Rig(total, ramp(total))
    rig.run_to(100)
    rig.submit("record", 1, 1)
    rig.block()  # the record is pending now
    _refused(rig, "tempo", 90, match="tempo cannot change while loops exist")
    rig.run_to(24000 + 100)  # recording
    _refused(rig, "tempo", 90, match="tempo cannot change while loops exist")
    _refused(rig, "tap", match="tap: tempo cannot change while loops exist")


def test_tempo_change_allowed_again_after_clearing() -> None:
    rig = _rig_with_loop(24000 * 10)
    rig.submit("clear", 0, 0)
    rig.run_to(24000 * 4 + 100)
    assert rig.cell(0, 0)["state"] == "empty"
    rig.submit("tempo", 90)
    rig.run_to(24000 * 6)
    assert rig.status()["tempo"] == 90


@pytest.mark.parametrize("name", ["play", "solo"])
def test_play_or_solo_on_an_empty_cell_is_refused(name: str) -> None:
    rig = _rig_with_loop()
    _refused(rig, name, 2, 3, match=rf"{name}: cell \(2, 3\) is empty")
    _refused(rig, name, 0, 1, match=rf"{name}: cell \(0, 1\) is empty")


def test_undo_and_redo_with_nothing_to_step_to_are_refused() -> None:
    rig = Rig(1000)
    _refused(rig, "undo", 0, 0, match=r"undo: cell \(0, 0\) has nothing to undo")
    _refused(rig, "redo", 0, 0, match=r"redo: cell \(0, 0\) has nothing to redo")
    rig = _rig_with_loop()
    _refused(rig, "redo", 0, 0, match=r"redo: cell \(0, 0\) has nothing to redo")


def test_accepted_commands_reach_the_queue() -> None:
    rig = _rig_with_loop()
    n = len(rig.eng.commands)
    for name, (_, args, _, _, _) in EVERY.items():
        if name in ("tempo", "tap", "redo"):
            continue  # refused here, tested above
        if "column" in VOCABULARY[name].args:
            args = [0, 0, *args[2:]]  # the cell that holds the loop
        rig.eng.submit(parse_args(name, args, columns=5, rows=5))
    assert len(rig.eng.commands) == n + len(EVERY) - 3


def test_play_right_after_record_in_the_same_block_is_accepted() -> None:
    from rtcore.commands import parse_args
    from rtcore.config import EngineConfig
    from rtcore.engine import Engine

    eng = Engine(EngineConfig(block_size=64))
    eng.submit(parse_args("record", [1, 2], columns=5, rows=5))
    eng.submit(parse_args("play", [1, 2], columns=5, rows=5))  # still queued: accepted
    with pytest.raises(CommandError, match=r"cell \(1, 3\) is empty"):
        eng.submit(parse_args("play", [1, 3], columns=5, rows=5))
