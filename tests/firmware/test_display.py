"""The luma side: opening the OLED from a spec (with a recording serial interface in place
of the bus), the dummy and terminal stand-ins, frame skipping, and reading the terminal
display back (through a pseudo-terminal, and through tmux when it is installed)."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
import tty
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops

from firmware.display import (
    Display,
    DisplayConfigError,
    DisplayError,
    decode_asciiblock,
    dummy_display,
    open_display,
    terminal_display,
    window_display,
)
from firmware.errors import PedalError
from firmware.pinmap import DisplaySpec
from firmware.screen import Menu, View, busy_status, render

ROOT = Path(__file__).resolve().parents[2]


def spec(**fields: Any) -> DisplaySpec:
    """A pin map's display: SSD1306 on I2C1 at 0x3C unless told otherwise."""
    return DisplaySpec(**{"driver": "ssd1306", "bus": "i2c", "i2c_port": 1,
                          "i2c_address": 0x3C, **fields})


class RecordingSerial:
    """A luma serial interface that keeps what the driver sends (or fails like a bus)."""

    def __init__(self, fail: OSError | None = None) -> None:
        self.commands: list[int] = []
        self.data_bytes = 0
        self.fail = fail

    def command(self, *cmd: int) -> None:
        if self.fail is not None:
            raise self.fail
        self.commands.extend(cmd)

    def data(self, data: list[int]) -> None:
        if self.fail is not None:
            raise self.fail
        self.data_bytes += len(data)

    def cleanup(self) -> None:
        pass


# --------------------------------------------------------------------------- open_display


@pytest.mark.parametrize("driver", ["ssd1306", "sh1106"])
def test_open_display_builds_the_driver_and_pushes_frames(driver: str) -> None:
    serial = RecordingSerial()
    device = open_display(spec(driver=driver), serial_interface=serial)
    assert type(device).__name__ == driver
    assert serial.commands  # its start-up sequence
    display = Display(device)
    display.show(View(status=busy_status(0), selected=(1, 1)))
    assert serial.data_bytes >= 128 * 64 // 8  # a whole frame went out


def test_rotation_in_quarter_turns_or_degrees() -> None:
    assert open_display(spec(rotate=2), serial_interface=RecordingSerial()).rotate == 2
    assert open_display(spec(rotate=180), serial_interface=RecordingSerial()).rotate == 2
    with pytest.raises(DisplayConfigError, match="rotate 45"):
        open_display(spec(rotate=45), serial_interface=RecordingSerial())


@pytest.mark.parametrize(("bad", "words"), [
    (spec(driver="ssd1309"), "driver 'ssd1309'"),
    (spec(bus="usb"), "bus 'usb'"),
    (spec(i2c_address=None), "i2c_address is not set"),
    (spec(bus="spi"), "spi_port is not set"),
    (spec(width=100, height=10), "ssd1306 on I2C bus 1 at address 0x3C"),
])
def test_bad_specs_are_config_errors_that_say_what(bad: DisplaySpec, words: str) -> None:
    with pytest.raises(DisplayConfigError, match=words) as err:
        open_display(bad, serial_interface=RecordingSerial())
    assert isinstance(err.value, PedalError) and isinstance(err.value, ValueError)


def test_a_display_that_does_not_answer_names_bus_and_address() -> None:
    with pytest.raises(DisplayError, match=r"I2C bus 1 at address 0x3D") as err:
        open_display(spec(i2c_address=0x3D), serial_interface=RecordingSerial(OSError(
            121, "Remote I/O error")))
    assert isinstance(err.value, OSError)


def test_a_missing_i2c_bus_names_bus_and_address() -> None:
    # no /dev/i2c-97 here: smbus2 cannot open it (or is not installed at all); either way
    # the message names the bus and the address
    with pytest.raises(DisplayError, match=r"I2C bus 97 at address 0x3C"):
        open_display(spec(i2c_port=97))


def test_spi_without_its_drivers_is_a_display_error() -> None:
    try:
        import spidev  # noqa: F401

        pytest.skip("spidev is installed: this is not a bare machine")
    except ImportError:
        pass
    with pytest.raises(DisplayError, match=r"SPI 0\.0 \(DC GPIO24, reset GPIO25\)"):
        open_display(spec(bus="spi", spi_port=0, spi_device=0, dc=24, reset=25))


# -------------------------------------------------------------------------------- Display


def test_display_pushes_only_changed_frames() -> None:
    device = dummy_display()
    display = Display(device)
    a = View(status=busy_status(0), selected=(1, 1), blink=True)
    b = dataclasses.replace(a, blink=False)
    assert [display.show(v) for v in (a, a, b, b, b, a)] == [True, False, True, False,
                                                            False, True]
    assert (display.frames_shown, display.frames_skipped) == (3, 3)
    assert device.image.tobytes() == render(a).tobytes()
    display.invalidate()
    assert display.show(a) is True


def test_display_errors_are_translated_and_the_frame_is_retried() -> None:
    class Flaky:
        size = (128, 64)
        fail = True
        shown = 0

        def display(self, image: Image.Image) -> None:
            if self.fail:
                raise OSError(5, "Input/output error")
            self.shown += 1

    device = Flaky()
    display = Display(device)
    view = View(status=None)
    with pytest.raises(DisplayError, match="Input/output error"):
        display.show(view)
    device.fail = False
    assert display.show(view) is True and device.shown == 1
    assert display.frames_shown == 1


def test_display_wants_128x64() -> None:
    with pytest.raises(DisplayConfigError, match="128x32"):
        Display(dummy_display(128, 32))


def test_dummy_display_is_one_bit() -> None:
    device = dummy_display()
    assert device.mode == "1" and device.size == (128, 64)


def test_window_display_on_sdl_dummy_video(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    device = window_display(scale=3)
    display = Display(device)
    assert display.show(View(status=busy_status(0), selected=(1, 1))) is True
    assert device._screen.get_size() == (384, 192)


# ------------------------------------------------------------------ the terminal display


def test_terminal_display_needs_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with pytest.raises(DisplayError, match="not a terminal"):
        terminal_display()


def _run_on_a_pty(views: list[View], columns: int = 128, rows: int = 33) -> str:
    """Show ``views`` on luma's asciiblock device writing to a pseudo-terminal of the given
    size; returns everything it wrote."""
    master, slave = os.openpty()
    tty.setraw(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out = open(slave, "w", encoding="utf-8", closefd=False)
    saved = sys.stdout
    sys.stdout = out
    try:
        device = terminal_display()
        # luma clears the terminal at exit; not the test runner's terminal
        device.cleanup = lambda: None
        display = Display(device)
        for view in views:
            display.show(view)
        out.flush()
    finally:
        sys.stdout = saved
        out.close()
    deadline = time.monotonic() + 5
    size = -1
    while time.monotonic() < deadline:  # the reader has drained the pty when it stops growing
        time.sleep(0.05)
        now = sum(len(c) for c in chunks)
        if now == size:
            break
        size = now
    os.close(slave)
    os.close(master)
    return b"".join(chunks).decode("utf-8")


def test_asciiblock_output_decodes_to_the_frame_pixel_for_pixel() -> None:
    views = [View(status=busy_status(0), selected=(1, 1)),
             View(status=busy_status(5), selected=(2, 0), menu=Menu("M", ("a", "b"), 1))]
    text = _run_on_a_pty(views)
    assert decode_asciiblock(text).tobytes() == render(views[-1]).tobytes()


def test_decoding_needs_the_colours() -> None:
    with pytest.raises(ValueError, match="capture-pane -p -e"):
        decode_asciiblock("▄" * 128 + "\n")


def test_decoding_reads_sgr_variants() -> None:
    lit, dark = "\x1b[38;5;231;48;5;16m", "\x1b[0m\x1b[48;2;255;255;255m\x1b[38;5;0m"
    img = decode_asciiblock(f"{lit}▄{dark}▄\n\x1b[97;40m▄▄", 2, 4)
    assert [bool(img.getpixel((x, y))) for y in range(4) for x in range(2)] == [
        False, True, True, False, False, False, True, True]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_terminal_display_under_tmux_reads_back_with_capture_pane(tmp_path: Path) -> None:
    view = View(status=busy_status(2), selected=(1, 1), mode="PLAY")
    script = tmp_path / "show.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from firmware.display import Display, terminal_display
        from firmware.screen import View, busy_status
        Display(terminal_display()).show(View(status=busy_status(2), selected=(1, 1),
                                              mode="PLAY"))
        time.sleep(60)
    """))
    session = f"ouro-test-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "128", "-y", "33",
                    sys.executable, str(script)], check=True)
    try:
        want = render(view)
        got = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = subprocess.run(["tmux", "capture-pane", "-t", session, "-p", "-e"],
                                  check=True, capture_output=True, text=True).stdout
            if "\x1b[" in text:
                got = decode_asciiblock(text, 128, 64)
                if got.tobytes() == want.tobytes():
                    break
            time.sleep(0.2)
        assert got is not None, "nothing drawn in the tmux pane"
        differing = ImageChops.logical_xor(got, want).getbbox()
        assert differing is None, f"the pane differs from the frame in {differing}"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
