"""The firmware's exceptions: one root, :class:`PedalError`; each subclass also inherits the
built-in it resembles, so callers that catch ``ValueError`` or ``OSError`` still catch it."""

from __future__ import annotations

__all__ = ["ConfigFileError", "DisplayConfigError", "DisplayError", "GpioError", "KeyMapError",
           "PedalError", "PinMapError"]


class PedalError(Exception):
    """Anything the pedal process reports instead of crashing."""


class ConfigFileError(PedalError, ValueError):
    """A TOML file of the pedal is wrong. The message starts with ``path:line:`` where the
    line is known, then names the key and what is wrong with it."""


class PinMapError(ConfigFileError):
    """A pin map (``hw/pinmaps/*.toml``) is invalid."""


class KeyMapError(ConfigFileError):
    """A gesture map (footswitch gestures to commands) is invalid."""


class GpioError(PedalError, OSError):
    """The GPIO could not be opened (no GPIO on this machine, a pin in use, ...)."""


class DisplayError(PedalError, OSError):
    """The display cannot be opened or written to. The message names the driver, the bus
    and the address, and what to check."""


class DisplayConfigError(PedalError, ValueError):
    """A display spec asks for something no driver can do (unknown driver or bus, a size
    or rotation the controller does not support)."""
