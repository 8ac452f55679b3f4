"""The engine's non-real-time side: stocks the chunk pool, consolidates, builds stacks.

It talks to the audio thread only through the engine's ``to_io`` and ``from_io`` deques
and the pool's deques, so the audio thread never waits for it. Offline, ``service()`` runs
between blocks (deterministic); live, :class:`IOThread` runs it in a loop.
"""

from __future__ import annotations

import threading

import numpy as np

from rtcore.engine import Engine
from rtcore.loops import Audio, Take, consolidate


class IOSide:
    """Does everything slow on the engine's behalf. Call :meth:`service` often."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.consolidated = 0
        self.stacks_built = 0

    def service(self) -> int:
        """One round of work; returns how many things were done."""
        eng = self.engine
        done = eng.pool.stock()
        q = eng.to_io
        while q:
            msg = q.popleft()
            kind = msg[0]
            if kind == "finished":
                self._consolidate(msg[1])
            elif kind == "discard":
                self._recycle(msg[1])
            # "release": dropping the reference here frees the memory off the audio thread
            done += 1
        for col in eng.columns:
            if col.restack:
                col.restack = False
                self._restack(col.index)
                done += 1
        return done

    def _consolidate(self, take: Take) -> None:
        data = consolidate(take)
        self.consolidated += 1
        self.engine.from_io.append(("consolidated", take, data))

    def _recycle(self, take: Take) -> None:
        pool = self.engine.pool
        for i in range(take.nchunks):
            chunk = take.chunks[i]
            take.chunks[i] = None
            if chunk is not None and len(pool.chunks) < pool.reserve_chunks:
                pool.chunks.append(chunk)
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
