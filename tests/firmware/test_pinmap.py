"""Pin maps: the shipped maps check out, and each kind of mistake is reported with the file,
the line it is on and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.errors import ConfigFileError, PinMapError
from firmware.pinmap import (
    HAT_PINS,
    HW_DIR,
    SPI0_PINS,
    PinMap,
    board_header,
    builtin_boards,
    builtin_pinmap,
    header_pin,
    load_pinmap,
)

# A valid map; each test below changes one line of it. Markers after ``#`` let a test find
# the line it broke without counting.
GOOD = """\
board = "rpi4"                       # @board
hat = "test HAT"

[switches]
fs1 = { pin = 17, pull_up = true }   # @fs1
fs2 = { pin = 27 }                   # @fs2
fs3 = { pin = 22, pull_up = false }  # @fs3

[encoder]
a = 5                                # @enc_a
b = 6
push = 13

[leds]
record = 12                          # @record
play = 16

[display]
driver = "ssd1306"                   # @driver
bus = "i2c"                          # @bus
i2c_address = 0x3C                   # @address
rotate = 0                           # @rotate

[reserved]
midi_rx = 15                         # @midi_rx
"""


def line_of(text: str, marker: str) -> int:
    """The 1-based line holding ``# @marker``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.rstrip().endswith(f"# @{marker}"):
            return number
    raise AssertionError(f"no marker {marker}")


def edit(marker: str, new: str, text: str = GOOD) -> str:
    """``text`` with the line marked ``marker`` replaced by ``new`` (the marker kept)."""
    out = []
    for line in text.splitlines():
        out.append(f"{new:<36} # @{marker}" if line.rstrip().endswith(f"# @{marker}") else line)
    return "\n".join(out) + "\n"


def write(tmp_path: Path, text: str, name: str = "map.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def fails(tmp_path: Path, text: str, marker: str, key: str) -> str:
    """Load ``text`` from a file; it must fail at the line of ``marker`` naming ``key``."""
    path = write(tmp_path, text)
    with pytest.raises(PinMapError) as info:
        load_pinmap(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_of(text, marker)}: {key}: "), message
    return message


# ---------------------------------------------------------------------- shipped maps


def test_builtin_boards_lists_the_shipped_maps() -> None:
    assert builtin_boards() == ("rpi4", "rpi4-spi", "rpi5")
    assert all((HW_DIR / "pinmaps" / f"{b}.toml").is_file() for b in builtin_boards())


@pytest.mark.parametrize("name", builtin_boards())
def test_every_builtin_map_validates(name: str) -> None:
    pm = builtin_pinmap(name)
    assert isinstance(pm, PinMap)
    assert pm.board == ("rpi5" if name.startswith("rpi5") else "rpi4")
    assert 1 <= len(pm.switches) <= 8
    assert pm.path == HW_DIR / "pinmaps" / f"{name}.toml"
    assigned = pm.pins()
    assert not set(assigned) & set(pm.bus_pins())
    assert all(0 <= pin <= 27 for pin in assigned)


def test_the_spi_map_puts_the_display_on_spi0() -> None:
    pm = builtin_pinmap("rpi4-spi")
    assert (pm.display.bus, pm.display.spi_port, pm.display.dc, pm.display.reset) == \
        ("spi", 0, 24, 25)
    assert set(SPI0_PINS) <= set(pm.bus_pins())
    assert pm.display.i2c_address is None
    i2c = builtin_pinmap("rpi4")
    assert not set(SPI0_PINS) & set(i2c.bus_pins())


def test_switch_order_follows_the_file(tmp_path: Path) -> None:
    text = GOOD.replace("fs1 =", "zz =").replace("fs2 =", "aa =")
    pm = load_pinmap(write(tmp_path, text))
    assert [s.name for s in pm.switches] == ["zz", "aa", "fs3"]
    assert [s.pull_up for s in pm.switches] == [True, True, False]


def test_optional_sections_may_be_left_out(tmp_path: Path) -> None:
    text = GOOD.split("[encoder]")[0] + "[display]\ndriver = \"sh1106\"\nbus = \"i2c\"\n"
    pm = load_pinmap(write(tmp_path, text))
    assert pm.encoder is None and pm.leds == {} and pm.reserved == {}
    assert (pm.display.i2c_port, pm.display.i2c_address, pm.display.rotate) == (1, 0x3C, 0)


def test_unknown_builtin_names_the_known_ones() -> None:
    with pytest.raises(PinMapError, match="rpi4-spi"):
        builtin_pinmap("rpi3")


def test_header() -> None:
    header = board_header("rpi4")
    assert len(header) == 40 and header == board_header("rpi5")
    assert header[11] == "GPIO17" and header[1] == "3V3" and header[6] == "GND"
    assert sorted(int(v[4:]) for v in header.values() if v.startswith("GPIO")) == \
        list(range(28))
    assert header_pin(18) == 12 and header_pin(0) == 27
    with pytest.raises(ValueError):
        header_pin(28)
    with pytest.raises(ValueError):
        board_header("rpi3")


# ---------------------------------------------------------------------- each mistake


def test_pin_used_twice_names_both(tmp_path: Path) -> None:
    text = edit("fs2", "fs2 = { pin = 17 }")
    message = fails(tmp_path, text, "fs2", "switches.fs2.pin")
    assert f"already used by switches.fs1.pin (line {line_of(text, 'fs1')})" in message


def test_pin_used_twice_across_sections(tmp_path: Path) -> None:
    message = fails(tmp_path, edit("midi_rx", "midi_rx = 5"), "midi_rx", "reserved.midi_rx")
    assert "already used by encoder.a" in message


def test_i2s_pin(tmp_path: Path) -> None:
    text = edit("fs3", "fs3 = { pin = 19 }")
    message = fails(tmp_path, text, "fs3", "switches.fs3.pin")
    assert "GPIO 19 is I2S LRCLK (the audio HAT's frame clock); pick a free pin such as GPIO" \
        in message
    suggested = message.rsplit("such as ", 1)[1]
    assert "17" not in suggested and "19" not in suggested


@pytest.mark.parametrize("pin", sorted(HAT_PINS))
def test_every_hat_pin_is_refused(tmp_path: Path, pin: int) -> None:
    message = fails(tmp_path, edit("record", f"record = {pin}"), "record", "leds.record")
    assert f"GPIO {pin} is {HAT_PINS[pin]}" in message


def test_i2c_pin(tmp_path: Path) -> None:
    message = fails(tmp_path, edit("enc_a", "a = 3"), "enc_a", "encoder.a")
    assert "GPIO 3 is I2C1 SCL" in message


def test_spi_pin_with_an_spi_display(tmp_path: Path) -> None:
    spi = GOOD.replace('bus = "i2c"', 'bus = "spi"').replace(
        "i2c_address = 0x3C                   # @address", "dc = 24\nreset = 25")
    assert load_pinmap(write(tmp_path, spi, "ok.toml")).display.bus == "spi"
    message = fails(tmp_path, edit("fs2", "fs2 = { pin = 10 }", spi), "fs2", "switches.fs2.pin")
    assert "GPIO 10 is SPI0 MOSI" in message
    # The same pin is fine while the display is on I2C.
    assert load_pinmap(write(tmp_path, edit("fs2", "fs2 = { pin = 10 }"), "i2c.toml"))


def test_spi_only_keys_on_an_i2c_display(tmp_path: Path) -> None:
    message = fails(tmp_path, edit("address", "dc = 24"), "address", "display.dc")
    assert 'applies only to bus = "spi"' in message


def test_out_of_range(tmp_path: Path) -> None:
    message = fails(tmp_path, edit("fs1", "fs1 = { pin = 28 }"), "fs1", "switches.fs1.pin")
    assert "GPIO 28 is not on the 40-pin header (BCM GPIO 0..27)" in message
    fails(tmp_path, edit("fs1", "fs1 = { pin = -1 }"), "fs1", "switches.fs1.pin")


def test_unknown_key(tmp_path: Path) -> None:
    message = fails(tmp_path, edit("fs1", "fs1 = { pin = 17, pul_up = true }"), "fs1",
                    "switches.fs1.pul_up")
    assert "unknown key; expected pin or pull_up" in message
    message = fails(tmp_path, edit("record", "recrod = 12"), "record", "leds.recrod")
    assert "expected record, play or tempo" in message
    message = fails(tmp_path, "colour = 1  # @colour\n" + GOOD, "colour", "colour")
    assert "expected board, hat, switches, display, encoder, leds or reserved" in message


def test_wrong_type(tmp_path: Path) -> None:
    message = fails(tmp_path, edit("fs1", 'fs1 = { pin = "17" }'), "fs1", "switches.fs1.pin")
    assert "must be a BCM GPIO number (an integer), not a string ('17')" in message
    message = fails(tmp_path, edit("fs3", "fs3 = { pin = 22, pull_up = 1 }"), "fs3",
                    "switches.fs3.pull_up")
    assert "must be true or false, not an integer (1)" in message
    message = fails(tmp_path, edit("fs1", "fs1 = 17"), "fs1", "switches.fs1")
    assert "must be a table such as { pin = 17, pull_up = true }" in message
    fails(tmp_path, edit("record", "record = true"), "record", "leds.record")


def test_bad_driver(tmp_path: Path) -> None:
    message = fails(tmp_path, edit("driver", 'driver = "ssd1309"'), "driver", "display.driver")
    assert "'ssd1309' is not one of \"ssd1306\" or \"sh1106\"" in message


def test_bad_bus_address_rotate_board(tmp_path: Path) -> None:
    assert "not one of \"i2c\" or \"spi\"" in fails(
        tmp_path, edit("bus", 'bus = "i2s"'), "bus", "display.bus")
    assert "0x3E is not supported; use 0x3C or 0x3D" in fails(
        tmp_path, edit("address", "i2c_address = 0x3E"), "address", "display.i2c_address")
    assert "1 is not supported; use 0 or 2" in fails(
        tmp_path, edit("rotate", "rotate = 1"), "rotate", "display.rotate")
    assert "'rpi3' is not one of" in fails(
        tmp_path, edit("board", 'board = "rpi3"'), "board", "board")


def test_missing_key(tmp_path: Path) -> None:
    text = edit("fs1", "fs1 = { pull_up = true }")
    message = fails(tmp_path, text, "fs1", "switches.fs1")
    assert "missing key pin" in message


def test_bad_toml_syntax(tmp_path: Path) -> None:
    text = edit("fs2", "fs2 = { pin = 27")
    path = write(tmp_path, text)
    with pytest.raises(PinMapError) as info:
        load_pinmap(path)
    assert str(info.value).startswith(f"{path}:{line_of(text, 'fs2')}: not valid TOML")


def test_missing_file_and_error_classes(tmp_path: Path) -> None:
    with pytest.raises(PinMapError, match="no such file"):
        load_pinmap(tmp_path / "absent.toml")
    assert issubclass(PinMapError, ConfigFileError) and issubclass(PinMapError, ValueError)
