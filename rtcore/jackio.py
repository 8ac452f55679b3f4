"""The JACK side of each process cycle, compiled (numba): port buffers in and out.

Done in Python, a cycle's I/O is a dozen libjack calls through cffi, a numpy view per port
and a copy per channel, each a few microseconds once the CPU has idled since the last
cycle. These two functions do it in one call each, calling libjack directly (its symbols
are bound by name, so the compiled code is cached on disk like the engine's kernels):

- :func:`cycle_in` reads JACK's frame time and how late the cycle started, copies the input
  ports into the host's interleaved block, counts the MIDI events waiting, and adds the
  previous cycle's cost and this one's start delay to the callback histograms;
- :func:`cycle_out` copies the host's output block and click into the output ports and
  clears the MIDI output buffer.

Only :mod:`rtcore.host` calls them, from JACK's process callback. Pointers travel as
integers (``uintp``): a client, a port, or a port buffer address.
"""

from __future__ import annotations

import ctypes.util

import llvmlite.binding as llvm
import numba
from numba.core import types
from numba.extending import intrinsic

from rtcore.errors import OuroError

_LIBJACK = ctypes.util.find_library("jack") or "libjack.so.0"
try:
    llvm.load_library_permanently(_LIBJACK)
except RuntimeError as exc:  # pragma: no cover - the pedal extra needs libjack
    raise OuroError(f"cannot load {_LIBJACK}: {exc} (install the jackd2 package)") from None

_u32, _ptr = types.uint32, types.uintp
_get_buffer = types.ExternalFunction("jack_port_get_buffer", _ptr(_ptr, _u32))
_last_frame_time = types.ExternalFunction("jack_last_frame_time", _u32(_ptr))
_since_cycle_start = types.ExternalFunction("jack_frames_since_cycle_start", _u32(_ptr))
_midi_count = types.ExternalFunction("jack_midi_get_event_count", _u32(_ptr))
_midi_clear = types.ExternalFunction("jack_midi_clear_buffer", types.void(_ptr))

# what cycle_in reports, in the host's int64 info array
FRAME_TIME, DELAY_FRAMES, MIDI_EVENTS = 0, 1, 2
# the callback statistics' scalars, in an int64 array next to the histograms
COUNT, MAX_US, MAX_DELAY_US = 0, 1, 2


@intrinsic
def _floats_at(typingctx, address):  # type: ignore[no-untyped-def]
    """The address as a ``float32*`` (JACK audio port buffers are float32)."""
    sig = types.CPointer(types.float32)(types.uintp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


_jit = numba.njit(nogil=False, cache=True, boundscheck=False)


@_jit
def record(hist, delays, scalars, duration_us, delay_us):  # type: ignore[no-untyped-def]
    """One callback's cost and start delay into 1 µs histograms (the last bin takes the
    rest) and the count and maxima."""
    top = hist.shape[0] - 1
    hist[min(max(duration_us, 0), top)] += 1
    delays[min(max(delay_us, 0), top)] += 1
    scalars[COUNT] += 1
    scalars[MAX_US] = max(scalars[MAX_US], duration_us)
    scalars[MAX_DELAY_US] = max(scalars[MAX_DELAY_US], delay_us)


@_jit
def cycle_in(client, in_ports, midi_in, frames, inbuf, info,  # type: ignore[no-untyped-def]
             hist, delays, scalars, last_us, sample_rate):
    """Start of a cycle of ``frames``: see the module docstring. ``last_us`` < 0 records
    no previous cost (the first cycle)."""
    info[FRAME_TIME] = _last_frame_time(client)
    delay = _since_cycle_start(client)
    info[DELAY_FRAMES] = delay
    for ch in range(in_ports.shape[0]):
        src = numba.carray(_floats_at(_get_buffer(in_ports[ch], frames)), frames)
        for i in range(frames):
            inbuf[i, ch] = src[i]
    info[MIDI_EVENTS] = _midi_count(_get_buffer(midi_in, frames))
    if last_us >= 0:
        record(hist, delays, scalars, last_us, delay * 1_000_000 // sample_rate)


@_jit
def cycle_out(out_ports, click_port, midi_out, frames, outbuf, click):  # type: ignore[no-untyped-def]
    """End of a cycle: the output block and the click into their ports, MIDI out cleared
    (the host then writes this cycle's MIDI events, if any, through cffi)."""
    for ch in range(out_ports.shape[0]):
        dst = numba.carray(_floats_at(_get_buffer(out_ports[ch], frames)), frames)
        for i in range(frames):
            dst[i] = outbuf[i, ch]
    dst = numba.carray(_floats_at(_get_buffer(click_port, frames)), frames)
    for i in range(frames):
        dst[i] = click[i]
    _midi_clear(_get_buffer(midi_out, frames))



@_jit
def summarize(hist, qs, out, nonzero):  # type: ignore[no-untyped-def]
    """Percentiles of a histogram with one bin per unit, and its nonzero bins.

    ``out[i]`` = the first bin at which the running count reaches ``qs[i] * total`` (0 for
    an empty histogram); ``nonzero[:k] = (bin, count)`` rows; returns ``k``. One pass, so a
    status request holds the interpreter for microseconds rather than a millisecond.
    """
    total = 0
    for i in range(hist.shape[0]):
        total += hist[i]
    for j in range(qs.shape[0]):
        out[j] = 0
    k = 0
    run = 0
    j = 0
    for i in range(hist.shape[0]):
        c = hist[i]
        if c == 0:
            continue
        nonzero[k, 0] = i
        nonzero[k, 1] = c
        k += 1
        run += c
        while j < qs.shape[0] and run >= qs[j] * total:
            out[j] = i
            j += 1
    return k
