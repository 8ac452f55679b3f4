"""The luma side: opening the OLED from a spec (with a recording serial interface in place
of the bus), the dummy and terminal stand-ins, frame skipping, and reading the terminal
display back (through a pseudo-terminal, and through tmux when it is installed)."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
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

from firmware.app import run_pedal
from firmware.controls import mock_factory
from firmware.display import (
    Display,
    DisplayConfigError,
    DisplayError,
    KeptDisplay,
    decode_asciiblock,
    display_name,
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


def test_a_display_that_does_not_answer_costs_no_luma_device() -> None:
    # luma keeps every device it builds until exit; a display retried every 10 s that
    # built one per attempt would hold ~300 KB more each time
    import gc

    def devices() -> int:
        gc.collect()
        return sum(type(o).__name__ == "ssd1306" for o in gc.get_objects())

    before = devices()
    for _ in range(3):
        with pytest.raises(DisplayError):
            open_display(spec(), serial_interface=RecordingSerial(OSError(121, "NACK")))
    assert devices() == before
    serial = RecordingSerial()
    open_display(spec(), serial_interface=serial)
    assert serial.commands[0] == 0xE3  # the NOP that asked, then the driver's start-up
    assert devices() == before + 1


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


# ----------------------------------------------------------------------------- KeptDisplay


class Clock:
    """The display's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Bench:
    """An OLED that the test plugs in and pulls out: while it is out the opener is the real
    ``open_display`` on a bus that is not there (I2C 97); in, it is the driver on a
    :class:`RecordingSerial`, which can also start failing like a loose cable."""

    def __init__(self) -> None:
        self.plugged = False
        self.serial = RecordingSerial()
        self.opened = 0

    def open(self) -> Any:
        self.opened += 1
        if not self.plugged:
            return open_display(spec(i2c_port=97))
        return open_display(spec(), serial_interface=self.serial)


def missing_bus_message() -> str:
    with pytest.raises(DisplayError) as err:
        open_display(spec(i2c_port=97))
    return str(err.value)


RETRYING = "; running without a screen, trying again every 10 s"


def test_a_missing_display_is_said_once_and_tried_every_10_s_until_it_is_back() -> None:
    bench, clock, said = Bench(), Clock(), []
    kept = KeptDisplay(bench.open, said.append, name=display_name(spec()), clock=clock)
    view = View(status=busy_status(0), selected=(1, 1))
    assert kept.open() is False and not kept.shown
    assert said == [f"display: {missing_bus_message()}{RETRYING}"]
    assert "I2C bus 97 at address 0x3C" in said[0]
    # no attempt inside the 10 s, however many frames
    for dt in (0.0, 1.0, 5.0, 9.99):
        clock.now = 500.0 + dt
        assert kept.show(view) is False
    assert bench.opened == 1
    # at 10 s one attempt, which fails again: nothing said, the next one 10 s later
    clock.now = 510.0
    assert kept.show(view) is False and bench.opened == 2
    clock.now = 519.9
    bench.plugged = True
    assert kept.show(view) is False and bench.opened == 2
    assert len(said) == 1
    # plugged in: found at the next attempt, said, and the frame pushed
    clock.now = 520.0
    assert kept.show(view) is True and bench.opened == 3
    assert said[1:] == ["display: back"]
    assert bench.serial.data_bytes >= 128 * 64 // 8
    # then frames as ever: an unchanged one is skipped, no more attempts
    clock.now = 600.0
    assert kept.show(view) is False and bench.opened == 3
    assert kept.outages == 1


def test_a_failing_frame_drops_the_display_until_it_opens_again() -> None:
    bench, clock, said = Bench(), Clock(), []
    bench.plugged = True
    kept = KeptDisplay(bench.open, said.append, name=display_name(spec()), clock=clock)
    view = View(status=busy_status(0), selected=(1, 1))
    assert kept.open() is True and kept.show(view) is True and said == []
    # the cable comes loose: the frame fails, the pedal goes on without a screen
    bench.serial.fail = OSError(121, "Remote I/O error")
    moved = dataclasses.replace(view, selected=(2, 1))
    assert kept.show(moved) is False and not kept.shown
    assert said == ["display: ssd1306 on I2C bus 1 at address 0x3C: frame not shown: "
                    f"OSError: [Errno 121] Remote I/O error{RETRYING}"]
    clock.now += 9.9
    assert kept.show(moved) is False and bench.opened == 1
    clock.now += 0.1  # an attempt; the controller does not answer its start-up commands
    assert kept.show(moved) is False and bench.opened == 2
    assert len(said) == 1  # once per outage
    # back in: the display is started anew and the frame pushed whole
    bench.serial.fail = None
    pushed = bench.serial.data_bytes
    clock.now += 10.0
    assert kept.show(moved) is True and bench.opened == 3
    assert said[1:] == ["display: back"]
    assert bench.serial.data_bytes - pushed >= 128 * 64 // 8
    assert kept.display is not None and kept.display.last_image is not None
    assert kept.display.last_image.tobytes() == render(moved).tobytes()
    # a second outage is said again
    bench.serial.fail = OSError(5, "Input/output error")
    assert kept.show(view) is False
    assert said[2].endswith(f"Input/output error{RETRYING}") and kept.outages == 2


def test_a_display_setting_no_driver_can_do_is_fatal_at_start() -> None:
    kept = KeptDisplay(lambda: open_display(spec(driver="ssd1309")), [].append)
    with pytest.raises(DisplayConfigError, match="ssd1309"):
        kept.open()


def test_a_wrong_setting_found_only_later_is_said_and_not_retried() -> None:
    clock, said = Clock(), []
    answers = [lambda: open_display(spec(i2c_port=97)), lambda: dummy_display(128, 32)]
    kept = KeptDisplay(lambda: answers.pop(0)(), said.append, name=display_name(spec()),
                       clock=clock)
    assert kept.open() is False
    clock.now += 10
    assert kept.show(View(status=None)) is False
    assert said[1] == ("display: ssd1306 on I2C bus 1 at address 0x3C: 128x32 pixels, but "
                       "the screens are drawn for 128x64; running without a screen (a "
                       "setting to change: not trying again)")
    clock.now += 100
    assert kept.show(View(status=None)) is False and kept.attempts == 2


def test_the_pedal_runs_on_without_its_display(tmp_path: Path) -> None:
    """``run_pedal`` on the Pi's path (mock pins injected) with the OLED's bus missing: it
    says so once, keeps its frames going, and a footswitch still acts."""
    factory = mock_factory()
    lines: list[str] = []
    pm_fs1 = 17  # rpi4: FS1 on GPIO17

    def press() -> None:
        factory.pin(pm_fs1).drive_low()
        time.sleep(0.05)
        factory.pin(pm_fs1).drive_high()

    foot = threading.Timer(0.5, press)
    foot.start()
    try:
        rc = run_pedal(engine="127.0.0.1:9", data_dir=tmp_path, pinmap="rpi4", seconds=1.5,
                       pin_factory=factory, open_screen=lambda: open_display(spec(
                           i2c_port=97)), out=lines.append)
    finally:
        foot.join()
        factory.close()
    assert rc == 0
    assert lines[0] == f"ouro pedal: display: {missing_bus_message()}{RETRYING}"
    assert lines[1].startswith("ouro pedal: rpi4 pin map rpi4.toml")
    assert len(lines) == 3, lines
    frames, gestures = (int(w) for w in re.findall(
        r"stopped after (\d+) frames, (\d+) gestures", lines[2])[0])
    assert frames >= 10 and gestures == 1


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
