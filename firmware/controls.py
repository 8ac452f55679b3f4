"""The pedal's controls with gpiozero: footswitches, the optional rotary encoder, the LEDs.

The only module that imports gpiozero. The pin factory is passed in, so gpiozero's own
:class:`~gpiozero.pins.mock.MockFactory` stands in for the Pi's GPIO in tests, in the
benchmark and in the desktop pedal (``ouro pedal --emulate``), where keys drive the mock
pins exactly as a foot drives the real ones.

Each switch's edges go to a :class:`~firmware.gestures.GestureDetector`; a tap is reported
from the pin's callback, at the edge, so the command leaves at once. Holds (and contacts
that settle after bouncing) are found by :meth:`Controls.tick`, called by the pedal's frame
loop.

:func:`pi_factory` is the Pi's own pin factory: gpiozero's ``LGPIOFactory`` on the gpiochip
that :mod:`firmware.gpio` chose, knowing the board even where the kernel does not tell its
revision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpiozero import PWMLED, Button, RotaryEncoder
from gpiozero.exc import BadPinFactory, GPIOZeroError, PinError, PinUnknownPi
from gpiozero.pins.mock import MockFactory, MockPWMPin

from firmware.errors import GpioError
from firmware.gestures import GestureDetector
from firmware.keymap import ENCODER
from firmware.pinmap import PinMap

__all__ = ["Controls", "GpioError", "mock_factory", "pi_factory", "pi_revision"]

OnGesture = Callable[[str, str], None]


def mock_factory() -> Any:
    """gpiozero's mock pins, PWM-capable so the LEDs can dim: the pedal without a Pi."""
    return MockFactory(pin_class=MockPWMPin)


def pi_revision(fallback: int | None) -> int:
    """The Pi's revision code as gpiozero finds it (``/proc/device-tree/system/
    linux,revision``, else the ``Revision`` line of ``/proc/cpuinfo``), else ``fallback``
    (:func:`firmware.gpio.board_revision` of the device tree's board): Debian's arm64
    kernel shows neither, and gpiozero needs the board for every pin."""
    from gpiozero.pins.local import get_pi_revision

    try:
        return int(get_pi_revision())
    except PinUnknownPi as exc:
        if fallback is None:
            raise GpioError(f"{exc}, and the device tree names no Raspberry Pi board "
                            f"that the pedal knows (see firmware/gpio.py BOARD_REVISIONS)"
                            ) from None
        return fallback
    except OSError as exc:
        raise GpioError(f"cannot read the Pi's revision: {exc}") from None


def pi_factory(chip: int, fallback_revision: int | None = None) -> Any:
    """gpiozero's ``LGPIOFactory`` on ``/dev/gpiochip<chip>`` (so it does not guess the chip
    itself), taking the board's revision from :func:`pi_revision`.

    lgpio is imported here, on the Pi only (the ``pi`` extra, or Debian's
    ``python3-lgpio``); raises :class:`GpioError` when it is missing or the chip cannot be
    opened.
    """
    try:
        from gpiozero.pins.lgpio import LGPIOFactory
    except ImportError as exc:
        raise GpioError(f"gpiozero's lgpio pin factory needs the lgpio module ({exc}): "
                        f"install the 'pi' extra (pip install '.[pedal,pi]') or Debian's "
                        f"python3-lgpio; on a desk, run 'ouro pedal --emulate'") from None

    class PiFactory(LGPIOFactory):
        def _get_revision(self) -> int:
            return pi_revision(fallback_revision)

    try:
        return PiFactory(chip=chip)
    except GpioError:
        raise
    except Exception as exc:  # lgpio.error has no common base with OSError
        raise GpioError(f"cannot open /dev/gpiochip{chip} with lgpio: {exc}") from None


class Controls:
    """The switches, encoder and LEDs of ``pinmap``. ``on_gesture(control, gesture)`` is
    called with ``("fs1", "tap")``, ``("encoder", "cw")``, ... from the pin callbacks (taps,
    encoder steps) or from :meth:`tick` (holds)."""

    def __init__(self, pinmap: PinMap, on_gesture: OnGesture, *, hold_time_s: float = 0.6,
                 double_tap_s: float = 0.3, bounce_s: float = 0.02,
                 pin_factory: Any = None, clock: Callable[[], float] = time.monotonic):
        self.pinmap = pinmap
        self.on_gesture = on_gesture
        self.clock = clock
        self.factory = pin_factory
        self.detectors: dict[str, GestureDetector] = {}
        self.buttons: dict[str, Any] = {}
        self.leds: dict[str, Any] = {}
        self.encoder: Any = None
        self.steps = 0  # encoder detents counted (cw positive)
        self._devices: list[Any] = []
        try:
            for sw in pinmap.switches:
                self._button(sw.name, sw.pin, sw.pull_up, hold_time_s, double_tap_s, bounce_s)
            enc = pinmap.encoder
            if enc is not None:
                self.encoder = self._open(RotaryEncoder, enc.a, enc.b, max_steps=0,
                                          pin_factory=pin_factory)
                self.encoder.when_rotated_clockwise = lambda: self._step(1)
                self.encoder.when_rotated_counter_clockwise = lambda: self._step(-1)
                if enc.push is not None:
                    self._button(ENCODER, enc.push, True, hold_time_s, double_tap_s, bounce_s)
            for name, pin in pinmap.leds.items():
                self.leds[name] = self._open(PWMLED, pin, pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise

    def _open(self, cls: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            device = cls(*args, **kwargs)
        except BadPinFactory as exc:
            raise GpioError(f"no GPIO on this machine ({exc}); on a desk, run "
                            f"'ouro pedal --emulate'") from None
        except (GPIOZeroError, PinError, OSError) as exc:
            raise GpioError(f"{self.pinmap.path}: cannot open {cls.__name__} on GPIO "
                            f"{args[0]}: {exc or type(exc).__name__}") from None
        self._devices.append(device)
        return device

    def _button(self, name: str, pin: int, pull_up: bool, hold_time_s: float,
                double_tap_s: float, bounce_s: float) -> None:
        det = GestureDetector(hold_time_s, double_tap_s, bounce_s)
        self.detectors[name] = det
        button = self._open(Button, pin, pull_up=pull_up, pin_factory=self.factory)
        button.when_pressed = lambda: self._edge(name, det.press(self.clock()))
        button.when_released = lambda: self._edge(name, det.release(self.clock()))
        self.buttons[name] = button

    def _edge(self, name: str, gesture: str | None) -> None:
        if gesture is not None:
            self.on_gesture(name, "push" if name == ENCODER and gesture == "tap" else gesture)

    def _step(self, direction: int) -> None:
        self.steps += direction
        self.on_gesture(ENCODER, "cw" if direction > 0 else "ccw")

    def tick(self) -> None:
        """Holds and settled bounces; call it every frame."""
        now = self.clock()
        for name, det in self.detectors.items():
            gesture = det.tick(now)
            if gesture is not None:
                self._edge(name, gesture)

    def set_led(self, name: str, value: float) -> None:
        """Brightness 0..1 of the LED ``name`` (no-op when the pin map has none)."""
        led = self.leds.get(name)
        if led is not None and led.value != value:
            led.value = value

    # ------------------------------------------------------------------ mock pins

    def drive(self, name: str, down: bool) -> None:
        """Move a switch's mock pin as a foot would (``MockFactory`` only): ``down`` pulls a
        pull-up switch's pin low."""
        if not isinstance(self.factory, MockFactory):
            raise GpioError("drive() needs gpiozero's MockFactory pins")
        button = self.buttons[name]
        pin = button.pin
        active_low = button.pull_up
        if down == active_low:
            pin.drive_low()
        else:
            pin.drive_high()

    def turn(self, steps: int) -> None:
        """Turn the encoder's mock pins by ``steps`` detents (cw positive)."""
        if self.encoder is None or not isinstance(self.factory, MockFactory):
            raise GpioError("turn() needs an encoder on gpiozero's MockFactory pins")
        a, b = self.encoder.a.pin, self.encoder.b.pin
        first, second = (a, b) if steps > 0 else (b, a)
        for _ in range(abs(steps)):
            first.drive_low()
            second.drive_low()
            first.drive_high()
            second.drive_high()

    def led_value(self, name: str) -> float:
        led = self.leds.get(name)
        return 0.0 if led is None else float(led.value)

    def close(self) -> None:
        for device in reversed(self._devices):
            try:
                device.close()
            except Exception:  # closing what failed half-way must not hide the first error
                pass
        self._devices.clear()

