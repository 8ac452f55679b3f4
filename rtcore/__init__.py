"""rtcore: the Ouroboros looper engine.

Layers, from the inside out:

- :mod:`rtcore.commands` -- the one command vocabulary, as data, with validation;
- :mod:`rtcore.engine` -- the pure engine: ``Engine.process()`` over numpy buffers,
  no JACK, no I/O, deterministic, the same code live and offline;
- :mod:`rtcore.loops` -- recorded audio: chunk pool, takes, consolidation;
- :mod:`rtcore.ioside` -- the non-real-time side that stocks the pool and consolidates;
- :mod:`rtcore.offline` -- ``ouro offline``: a performance script run without JACK.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
