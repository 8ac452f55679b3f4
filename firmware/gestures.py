"""Footswitch gestures from press and release edges: tap, double-tap, hold.

A looper lives on timing, so a **tap acts on the press edge**, at once: the musician stamps
just before the beat and the engine quantizes from there. A second press within
``double_tap_s`` of the first is a **double** (it does not tap again), and a switch still
down after ``hold_time_s`` is a **hold**. Double and hold come *after* the tap has acted,
so a gesture map pairs them with actions that override it (tap plays, double stops the
column); see ``firmware/keymaps/default.toml``.

Debouncing is leading-edge: the first edge counts at once and the edges that follow it
within ``bounce_s`` are contact bounce, ignored (gpiozero's mock pins do not bounce-filter,
and on the Pi a filter that waits for the contact to settle would delay every tap by its
length). Where the bouncing leaves the contact in another state than the one counted,
``tick`` counts that state once the bounce time is over. Time is passed in, so the logic is
tested without clocks:

>>> d = GestureDetector(hold_time_s=0.5, double_tap_s=0.3)
>>> d.press(0.0), d.release(0.1), d.press(0.2), d.release(0.25)
('tap', None, 'double', None)
>>> d.press(1.0), d.tick(1.4), d.tick(1.6), d.release(2.0)
('tap', None, 'hold', None)
>>> d.press(3.0), d.release(3.001), d.press(3.002), d.release(3.1)  # bounces
('tap', None, None, None)
"""

from __future__ import annotations

import threading

__all__ = ["GESTURES", "GestureDetector"]

GESTURES = ("tap", "double", "hold")


class GestureDetector:
    """The gestures of one switch. ``press``/``release`` are the pin's raw edges (from its
    callbacks, any thread), ``tick`` comes from the pedal's frame loop; each returns the
    gesture that happened then, or None."""

    def __init__(self, hold_time_s: float = 0.6, double_tap_s: float = 0.3,
                 bounce_s: float = 0.02):
        if not 0 < hold_time_s <= 10:
            raise ValueError(f"hold_time_s must be in (0, 10] s, got {hold_time_s!r}")
        if not 0 <= double_tap_s <= 2:
            raise ValueError(f"double_tap_s must be in [0, 2] s, got {double_tap_s!r}")
        if not 0 <= bounce_s <= 0.2:
            raise ValueError(f"bounce_s must be in [0, 0.2] s, got {bounce_s!r}")
        self.hold_time_s = hold_time_s
        self.double_tap_s = double_tap_s
        self.bounce_s = bounce_s
        self._lock = threading.Lock()
        self.pressed = False  # the debounced state
        self._raw_down = False  # the contact as last seen
        self._edge_at = -1e9  # the last counted edge
        self._down_at = 0.0  # when the counted press began
        self._held = False  # this press has given its hold
        self._last_tap_at = -1e9  # the press that may start a double
        self.bounces = 0  # edges ignored as contact bounce

    def press(self, t: float) -> str | None:
        with self._lock:
            self._raw_down = True
            if self.pressed or t - self._edge_at < self.bounce_s:
                self.bounces += 1
                return None
            return self._count_press(t)

    def release(self, t: float) -> str | None:
        with self._lock:
            self._raw_down = False
            if not self.pressed or t - self._edge_at < self.bounce_s:
                self.bounces += 1
                return None
            return self._count_release(t)

    def tick(self, t: float) -> str | None:
        with self._lock:
            if self._raw_down != self.pressed and t - self._edge_at >= self.bounce_s:
                # the bounce settled in the state not yet counted
                if self._raw_down:
                    return self._count_press(t)
                return self._count_release(t)
            if self.pressed and not self._held and t - self._down_at >= self.hold_time_s:
                self._held = True
                return "hold"
            return None

    def _count_press(self, t: float) -> str:
        self.pressed = True
        self._edge_at = t
        self._down_at = t
        self._held = False
        if t - self._last_tap_at <= self.double_tap_s:
            self._last_tap_at = -1e9  # a third press starts afresh
            return "double"
        self._last_tap_at = t
        return "tap"

    def _count_release(self, t: float) -> str | None:
        self.pressed = False
        self._edge_at = t
        if self._held:
            self._last_tap_at = -1e9  # no double after a hold
            return None
        if t - self._down_at >= self.hold_time_s:
            # the frame loop missed the moment (a stall): the hold still counts
            self._last_tap_at = -1e9
            return "hold"
        return None
