"""Engine configuration: one validated, immutable record shared by live and offline runs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from rtcore.errors import ConfigError

T = TypeVar("T")

SYNC_SOURCES = ("internal", "midi")  # where the beat grid's tempo and phase come from
TEMPO_MIN_BPM = 20.0
TEMPO_MAX_BPM = 300.0
VOLUME_MAX = 4.0  # +12 dB: enough headroom for a quiet loop, not enough to hurt anyone


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine needs to know before its first block.

    >>> EngineConfig(tempo_bpm=90).frames_per_beat
    32000.0
    """

    sample_rate: int = 48000
    block_size: int = 128
    channels: int = 2
    columns: int = 5
    rows: int = 5
    tempo_bpm: float = 120.0
    beats_per_bar: int = 4
    declick_ms: float = 5.0
    smoothing_ms: float = 10.0
    latency_frames: int = 0
    monitor_input: bool = False
    monitor_gain: float = 1.0
    click: bool = False
    click_volume: float = 0.5
    master_volume: float = 1.0
    chunk_frames: int = 8192
    max_loop_seconds: float = 120.0
    pool_reserve_chunks: int = 64
    record_budget_minutes: float = 30.0  # all recorded audio held at once, history included
    undo_depth: int = 16  # recordings (and clears) a cell can step back through
    sync: str = "internal"  # or "midi": follow an external MIDI clock
    clock_out: bool = False  # send MIDI clock and transport from the engine's grid
    count_in: bool = False  # one bar of click before a recording that starts from silence
    midi_map: str = "default"  # MIDI input -> commands: "default", "none" or a TOML file

    def __post_init__(self) -> None:
        _int_in(self, "sample_rate", 8000, 384000)
        _int_in(self, "block_size", 1, 8192)
        _int_in(self, "channels", 1, 8)
        _int_in(self, "columns", 1, 16)
        _int_in(self, "rows", 1, 16)
        _num_in(self, "tempo_bpm", TEMPO_MIN_BPM, TEMPO_MAX_BPM)
        _int_in(self, "beats_per_bar", 1, 32)
        _num_in(self, "declick_ms", 0.0, 100.0)
        _num_in(self, "smoothing_ms", 0.0, 1000.0)
        _int_in(self, "latency_frames", 0, 48000)
        check_bool(self, "monitor_input")
        _num_in(self, "monitor_gain", 0.0, VOLUME_MAX)
        check_bool(self, "click")
        _num_in(self, "click_volume", 0.0, VOLUME_MAX)
        _num_in(self, "master_volume", 0.0, VOLUME_MAX)
        _int_in(self, "chunk_frames", 64, 1 << 20)
        _num_in(self, "max_loop_seconds", 1.0, 3600.0)
        _int_in(self, "pool_reserve_chunks", 2, 1 << 16)
        _num_in(self, "record_budget_minutes", 0.1, 24 * 60.0)
        _int_in(self, "undo_depth", 1, 256)
        if self.sync not in SYNC_SOURCES:
            raise ConfigError(f"sync must be one of {', '.join(SYNC_SOURCES)}, "
                              f"got {self.sync!r}")
        check_bool(self, "clock_out")
        check_bool(self, "count_in")
        if not isinstance(self.midi_map, str) or not self.midi_map:
            raise ConfigError(f"midi_map must be 'default', 'none' or a file name, "
                              f"got {self.midi_map!r}")
        if self.chunk_frames < self.block_size:
            raise ConfigError(
                f"chunk_frames ({self.chunk_frames}) must be at least block_size "
                f"({self.block_size})"
            )

    @property
    def frames_per_beat(self) -> float:
        return self.sample_rate * 60.0 / self.tempo_bpm

    @property
    def declick_frames(self) -> int:
        return round(self.declick_ms * self.sample_rate / 1000.0)

    @property
    def smoothing_frames(self) -> int:
        return round(self.smoothing_ms * self.sample_rate / 1000.0)

    @property
    def max_loop_frames(self) -> int:
        return round(self.max_loop_seconds * self.sample_rate)

    @property
    def record_budget_frames(self) -> int:
        return round(self.record_budget_minutes * 60.0 * self.sample_rate)

    @property
    def max_chunks_per_take(self) -> int:
        # +2: a take may start mid-chunk after a latency shift and needs a spare at the end
        return -(-self.max_loop_frames // self.chunk_frames) + 2

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config") -> EngineConfig:
        """Build from a mapping (a script's header, a config file), naming unknown keys."""
        return settings_from_mapping(cls, data, where)


def settings_from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """A settings dataclass built from a mapping (a TOML table, a script's header): unknown
    keys, a mapping that is not one and every bad value are named with ``where``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a table of settings, got {data!r}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(known))}")
    try:
        return cls(**{k: data[k] for k in known if k in data})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_bool(cfg: object, name: str) -> None:
    """``cfg.name`` is a bool, or a ConfigError names it."""
    if not isinstance(getattr(cfg, name), bool):
        raise ConfigError(f"{name} must be true or false, got {getattr(cfg, name)!r}")


def _int_in(cfg: EngineConfig, name: str, lo: int, hi: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")


def _num_in(cfg: EngineConfig, name: str, lo: float, hi: float) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {value}")
