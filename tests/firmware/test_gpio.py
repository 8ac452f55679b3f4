"""The choice of the Raspberry Pi's pin controller among the gpiochips, by label, on the
chip lists of real machines; listing the chips of a directory (the ioctl itself needs a
gpiochip, which the image's QEMU boots have and this machine has not); the revision codes
of the device tree's boards, checked against gpiozero's own board data; and ``ouro pedal``
choosing its pins from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware.app import run_pedal
from firmware.controls import mock_factory, pi_factory, pi_revision
from firmware.errors import GpioError
from firmware.gpio import (
    BOARD_REVISIONS,
    GPIO_GET_CHIPINFO_IOCTL,
    DeviceTree,
    GpioChip,
    board_revision,
    choose_pi_chip,
    describe_chips,
    list_gpiochips,
    read_device_tree,
)
from firmware.pinmap import builtin_pinmap


def chips(*rows: tuple[int, str, int]) -> list[GpioChip]:
    return [GpioChip(f"/dev/gpiochip{n}", f"gpiochip{n}", label, lines)
            for n, label, lines in rows]


# what gpiodetect shows on each machine
QEMU_VIRT = chips((0, "9030000.pl061", 32))
QEMU_RASPI3B = chips((0, "pinctrl-bcm2835", 54))
PI4_DEBIAN = chips((0, "pinctrl-bcm2711", 58), (1, "raspberrypi-exp-gpio", 8))
PI5_KERNEL_6_1 = chips((0, "gpio-brcmstb@107d508500", 32), (1, "gpio-brcmstb@107d508520", 4),
                       (2, "gpio-brcmstb@107d517c00", 17), (3, "gpio-brcmstb@107d517c20", 6),
                       (4, "pinctrl-rp1", 54))
PI5_KERNEL_6_6 = chips((0, "pinctrl-rp1", 54), (10, "gpio-brcmstb@107d508500", 32),
                       (11, "gpio-brcmstb@107d508520", 4), (12, "gpio-brcmstb@107d517c00", 17),
                       (13, "gpio-brcmstb@107d517c20", 6))


def test_the_ioctl_number_is_linux_gpio_get_chipinfo() -> None:
    assert GPIO_GET_CHIPINFO_IOCTL == 0x8044B401


@pytest.mark.parametrize(("found", "number", "label"), [
    (QEMU_RASPI3B, 0, "pinctrl-bcm2835"),
    (PI4_DEBIAN, 0, "pinctrl-bcm2711"),
    (PI5_KERNEL_6_1, 4, "pinctrl-rp1"),
    (PI5_KERNEL_6_6, 0, "pinctrl-rp1"),
])
def test_the_pi_pin_controller_is_chosen_by_its_label(found: list[GpioChip], number: int,
                                                       label: str) -> None:
    chip = choose_pi_chip(found)
    assert chip is not None and (chip.number, chip.label) == (number, label)


def test_no_pi_pin_controller_on_other_machines() -> None:
    assert choose_pi_chip(QEMU_VIRT) is None
    assert choose_pi_chip([]) is None
    # a HAT's I2C expander is a gpiochip too, with pins numbered from 0
    assert choose_pi_chip(chips((0, "mcp23017", 16), (1, "raspberrypi-exp-gpio", 8))) is None


def test_an_unreadable_chip_is_passed_over_and_described() -> None:
    broken = GpioChip("/dev/gpiochip0", "gpiochip0", "", 0, "permission denied (the "
                      "pedal's user needs the gpio group)")
    assert choose_pi_chip([broken, *PI5_KERNEL_6_1]) == PI5_KERNEL_6_1[-1]
    assert describe_chips([broken]) == ("gpiochip0: permission denied (the pedal's user "
                                        "needs the gpio group)")


def test_what_was_found_is_described_for_the_log() -> None:
    assert describe_chips(QEMU_VIRT) == "gpiochip0: 9030000.pl061, 32 lines"
    assert describe_chips(PI4_DEBIAN) == ("gpiochip0: pinctrl-bcm2711, 58 lines; gpiochip1: "
                                          "raspberrypi-exp-gpio, 8 lines")
    assert describe_chips([]) == "no /dev/gpiochip*"


# ------------------------------------------------------------------------ listing chips


def test_a_directory_without_gpiochips_lists_none(tmp_path: Path) -> None:
    (tmp_path / "null").touch()
    (tmp_path / "gpiochip").touch()  # no number: not a chip's name
    (tmp_path / "gpiochipX").touch()
    assert list_gpiochips(tmp_path) == []
    assert list_gpiochips(tmp_path / "missing") == []


def test_files_that_are_not_gpio_chips_are_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "gpiochip9").write_text("not a chip\n")
    (tmp_path / "gpiochip10").symlink_to("/dev/null")
    (tmp_path / "gpiochip2").mkdir()
    found = list_gpiochips(tmp_path)
    assert [c.name for c in found] == ["gpiochip2", "gpiochip9", "gpiochip10"]  # by number
    assert [c.number for c in found] == [2, 9, 10]
    for chip in found:
        assert chip.error == "not a GPIO chip (Inappropriate ioctl for device)"
        assert (chip.label, chip.lines) == ("", 0)
    assert choose_pi_chip(found) is None
    assert describe_chips(found).startswith(
        "gpiochip2: not a GPIO chip (Inappropriate ioctl for device); gpiochip9: ")


def test_a_chip_that_cannot_be_opened_says_why(tmp_path: Path) -> None:
    (tmp_path / "gpiochip0").symlink_to(tmp_path / "gone")
    (chip,) = list_gpiochips(tmp_path)
    assert chip.error == "No such file or directory"
    if os.geteuid() != 0:  # root opens anything
        locked = tmp_path / "gpiochip1"
        locked.touch(mode=0)
        assert list_gpiochips(tmp_path)[1].error == ("permission denied (the pedal's user "
                                                     "needs the gpio group)")


def test_this_machines_gpiochips_list_without_raising() -> None:
    for chip in list_gpiochips():
        assert chip.path.startswith("/dev/gpiochip")
        assert chip.error is not None or chip.lines > 0


# ----------------------------------------------------------- the board and its revision


def test_the_device_tree_names_the_board(tmp_path: Path) -> None:
    (tmp_path / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    (tmp_path / "compatible").write_bytes(b"raspberrypi,4-model-b\0brcm,bcm2711\0")
    tree = read_device_tree(tmp_path)
    assert tree == DeviceTree("Raspberry Pi 4 Model B Rev 1.4",
                              ("raspberrypi,4-model-b", "brcm,bcm2711"))
    assert tree.board == "Raspberry Pi 4 Model B Rev 1.4"
    assert board_revision(tree.compatible) == 0xC03111
    (tmp_path / "model").unlink()
    assert read_device_tree(tmp_path).board == "raspberrypi,4-model-b"
    assert read_device_tree(tmp_path / "none") == DeviceTree(None, ())
    assert read_device_tree(tmp_path / "none").board == "unknown"


def test_boards_without_the_header_or_unknown_have_no_revision() -> None:
    assert board_revision(("linux,dummy-virt",)) is None  # QEMU virt
    assert board_revision(("raspberrypi,3-compute-module", "brcm,bcm2837")) is None
    assert board_revision(()) is None
    # the most specific name decides
    assert board_revision(("raspberrypi,3-model-b-plus", "raspberrypi,3-model-b")) == 0xA020D3


MODELS = {
    "raspberrypi,5-model-b": "5B", "raspberrypi,500": "500",
    "raspberrypi,5-compute-module": "CM5", "raspberrypi,4-model-b": "4B",
    "raspberrypi,400": "400", "raspberrypi,4-compute-module": "CM4",
    "raspberrypi,3-model-b-plus": "3B+", "raspberrypi,3-model-b": "3B",
    "raspberrypi,3-model-a-plus": "3A+", "raspberrypi,model-zero-2-w": "Zero2W",
    "raspberrypi,2-model-b": "2B", "raspberrypi,model-zero-w": "Zero W",
    "raspberrypi,model-zero": "Zero", "raspberrypi,model-b-plus": "B+",
    "raspberrypi,model-a-plus": "A+",
}


@pytest.mark.parametrize("compatible", sorted(BOARD_REVISIONS))
def test_each_revision_is_its_board_to_gpiozero_with_gpio17_at_pin_11(compatible: str) -> None:
    # the table is checked against gpiozero's own data, which only this test reads
    import gpiozero  # noqa: TID251
    from gpiozero.pins.mock import MockFactory  # noqa: TID251

    code = BOARD_REVISIONS[compatible]
    info = gpiozero.pi_info(f"{code:04x}" if code < 0x800000 else f"{code:06x}")
    assert info.model == MODELS[compatible]
    assert info.headers["J8"].pins[11].name == "GPIO17"
    # and every pin of the shipped map is a pin of that board
    factory = MockFactory(revision=f"{code:x}")
    pm = builtin_pinmap("rpi4")
    pins = [s.pin for s in pm.switches] + list(pm.leds.values())
    if pm.encoder is not None:
        pins += [pm.encoder.a, pm.encoder.b]
    try:
        for pin in pins:
            assert factory.pin(pin).info.name == f"GPIO{pin}"
    finally:
        factory.close()


def _kernel_tells_the_revision() -> bool:
    if os.path.exists("/proc/device-tree/system/linux,revision"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("Revision") for line in f)
    except OSError:
        return False


@pytest.mark.skipif(_kernel_tells_the_revision(), reason="this kernel tells the revision")
def test_the_revision_falls_back_on_the_device_trees_board() -> None:
    # here, as on Debian's arm64 kernel, gpiozero's own lookup finds nothing
    assert pi_revision(0xC03111) == 0xC03111
    with pytest.raises(GpioError, match=r"unable to locate Pi revision.*no Raspberry Pi board"):
        pi_revision(None)


def test_the_pi_factory_without_lgpio_says_what_to_install() -> None:
    try:
        import lgpio  # noqa: F401

        pytest.skip("lgpio is installed here")
    except ImportError:
        pass
    with pytest.raises(GpioError, match=r"needs the lgpio module .*python3-lgpio"):
        pi_factory(0, 0xC03111)


# ------------------------------------------------------------- ouro pedal's choice of pins


def run(tmp_path: Path, **kwargs: object) -> tuple[int, list[str]]:
    lines: list[str] = []
    rc = run_pedal(engine="127.0.0.1:9", data_dir=tmp_path / "data", seconds=0.2,
                   out=lines.append, device_tree=tmp_path / "no-device-tree",
                   **kwargs)  # type: ignore[arg-type]
    return rc, lines


@pytest.fixture(autouse=True)
def _no_pin_factory_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)


def test_without_a_pi_pin_controller_the_pedal_stops_and_says_what_it_found(
        tmp_path: Path) -> None:
    rc, lines = run(tmp_path, gpiochips=QEMU_VIRT)
    assert rc == 2
    assert lines == [
        "ouro pedal: error: no Raspberry Pi GPIO pin controller (a gpiochip labelled "
        "pinctrl-bcm2835, pinctrl-bcm2711, pinctrl-rp1) here (gpiochip0: 9030000.pl061, 32 "
        "lines); on a desk, run 'ouro pedal --emulate', or add --headless-without-gpio to "
        "run on mock pins where there is none"]


@pytest.mark.parametrize(("found", "said"), [
    (QEMU_VIRT, "gpiochip0: 9030000.pl061, 32 lines"),
    ([], "no /dev/gpiochip*"),
])
def test_headless_without_gpio_runs_on_mock_pins_after_one_line(
        tmp_path: Path, found: list[GpioChip], said: str) -> None:
    rc, lines = run(tmp_path, gpiochips=found, headless_without_gpio=True)
    assert rc == 0
    assert lines[0] == f"ouro pedal: no Raspberry Pi GPIO here ({said}): headless (mock pins)"
    assert lines[1].endswith("; emulated (headless)")
    assert lines[2].startswith("ouro pedal: stopped after ")
    assert len(lines) == 3


def test_headless_without_gpio_over_files_that_are_not_chips(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "gpiochip0").symlink_to("/dev/null")
    rc, lines = run(tmp_path, gpiochips=list_gpiochips(dev), headless_without_gpio=True)
    assert rc == 0
    assert lines[0] == ("ouro pedal: no Raspberry Pi GPIO here (gpiochip0: not a GPIO chip "
                        "(Inappropriate ioctl for device)): headless (mock pins)")


def test_on_the_pi_pin_controller_the_pedal_names_chip_and_board(tmp_path: Path) -> None:
    tree = tmp_path / "no-device-tree"
    tree.mkdir()
    (tree / "model").write_bytes(b"Raspberry Pi 3 Model B\0")
    (tree / "compatible").write_bytes(b"raspberrypi,3-model-b\0brcm,bcm2837\0")
    rc, lines = run(tmp_path, gpiochips=QEMU_RASPI3B)
    assert lines[0] == ("ouro pedal: GPIO /dev/gpiochip0 (pinctrl-bcm2835, 54 lines), board "
                        "Raspberry Pi 3 Model B")
    try:
        import lgpio  # noqa: F401
    except ImportError:  # here: the factory cannot be made, and the pedal says why
        assert rc == 2
        assert lines[1].startswith("ouro pedal: error: gpiozero's lgpio pin factory needs "
                                   "the lgpio module")


def test_an_emulated_pedal_does_not_look_for_gpio(tmp_path: Path) -> None:
    rc, lines = run(tmp_path, gpiochips=QEMU_VIRT, emulate="headless")
    assert rc == 0 and "GPIO" not in lines[0]


def test_gpiozero_pin_factory_mock_gives_mock_pins_and_the_real_display(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    from firmware.display import open_display
    from firmware.pinmap import DisplaySpec

    rc, lines = run(tmp_path, gpiochips=QEMU_VIRT, open_screen=lambda: open_display(
        DisplaySpec(driver="ssd1306", bus="i2c", i2c_port=97, i2c_address=0x3C)))
    assert rc == 0
    assert lines[0] == "ouro pedal: GPIO: mock pins (GPIOZERO_PIN_FACTORY=mock)"
    assert lines[1].startswith("ouro pedal: display: ssd1306 on I2C bus 97 at address 0x3C")


def test_an_injected_pin_factory_skips_the_search(tmp_path: Path) -> None:
    from firmware.display import dummy_display

    factory = mock_factory()
    try:
        rc, lines = run(tmp_path, gpiochips=QEMU_VIRT, pin_factory=factory,
                        open_screen=dummy_display)
    finally:
        factory.close()
    assert rc == 0 and len(lines) == 2 and "emulated" not in lines[0]
