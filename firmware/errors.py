"""The firmware's exceptions: one root, :class:`PedalError`; each subclass also inherits the
built-in it resembles, so callers that catch ``ValueError`` or ``OSError`` still catch it."""

from __future__ import annotations

__all__ = ["ConfigFileError", "KeyMapError", "PedalError", "PinMapError"]


class PedalError(Exception):
    """Anything the pedal process reports instead of crashing."""


class ConfigFileError(PedalError, ValueError):
    """A TOML file of the pedal is wrong. The message starts with ``path:line:`` where the
    line is known, then names the key and what is wrong with it."""


class PinMapError(ConfigFileError):
    """A pin map (``hw/pinmaps/*.toml``) is invalid."""


class KeyMapError(ConfigFileError):
    """A gesture map (footswitch gestures to commands) is invalid."""
