"""Which GPIO chip is the Raspberry Pi's header: the kernel's gpiochips, asked by label.

The pedal's pins are BCM GPIO numbers on the Pi's 40-pin header, and only one gpiochip
carries them: the Pi's own pin controller. Any other chip (a PL061 on QEMU's virt board, a
Pi 4's firmware GPIO expander, an I2C expander on a HAT) has lines with the same numbers that
go somewhere else, so the pedal picks the chip by its label, never by its number (a Pi 5's
RP1 is ``gpiochip4`` on older kernels and ``gpiochip0`` on newer ones).

:func:`list_gpiochips` asks the kernel about each ``/dev/gpiochipN`` (the GPIO character
device's ``GPIO_GET_CHIPINFO_IOCTL``); :func:`choose_pi_chip` is the choice, a pure function
over that list, and :func:`board_revision` names a revision code for the board the device
tree describes, which gpiozero needs when the kernel shows it none (Debian's arm64 kernel
has no ``Revision`` in ``/proc/cpuinfo``, see gpiozero issue #994). This module does not
import gpiozero (only ``firmware/controls.py`` does).

>>> qemu_virt = [GpioChip("/dev/gpiochip0", "gpiochip0", "9030000.pl061", 32)]
>>> choose_pi_chip(qemu_virt) is None
True
>>> describe_chips(qemu_virt)
'gpiochip0: 9030000.pl061, 32 lines'
>>> pi4 = [GpioChip("/dev/gpiochip0", "gpiochip0", "pinctrl-bcm2711", 58),
...        GpioChip("/dev/gpiochip1", "gpiochip1", "raspberrypi-exp-gpio", 8)]
>>> choose_pi_chip(pi4).number
0
>>> f"{board_revision(('raspberrypi,4-model-b', 'brcm,bcm2711')):06x}"
'c03111'
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BOARD_REVISIONS",
    "GPIO_GET_CHIPINFO_IOCTL",
    "PI_PIN_CONTROLLERS",
    "DeviceTree",
    "GpioChip",
    "board_revision",
    "choose_pi_chip",
    "describe_chips",
    "list_gpiochips",
    "read_device_tree",
    "read_gpiochip",
]

# struct gpiochip_info { char name[32]; char label[32]; __u32 lines; } (linux/gpio.h)
_CHIPINFO = struct.Struct("=32s32sI")
# _IOR(0xB4, 0x01, struct gpiochip_info): read, 68 bytes, type 0xB4, number 1
GPIO_GET_CHIPINFO_IOCTL = (2 << 30) | (_CHIPINFO.size << 16) | (0xB4 << 8) | 0x01

PI_PIN_CONTROLLERS = ("pinctrl-bcm2835", "pinctrl-bcm2711", "pinctrl-rp1")
"""The labels of the chip that drives the Pi's header: ``pinctrl-bcm2835`` on the Pi 1-3,
the Zeros and QEMU's raspi boards, ``pinctrl-bcm2711`` on the Pi 4, 400 and CM4,
``pinctrl-rp1`` on the Pi 5 (its RP1 I/O chip; the ``pinctrl-bcm2712`` chips of a Pi 5 are
the SoC's own lines, not the header's)."""

BOARD_REVISIONS: dict[str, int] = {
    "raspberrypi,5-model-b": 0xC04170,
    "raspberrypi,500": 0xC04190,
    "raspberrypi,5-compute-module": 0xD04180,
    "raspberrypi,4-model-b": 0xC03111,
    "raspberrypi,400": 0xC03130,
    "raspberrypi,4-compute-module": 0xA03140,
    "raspberrypi,3-model-b-plus": 0xA020D3,
    "raspberrypi,3-model-b": 0xA02082,
    "raspberrypi,3-model-a-plus": 0x9020E0,
    "raspberrypi,model-zero-2-w": 0x902120,
    "raspberrypi,2-model-b": 0xA01041,
    "raspberrypi,model-zero-w": 0x9000C1,
    "raspberrypi,model-zero": 0x900092,
    "raspberrypi,model-b-plus": 0x0010,
    "raspberrypi,model-a-plus": 0x0012,
}
"""A public revision code for each board with the 40-pin header, by the device tree's
``compatible`` (the kernel's own board names): the board as gpiozero knows it, for when the
kernel does not tell the revision. Only the header matters to the pedal, and it is the same
on all of them (GPIO17 at pin 11), so the memory size or PCB revision in a code is of no
consequence. Boards without that header (the first Model A and B, CM1 and CM3) are not here."""

_CHIP_NAME = re.compile(r"gpiochip(\d+)")


@dataclass(frozen=True)
class GpioChip:
    """One ``/dev/gpiochipN`` as the kernel describes it; ``error`` instead of the rest
    when it could not be asked (not a GPIO chip, permission denied, ...)."""

    path: str
    name: str
    label: str
    lines: int
    error: str | None = None

    @property
    def number(self) -> int:
        """N of ``gpiochipN``: what lgpio (and gpiozero's ``LGPIOFactory(chip=N)``) open."""
        m = _CHIP_NAME.fullmatch(os.path.basename(self.path))
        return int(m.group(1)) if m else -1

    def describe(self) -> str:
        base = os.path.basename(self.path)
        if self.error is not None:
            return f"{base}: {self.error}"
        return f"{base}: {self.label}, {self.lines} lines"


def read_gpiochip(path: str | Path) -> GpioChip:
    """Ask the kernel about one gpiochip character device (``GPIO_GET_CHIPINFO_IOCTL``).
    Anything that goes wrong comes back as the chip's ``error``, not raised."""
    path = str(path)
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return GpioChip(path, name, "", 0, _reason(exc))
    try:
        info = fcntl.ioctl(fd, GPIO_GET_CHIPINFO_IOCTL, bytes(_CHIPINFO.size))
    except OSError as exc:
        return GpioChip(path, name, "", 0, _reason(exc))
    finally:
        os.close(fd)
    raw_name, raw_label, lines = _CHIPINFO.unpack(info)
    return GpioChip(path, _cstr(raw_name) or name, _cstr(raw_label), int(lines))


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOTTY, errno.EINVAL):
        return f"not a GPIO chip ({os.strerror(exc.errno)})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (the pedal's user needs the gpio group)"
    return exc.strerror or str(exc)


def list_gpiochips(dev: str | Path = "/dev") -> list[GpioChip]:
    """Every ``gpiochipN`` in ``dev``, in the order of N, as the kernel describes it; [] when
    there is none (or no ``dev``)."""
    try:
        names = [n for n in os.listdir(dev) if _CHIP_NAME.fullmatch(n)]
    except OSError:
        return []
    names.sort(key=lambda n: int(n[len("gpiochip"):]))
    return [read_gpiochip(os.path.join(dev, n)) for n in names]


def choose_pi_chip(chips: list[GpioChip]) -> GpioChip | None:
    """The Raspberry Pi's header chip among ``chips`` (by its label, first one wins), or
    None when it is not there."""
    for chip in chips:
        if chip.error is None and chip.label in PI_PIN_CONTROLLERS:
            return chip
    return None


def describe_chips(chips: list[GpioChip], dev: str | Path = "/dev") -> str:
    """What was found, for a message: ``gpiochip0: 9030000.pl061, 32 lines; ...``."""
    if not chips:
        return f"no {os.path.join(dev, 'gpiochip*')}"
    return "; ".join(chip.describe() for chip in chips)


@dataclass(frozen=True)
class DeviceTree:
    """The board as the device tree names it: ``model`` ("Raspberry Pi 4 Model B Rev 1.4")
    and ``compatible`` (most specific first: "raspberrypi,4-model-b", "brcm,bcm2711")."""

    model: str | None
    compatible: tuple[str, ...]

    @property
    def board(self) -> str:
        """The model, else the first compatible, else ``unknown``."""
        return self.model or (self.compatible[0] if self.compatible else "unknown")


def read_device_tree(root: str | Path = "/proc/device-tree") -> DeviceTree:
    """``model`` and ``compatible`` from the device tree (NUL-separated strings); empty when
    the machine has no device tree."""
    root = Path(root)

    def strings(name: str) -> tuple[str, ...]:
        try:
            raw = (root / name).read_bytes()
        except OSError:
            return ()
        return tuple(s.decode("utf-8", "replace") for s in raw.split(b"\0") if s)

    model = strings("model")
    return DeviceTree(model[0] if model else None, strings("compatible"))


def board_revision(compatible: tuple[str, ...] | list[str]) -> int | None:
    """A revision code for the first board of ``compatible`` in :data:`BOARD_REVISIONS`,
    or None."""
    for name in compatible:
        code = BOARD_REVISIONS.get(name)
        if code is not None:
            return code
    return None
