"""The companion's errors: one root, and subclasses that also inherit the built-in a caller
would expect (a bad project is a ``ValueError`` too)."""

from __future__ import annotations


class CompanionError(Exception):
    """Root of every error the companion raises on purpose."""


class ProjectError(CompanionError, ValueError):
    """A project, or an edit to one, that breaks the render contract. ``where`` names the
    track, clip or field (``tracks[1] "Bass" clips[0] "c3" length``); the message says what
    was wrong with it."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


class SourceError(CompanionError, ValueError):
    """An audio or MIDI file that cannot be read, or a pool reference that names nothing."""
