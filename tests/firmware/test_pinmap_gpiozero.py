"""The shipped pin maps' numbers are pins gpiozero accepts: every switch, encoder pin, LED
and display control line is built as a gpiozero device on a ``MockFactory`` that pretends to
be the map's board, and the header positions agree with gpiozero's own board data."""

from __future__ import annotations

import pytest
from gpiozero import LED, Button, DigitalOutputDevice, RotaryEncoder
from gpiozero.pins.mock import MockFactory

from firmware.pinmap import board_header, builtin_boards, builtin_pinmap

# Revision codes of a Pi 4 Model B (4 GB, rev 1.4) and a Pi 5 Model B (4 GB).
REVISIONS = {"rpi4": "c03114", "rpi5": "c04170"}


@pytest.mark.parametrize("name", builtin_boards())
def test_every_pin_builds_a_gpiozero_device(name: str) -> None:
    pm = builtin_pinmap(name)
    factory = MockFactory(revision=REVISIONS[pm.board])
    devices: list[object] = []
    try:
        assert factory.board_info.model == {"rpi4": "4B", "rpi5": "5B"}[pm.board]
        devices += [Button(s.pin, pull_up=s.pull_up, pin_factory=factory)
                    for s in pm.switches]
        if pm.encoder is not None:
            devices.append(RotaryEncoder(pm.encoder.a, pm.encoder.b, pin_factory=factory))
            if pm.encoder.push is not None:
                devices.append(Button(pm.encoder.push, pin_factory=factory))
        devices += [LED(pin, pin_factory=factory) for pin in pm.leds.values()]
        for pin in (pm.display.dc, pm.display.reset):
            if pin is not None:
                devices.append(DigitalOutputDevice(pin, pin_factory=factory))
        claimed = {pin.info.name for pin in factory.pins.values()}
        assert {f"GPIO{n}" for n in pm.pins() if n not in pm.reserved.values()} <= claimed

        header = factory.board_info.headers["J8"]
        ours = board_header(pm.board)
        for number, info in header.pins.items():
            assert ours[number] == info.name, number
    finally:
        for dev in reversed(devices):
            dev.close()  # type: ignore[attr-defined]
        factory.close()
