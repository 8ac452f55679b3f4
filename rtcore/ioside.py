"""The engine's non-real-time side: stocks the chunk pool, consolidates, builds stacks.

It talks to the audio thread only through the engine's ``to_io`` and ``from_io`` deques
and the pool's deques, so the audio thread never waits for it. Offline, ``service()`` runs
between blocks (deterministic); live, :class:`IOThread` runs it in a loop.
"""

from __future__ import annotations

import threading
import time
import zlib
from typing import TYPE_CHECKING

import numpy as np

from rtcore.engine import Engine
from rtcore.loops import Audio, Take, consolidate

if TYPE_CHECKING:
    from rtcore.store import SessionKeeper


class IOSide:
    """Does everything slow on the engine's behalf. Call :meth:`service` often.

    With a :class:`~rtcore.store.SessionKeeper` it also saves each loop as soon as it is
    consolidated and keeps the session's manifest up to date.
    """

    def __init__(self, engine: Engine, keeper: SessionKeeper | None = None):
        self.engine = engine
        self.keeper = keeper
        self.consolidated = 0
        self.stacks_built = 0
        self.consolidate_ms = 0.0  # the last consolidation's time

    def service(self) -> int:
        """One round of work; returns how many things were done."""
        eng = self.engine
        q = eng.to_io
        done = 0
        if q:
            while q:
                msg = q.popleft()
                kind = msg[0]
                if kind == "finished":
                    self._consolidate(msg[1])
                elif kind == "discard":
                    self._recycle(msg[1])
                elif kind == "chunks":
                    self._give_back(msg[1])
                elif kind == "release" and isinstance(msg[1], Take):
                    self._give_back(msg[1])
                    if self.keeper is not None:
                        self.keeper.forget(msg[1])
                # "release" of anything else: dropping the reference here frees the memory
                # off the audio thread
                done += 1
            eng.pool.held_frames = self._held_frames()
        done += eng.pool.stock()
        for col in eng.columns:
            if col.restack:
                col.restack = False
                self._restack(col.index)
                done += 1
        if self.keeper is not None:
            done += self.keeper.service(time.monotonic())
        return done

    def _consolidate(self, take: Take) -> None:
        t0 = time.perf_counter()
        data = consolidate(take)
        self.consolidate_ms = (time.perf_counter() - t0) * 1000.0
        take.crc = zlib.crc32(data.data)
        self.consolidated += 1
        self.engine.from_io.append(("consolidated", take, data))
        if self.keeper is not None:
            self.keeper.loop_done(take, data)

    def _give_back(self, take: Take) -> None:
        """A take's chunks are no longer read (it is consolidated, or released)."""
        pool = self.engine.pool
        for i in range(take.nchunks):
            chunk = take.chunks[i]
            take.chunks[i] = None
            if chunk is not None:
                pool.give_back(chunk)

    def _held_frames(self) -> int:
        """The consolidated audio the matrix holds (every take in every cell's history,
        counted once): what the recording budget counts besides the chunks."""
        seen: set[int] = set()
        total = 0
        for col in self.engine.columns:
            for cell in self.engine.cells[col.index]:
                for entry in cell.hist[:cell.hist_len]:
                    if isinstance(entry, Take) and entry.data is not None \
                            and id(entry) not in seen:
                        seen.add(id(entry))
                        total += entry.length
        return total

    def _recycle(self, take: Take) -> None:
        pool = self.engine.pool
        self._give_back(take)
        take.reset(0)
        if len(pool.takes) < pool.reserve_takes:
            pool.takes.append(take)

    def _restack(self, column: int) -> None:
        """All of a column's consolidated loops in one (rows, length, channels) array."""
        eng = self.engine
        col = eng.columns[column]
        length = col.length
        if length == 0:
            return
        takes: list[Take | None] = []
        rows: list[Audio | None] = []
        for cell in eng.cells[column]:
            take = cell.take
            ok = take is not None and take.data is not None and take.length == length
            takes.append(take if ok else None)
            rows.append(take.data if ok and take is not None else None)
        if not any(t is not None for t in takes):
            return
        stack = np.zeros((len(rows), length, eng.channels), np.float32)
        for r, data in enumerate(rows):
            if data is not None:
                stack[r] = data
        self.stacks_built += 1
        eng.from_io.append(("stack", column, stack, takes))


class IOThread:
    """Runs an :class:`IOSide` in a background thread until :meth:`stop`."""

    def __init__(self, io: IOSide, period_s: float = 0.02):
        self.io = io
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ouro-io", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.io.service():
                self._stop.wait(self.period_s)
