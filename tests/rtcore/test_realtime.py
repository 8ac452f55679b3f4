"""Real-time hygiene of Engine.process(): no new array memory in steady state.

numpy reports every array data allocation to tracemalloc. A block here is 1024 stereo
frames, so any new block-sized array would be 8 KiB; the peak of all traced memory during
hundreds of blocks must stay well below that (what remains is Python's own small objects:
slice views and floats), and nothing may be left behind.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtcore.bench import loaded_engine
from rtcore.commands import parse_args
from tests.rtcore.conftest import allocated_during

BLOCK = 1024
BLOCK_ARRAY_BYTES = BLOCK * 2 * 4


@pytest.fixture(scope="module")
def busy_engine():
    eng, io = loaded_engine(BLOCK)
    return eng, io


def _run(eng, blocks: int) -> tuple[int, int]:
    src = np.random.default_rng(3).standard_normal((BLOCK, 2)).astype(np.float32)
    out = np.zeros_like(src)
    click = np.zeros(BLOCK, np.float32)
    # warm up: deques grow their blocks, numpy caches its small scalars
    for _ in range(20):
        eng.process(src, out, click)
    return allocated_during(lambda: eng.process(src, out, click), blocks)


def test_every_cell_playing_allocates_no_arrays(busy_engine):
    eng, _ = busy_engine
    assert all(c.take is not None and c.take.data is not None
               for col in eng.cells for c in col), "all 25 cells hold consolidated loops"
    assert eng.click_on
    grown, peak = _run(eng, 400)
    assert peak < BLOCK_ARRAY_BYTES / 2, f"peak {peak} B: something allocated a block array"
    assert grown < 1024


def test_recording_and_state_changes_allocate_no_arrays(busy_engine):
    eng, _ = busy_engine
    # a re-recording in progress, a cell stopping (declick ramp), a volume ramp, a solo
    for name, args in (("record", [1, 2]), ("stop", [2, 0]), ("volume", [3, 1, 0.3]),
                       ("solo", [4, 4])):
        eng.submit(parse_args(name, args, columns=5, rows=5))
    eng.pool.stock()
    grown, peak = _run(eng, 200)
    assert eng.cells[1][2].state in (2, 3)  # recorded, maybe already playing its new take
    assert peak < BLOCK_ARRAY_BYTES / 2, f"peak {peak} B: something allocated a block array"
    assert grown < 4096  # finished takes queued for the I/O side


def test_a_new_array_in_the_callback_would_be_caught(busy_engine):
    """The measurement itself can fail: a callback that makes one temporary is seen."""
    eng, _ = busy_engine
    original = eng._run

    def leaky(n, click_out, inputs):
        original(n, click_out, inputs * 1.0)  # one temporary block array

    eng._run = leaky
    try:
        _, peak = _run(eng, 20)
    finally:
        del eng._run
    assert peak >= BLOCK_ARRAY_BYTES
