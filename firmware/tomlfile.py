"""TOML files whose errors name the line: the pedal's pin maps and gesture maps.

:func:`load` parses a file with :mod:`tomllib` and returns the document with a
:class:`Lines` index that tells on which line each table and key was written, so a checker
can say ``hw/pinmaps/rpi4.toml:12: switches.fs2.pin: GPIO 18 is the I2S bit clock``.
The index is built from the text itself (``tomllib`` keeps no positions): table headers,
``[[arrays]]`` of tables and ``key = value`` lines, dotted and quoted keys included. A key
inside an inline table or a multi-line value takes the line of the key that opens it.

>>> doc, lines = loads('[a]\\nx = 1\\n\\n[a.b]\\n"y z" = 2\\n', "f.toml")
>>> lines.at(("a", "x")), lines.at(("a", "b", "y z")), lines.at(("a", "b"))
(2, 5, 4)
>>> lines.where(("a", "b", "y z"))
'f.toml:5: a.b."y z"'
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from firmware.errors import ConfigFileError

__all__ = ["Lines", "dotted", "load", "loads"]

Key = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_TOMLLIB_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def dotted(path: Key) -> str:
    """``("switches", "fs 1", 0, "pin")`` -> ``switches."fs 1"[0].pin``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
        out += ("." if out else "") + text
    return out


class Lines:
    """Where each table and key of one file was written (1-based line numbers)."""

    def __init__(self, name: str, text: str):
        self.name = name
        self._at: dict[Key, int] = {}
        self._index(text)

    def at(self, path: Key) -> int | None:
        """The line of ``path``, else of its nearest enclosing table or key that has one."""
        for n in range(len(path), 0, -1):
            line = self._at.get(tuple(path[:n]))
            if line is not None:
                return line
        return None

    def where(self, path: Key) -> str:
        """``file:line: dotted.path`` (without the line when it is not known)."""
        line = self.at(path)
        head = f"{self.name}:{line}" if line is not None else self.name
        return f"{head}: {dotted(path)}" if path else head

    def error(self, path: Key, problem: str, cls: type[ConfigFileError] = ConfigFileError
              ) -> ConfigFileError:
        """An exception of ``cls`` that says where and what: ``file:line: key: problem``."""
        return cls(f"{self.where(path)}: {problem}")

    # ------------------------------------------------------------------ the index

    def _index(self, text: str) -> None:
        table: Key = ()
        arrays: dict[Key, int] = {}
        depth = 0  # open brackets of a multi-line value: its lines hold no keys
        in_string = ""  # the delimiter of an open multi-line string
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if in_string:
                if in_string in line:
                    in_string = ""
                continue
            if depth > 0:
                depth += _brackets(line)
                continue
            if not line or line.startswith("#"):
                continue
            if line.startswith("[["):
                parts = _key_parts(line[2:line.find("]]")])
                if parts is None:
                    continue
                arrays[parts] = arrays.get(parts, -1) + 1
                table = (*parts, arrays[parts])
                self._at.setdefault(parts, number)
                self._at[table] = number
                continue
            if line.startswith("["):
                parts = _key_parts(line[1:line.find("]")])
                if parts is None:
                    continue
                table = _resolve(parts, arrays)
                self._at[table] = number
                continue
            key_text, eq, value = _split_assignment(line)
            if not eq:
                continue
            parts = _key_parts(key_text)
            if parts is None:
                continue
            self._at.setdefault((*table, *parts), number)
            for n in range(1, len(parts)):
                self._at.setdefault((*table, *parts[:n]), number)
            value = value.strip()
            for quote in ('"""', "'''"):
                if value.startswith(quote) and value.count(quote) == 1:
                    in_string = quote
            if not in_string:
                depth = max(0, _brackets(value))


def _resolve(parts: tuple[str, ...], arrays: dict[Key, int]) -> Key:
    """A header's path, with the index of the latest element of any array it runs through."""
    out: list[str | int] = []
    for part in parts:
        out.append(part)
        index = arrays.get(tuple(p for p in out if isinstance(p, str)))
        if index is not None:
            out.append(index)
    return tuple(out)


def _unquoted(text: str) -> Iterator[tuple[int, str]]:
    """The characters of ``text`` outside quoted strings (the quotes left out too), with
    their positions."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        else:
            yield i, ch


def _split_assignment(line: str) -> tuple[str, str, str]:
    """``key = value`` split at the first ``=`` outside quotes."""
    for i, ch in _unquoted(line):
        if ch == "=":
            return line[:i], "=", line[i + 1:]
    return line, "", ""


def _key_parts(text: str) -> tuple[str, ...] | None:
    """The parts of a dotted key (bare or quoted), or None if it is not one."""
    parts: list[str] = []
    rest = text.strip()
    while rest:
        if rest[0] in "\"'":
            end = rest.find(rest[0], 1)
            if end < 0:
                return None
            parts.append(rest[1:end])
            rest = rest[end + 1:].strip()
        else:
            m = _BARE.match(rest)
            if m is None:
                return None
            parts.append(m.group())
            rest = rest[m.end():].strip()
        if rest.startswith("."):
            rest = rest[1:].strip()
        elif rest:
            return None
    return tuple(parts) if parts else None


def _brackets(text: str) -> int:
    """Opening minus closing brackets and braces outside strings and comments."""
    count = 0
    for _, ch in _unquoted(text):
        if ch == "#":
            break
        elif ch in "[{":
            count += 1
        elif ch in "]}":
            count -= 1
    return count


def loads(text: str, name: str, cls: type[ConfigFileError] = ConfigFileError
          ) -> tuple[dict[str, Any], Lines]:
    """Parse TOML ``text`` (called ``name`` in messages); a syntax error raises ``cls``
    with ``name:line:`` in front of tomllib's own description."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOMLLIB_AT.search(message)
        if m is not None:
            reason = message[:m.start()].strip()
            raise cls(f"{name}:{m.group(1)}: not valid TOML: {reason} "
                      f"(column {m.group(2)})") from None
        raise cls(f"{name}: not valid TOML: {message}") from None
    return doc, Lines(name, text)


def load(path: str | Path, cls: type[ConfigFileError] = ConfigFileError
         ) -> tuple[dict[str, Any], Lines]:
    """Read and parse the TOML file at ``path``; any failure raises ``cls`` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise cls(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise cls(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise cls(f"{path}: cannot read: {exc.strerror or exc}") from None
    return loads(text, str(path), cls)

