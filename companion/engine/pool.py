"""The audio pool: every audio source of a project, named by the SHA-256 of its file's bytes.

Layout of the pool directory (all names derive from the hex digest ``<hex>``)::

    audio/<hex>.<ext>               the imported file's original bytes, untouched; ``verify``
                                    re-hashes them, and a peer can fetch them by name
    audio/<hex>.json                sidecar: what the original holds (format, subtype, rate,
                                    channels, frames); written last, so its presence marks a
                                    complete import
    audio/<hex>.<rate>.rf64         the audio decoded to float32 at the project's rate, when
                                    the original cannot be read as is (another rate, or a
                                    lossy or unseekable format: OGG, MP3); converted once
    audio/<hex>.<rate>.peaks.npz    min/max overviews at several zoom levels

A WAV, AIFF or FLAC already at the project's rate is read straight from its original bytes
(no copy): soundfile converts its integer or float samples to float32 exactly. Everything
else is decoded once, resampled with soxr at its very-high-quality setting when the rate
differs, and kept as 32-bit float RF64 (a WAV that may exceed 4 GiB), so later opens do no
work. Each file is written to a temporary name in the same directory, fsynced and renamed,
so a crash leaves either nothing or a whole file; a failed import removes its temporaries and
leaves the pool as it was.

Small sources are loaded into memory; sources whose playable file exceeds
``stream_above_bytes`` are read from disk by a read-ahead thread (see :class:`StreamingSource`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import soundfile as sf
import soxr
from numpy.typing import NDArray

from companion.errors import SourceError
from rtcore.session import fsync_path

__all__ = [
    "PEAK_LEVELS",
    "InMemorySource",
    "Pool",
    "Source",
    "StreamingSource",
]

#: Frames per peak of the cached overviews, finest first.
PEAK_LEVELS: tuple[int, ...] = (256, 1024, 4096, 16384)

_MIB = 1024 * 1024
_DECODE_BLOCK = 65536  # frames per step when decoding, hashing-validating and converting
_MIN_RATE = 1000
_MAX_RATE = 768000
_SIDE_VERSION = 1
# Formats read as they are when already at the project rate: lossless, and libsndfile seeks
# them to the exact frame.
_DIRECT_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC", "CAF"})
_EXT = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "W64": "w64", "AIFF": "aiff",
        "FLAC": "flac", "OGG": "ogg", "MP3": "mp3", "CAF": "caf"}


class Source(Protocol):
    """One source of the pool at the project's rate, as the renderer reads it."""

    ref: str
    channels: int
    frames: int

    @property
    def misses(self) -> int:
        """How many ``read(..., wait=False)`` calls found their data not yet buffered."""
        ...

    def read(self, start: int, out: NDArray[np.float32], wait: bool = True) -> bool:
        """Fill ``out`` (``(rows, n)``, ``rows <= channels``: the first channels) with frames
        ``[start, start + n)``; zeros outside ``[0, frames)``. Returns False (and zeros where
        data was missing) only when ``wait`` is False and the data was not buffered yet."""
        ...


def _check_out(out: NDArray[np.float32], channels: int) -> None:
    if out.ndim != 2 or out.dtype != np.float32 or out.shape[0] > channels:
        raise ValueError(f"out must be float32 (rows <= {channels}, n); got {out.dtype} "
                         f"{out.shape}")


class InMemorySource:
    """A source held whole in memory (``data``: ``(channels, frames)`` float32)."""

    def __init__(self, ref: str, data: NDArray[np.float32]):
        self.ref = ref
        self.data = data
        self.channels = int(data.shape[0])
        self.frames = int(data.shape[1])

    @property
    def misses(self) -> int:
        """Always 0: everything is in memory."""
        return 0

    def read(self, start: int, out: NDArray[np.float32], wait: bool = True) -> bool:
        """See :class:`Source`. Never blocks; always True."""
        _check_out(out, self.channels)
        rows, n = out.shape
        a, b = max(start, 0), min(start + n, self.frames)
        if b <= a:
            out[:] = 0.0
            return True
        if a > start:
            out[:, : a - start] = 0.0
        out[:, a - start : b - start] = self.data[:rows, a:b]
        if b < start + n:
            out[:, b - start :] = 0.0
        return True

    def close(self) -> None:
        """Nothing to release."""


class MappedSource(InMemorySource):
    """A float32 WAV at the project's rate, mapped from the file instead of read into
    memory: for offline rendering, where a block that waits for the disk only costs time.
    ``data`` is the file's interleaved ``(frames, channels)`` view; reads transpose a block
    at a time. Never for the player: a page fault in the audio thread is disk I/O there."""

    def __init__(self, ref: str, path: Path, offset: int, frames: int, channels: int):
        mapped = np.memmap(path, dtype="<f4", mode="r", offset=offset,
                           shape=(frames, channels))
        super().__init__(ref, mapped.view(np.ndarray).T)  # plain views: no memmap per read
        self._mapped: np.memmap[Any, Any] | None = mapped

    def close(self) -> None:
        """Let the mapping go (the arrays handed out stay valid until they are dropped)."""
        self._mapped = None


def _float_wav_data(path: Path) -> tuple[int, int] | None:
    """Where the samples of a 32-bit float WAV or RF64 file start, and how many bytes they
    take; None for any other file (it is read the usual way)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return None
        size = path.stat().st_size
        pos, big_data, fmt_ok = 12, -1, False
        while pos + 8 <= size:
            f.seek(pos)
            cid, clen = f.read(4), int.from_bytes(f.read(4), "little")
            if cid == b"ds64":  # RF64: the real sizes, 64-bit
                big_data = int.from_bytes(f.read(24)[8:16], "little")
            elif cid == b"fmt ":
                fmt = f.read(min(clen, 40))
                tag = int.from_bytes(fmt[0:2], "little")
                if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the subformat
                    tag = int.from_bytes(fmt[24:26], "little")
                fmt_ok = tag == 3 and int.from_bytes(fmt[14:16], "little") == 32
            elif cid == b"data":
                if not fmt_ok:
                    return None
                n = big_data if clen == 0xFFFFFFFF and big_data >= 0 else clen
                return pos + 8, min(n, size - pos - 8)
            pos += 8 + clen + (clen & 1)
    return None


class StreamingSource:
    """A source read from disk by a read-ahead thread.

    The thread keeps ``ring_blocks`` blocks of ``block_frames`` frames read, from the block
    of the last read position onwards. ``read(start, out, wait=True)`` (offline rendering)
    waits for blocks not yet buffered; ``wait=False`` (the real-time player) never waits:
    missing blocks come out as zeros, the call returns False and ``misses`` counts it. A
    read also moves the read-ahead window, so a seek is followed by the thread.

    The real-time path takes no lock: the thread reads each block into a new array, which
    nothing writes again, and publishes it by replacing one reference in a list, so a
    reader sees either the old block or the new one, whole. The reader wakes the thread by
    releasing a semaphore-like primitive lock, which never blocks (``sem_post``).
    """

    def __init__(self, ref: str, path: Path, *, block_frames: int = 65536,
                 ring_blocks: int = 8):
        self.ref = ref
        self._path = path
        self._file = sf.SoundFile(str(path))
        self.channels = int(self._file.channels)
        self.frames = int(self._file.frames)
        self._block = block_frames
        self._k = ring_blocks
        self._nblocks = max(1, -(-self.frames // block_frames))
        # slot b % k: (b, block b's frames as (channels, block_frames)), or None
        self._slots: list[tuple[int, NDArray[np.float32]] | None] = [None] * ring_blocks
        # blocks taken out of the ring: the last reference to an array goes here, on the
        # thread, rather than in a reader that was copying from it (no free on audio)
        self._retired: deque[NDArray[np.float32]] = deque(maxlen=ring_blocks)
        self._want = 0
        self._misses = 0
        self._stop = False
        self._error = ""
        self._cond = threading.Condition()  # waiting (offline) readers only
        self._wake = threading.Lock()  # held while the thread may sleep; released: wake up
        self._wake.acquire()
        self._thread = threading.Thread(target=self._run, name=f"pool-read {ref[7:19]}",
                                        daemon=True)
        self._thread.start()

    @property
    def misses(self) -> int:
        """How many non-waiting reads found data missing."""
        return self._misses

    def _poke(self) -> None:
        """Wake the thread without ever blocking: a released lock is a pending wake-up; one
        already pending is enough."""
        if not self._wake.locked():
            return  # a wake-up is pending already (checked first: no exception to make)
        try:
            self._wake.release()
        except RuntimeError:
            pass  # another reader released it just now: the thread will look again

    def _todo(self) -> int:
        """The first block of the window that is not in the ring, or -1."""
        want = self._want
        for i in range(self._k):
            b = want + i
            if b >= self._nblocks:
                break
            got = self._slots[b % self._k]
            if got is None or got[0] != b:
                return b
        return -1

    def _run(self) -> None:
        while not self._stop:
            todo = self._todo()
            if todo < 0:
                self._wake.acquire()  # until a reader moves the window (or close)
                continue
            # the file is touched only by this thread
            try:
                self._file.seek(todo * self._block)
                got = self._file.read(self._block, dtype="float32", always_2d=True)
            except Exception as e:  # a disk error: waiting readers must not hang
                with self._cond:
                    self._error = f"{self.ref}: reading {self._path.name} failed ({e})"
                    self._stop = True
                    self._cond.notify_all()
                return
            data = np.zeros((self.channels, self._block), np.float32)
            data[:, :len(got)] = got.T
            slot = todo % self._k
            old = self._slots[slot]
            self._slots[slot] = (todo, data)  # published: one reference replaced
            if old is not None:
                self._retired.append(old[1])
            with self._cond:
                self._cond.notify_all()

    def _closed_why(self) -> str:
        return self._error or f"{self.ref}: read after the pool was closed"

    def _follow(self, block: int) -> None:
        """Move the read-ahead window to start at ``block``."""
        if self._want != block:
            self._want = block
            self._poke()

    def read(self, start: int, out: NDArray[np.float32], wait: bool = True) -> bool:
        """See :class:`Source`."""
        _check_out(out, self.channels)
        if self._stop:
            raise SourceError(self._closed_why())
        rows, n = out.shape
        ok = True
        pos = start
        end = start + n
        # the window follows the reader: from the first block this read touches
        self._follow(min(max(start, 0), self.frames - 1) // self._block)
        while pos < end:
            if pos < 0 or pos >= self.frames:
                stop = min(end, 0) if pos < 0 else end
                out[:, pos - start : stop - start] = 0.0
                pos = stop
                continue
            b = pos // self._block
            stop = min(end, (b + 1) * self._block, self.frames)
            got = self._slots[b % self._k]
            if got is None or got[0] != b:
                if not wait:
                    out[:, pos - start : stop - start] = 0.0
                    ok = False
                    pos = stop
                    continue
                got = self._wait_for(b)
            o = pos - b * self._block
            out[:, pos - start : stop - start] = got[1][:rows, o : o + stop - pos]
            pos = stop
        if not ok:
            self._misses += 1  # only the real-time reader misses; it alone writes this
        return ok

    def _wait_for(self, b: int) -> tuple[int, NDArray[np.float32]]:
        """Block ``b``, waiting for the thread (offline reads only)."""
        if b >= self._want + self._k:
            self._follow(b)  # a long offline read runs past the ring: move the window on
        with self._cond:
            while True:
                got = self._slots[b % self._k]
                if got is not None and got[0] == b:
                    return got
                if self._stop:
                    raise SourceError(self._closed_why())
                self._cond.wait()

    def close(self) -> None:
        """Stop the read-ahead thread and close the file."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._poke()
        self._thread.join()
        self._file.close()


@dataclass(frozen=True)
class _Info:
    fmt: str
    subtype: str
    rate: int
    channels: int
    frames: int


_REF = re.compile(r"sha256:([0-9a-f]{64})")


def _hex_of(ref: str) -> str:
    m = _REF.fullmatch(ref) if isinstance(ref, str) else None
    if m is None:
        raise SourceError(f"{ref!r}: not a pool reference (sha256:<64 hex digits>)")
    return m.group(1)


def _fsync_dir(d: Path) -> None:
    with suppress(OSError):  # some file systems cannot sync a directory: the rename stands
        fsync_path(d)


def _why(e: Exception) -> str:
    """libsndfile's own words, without the temporary path it was opened under."""
    return str(getattr(e, "error_string", "") or e)


def _check_wav_data(path: Path, shown: Path) -> None:
    """libsndfile quietly shortens a WAV whose data chunk runs past the end of the file;
    a recording cut short should be refused, not imported as if whole."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            cid, clen = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if cid == b"data":
                held = size - pos - 8
                # 0 and 0xFFFFFFFF are what streaming writers leave when they never came back
                if clen not in (0, 0xFFFFFFFF) and clen > held:
                    raise SourceError(f"{shown}: truncated: the header announces {clen} bytes "
                                      f"of audio, the file holds {held}")
                return
            pos += 8 + clen + (clen & 1)


class _Peaks:
    """Running min/max per channel at every level of :data:`PEAK_LEVELS`, fed in blocks."""

    def __init__(self, channels: int, frames: int):
        # one spare peak: a resampler's output length is only estimated; trimmed when saved
        self.levels = {fpp: np.zeros((channels, -(-frames // fpp) + 1, 2), dtype=np.float32)
                       for fpp in PEAK_LEVELS}
        self.pos = 0
        self.channels = channels

    def feed(self, block: NDArray[np.float32]) -> None:
        """``block``: ``(frames, channels)``, in order."""
        n = len(block)
        if n == 0:
            return
        for fpp, arr in self.levels.items():
            p = self.pos
            i = 0
            if p % fpp:
                # finish the peak the previous block started
                i = min(n, fpp - p % fpp)
                k = p // fpp
                arr[:, k, 0] = np.minimum(arr[:, k, 0], block[:i].min(axis=0))
                arr[:, k, 1] = np.maximum(arr[:, k, 1], block[:i].max(axis=0))
            whole = (n - i) // fpp
            if whole:
                k = (p + i) // fpp
                seg = block[i : i + whole * fpp].reshape(whole, fpp, self.channels)
                arr[:, k : k + whole, 0] = seg.min(axis=1).T
                arr[:, k : k + whole, 1] = seg.max(axis=1).T
                i += whole * fpp
            if i < n:
                k = (p + i) // fpp
                arr[:, k, 0] = block[i:].min(axis=0)
                arr[:, k, 1] = block[i:].max(axis=0)
        self.pos += n


class Pool:
    """The audio pool of one project (see the module's docstring for the layout).

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d, Pool(Path(d), 48000) as pool:
    ...     ref = pool.add_array(np.zeros((2, 480), np.float32), 48000)
    ...     src = pool.source(ref)
    ...     (src.channels, src.frames)
    (2, 480)
    """

    def __init__(self, directory: Path, sample_rate: int, *,
                 stream_above_bytes: int = 256 * _MIB, map_files: bool = False):
        if not isinstance(sample_rate, int) or not _MIN_RATE <= sample_rate <= _MAX_RATE:
            raise ValueError(f"sample_rate {sample_rate!r}: not a rate in "
                             f"{_MIN_RATE}..{_MAX_RATE}")
        self.directory = Path(directory)
        self.sample_rate = sample_rate
        self.stream_above_bytes = stream_above_bytes
        # offline rendering maps float WAVs instead of reading them (see MappedSource)
        self.map_files = map_files
        self._audio = self.directory / "audio"
        self._audio.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, InMemorySource | StreamingSource] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop every streaming source's thread and close its file. Idempotent."""
        with self._lock:
            opened = list(self._open.values())
            self._open.clear()
            self._closed = True
        for s in opened:
            s.close()

    # -- names ----------------------------------------------------------------------------

    def _side(self, h: str) -> Path:
        return self._audio / f"{h}.json"

    def _converted(self, h: str) -> Path:
        return self._audio / f"{h}.{self.sample_rate}.rf64"

    def _peaks_path(self, h: str) -> Path:
        return self._audio / f"{h}.{self.sample_rate}.peaks.npz"

    def _meta(self, h: str, ref: str) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads(self._side(h).read_text())
        except FileNotFoundError:
            raise SourceError(f"{ref}: not in the pool") from None
        except (OSError, ValueError) as e:
            raise SourceError(f"{ref}: the pool's record of it is unreadable ({e})") from e
        return meta

    def _original(self, h: str, meta: dict[str, Any]) -> Path:
        return self._audio / f"{h}.{meta['ext']}"

    def _playable(self, h: str, meta: dict[str, Any]) -> Path:
        """The file the source is read from at this pool's rate."""
        if meta["format"] in _DIRECT_FORMATS and meta["sample_rate"] == self.sample_rate:
            return self._original(h, meta)
        return self._converted(h)

    # -- import ---------------------------------------------------------------------------

    def import_file(self, path: Path) -> str:
        """Import an audio file (WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF; any channel count)
        and return its reference ``"sha256:<hex>"``. Importing the same bytes again returns
        the same reference and writes nothing. A file that is not sound audio raises
        :class:`SourceError` naming it, and leaves the pool unchanged."""
        path = Path(path)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=self._audio))
        try:
            copy, h = self._copy_hashed(path, tmp)
            ref = "sha256:" + h
            if self._side(h).exists():
                self._ensure_rate(h, ref)
                return ref
            info = self._validate(copy, path)
            ext = _EXT.get(info.fmt, info.fmt.lower())
            meta = {"version": _SIDE_VERSION, "ref": ref, "format": info.fmt,
                    "subtype": info.subtype, "sample_rate": info.rate,
                    "channels": info.channels, "frames": info.frames, "ext": ext,
                    "imported_from": path.name}
            self._derive(copy, meta, tmp, h, label=str(path))
            self._commit(h, copy, ext, meta, tmp)
            return ref
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _commit(self, h: str, copy: Path, ext: str, meta: dict[str, Any], tmp: Path) -> None:
        """The imported file in place under its hash, then its record, written last (a
        source counts as imported only once its record exists)."""
        os.replace(copy, self._audio / f"{h}.{ext}")
        side_tmp = tmp / "side.json"
        side_tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
        fsync_path(side_tmp)
        os.replace(side_tmp, self._side(h))
        _fsync_dir(self._audio)

    def _copy_hashed(self, path: Path, tmp: Path) -> tuple[Path, str]:
        """``path`` copied into ``tmp`` (fsynced) and the SHA-256 of its bytes."""
        copy = tmp / "original"
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as fi, open(copy, "wb") as fo:
                while chunk := fi.read(4 * _MIB):
                    digest.update(chunk)
                    fo.write(chunk)
                fo.flush()
                os.fsync(fo.fileno())
        except OSError as e:
            raise SourceError(f"{path}: cannot read it ({e.strerror or e})") from e
        return copy, digest.hexdigest()

    def import_soundfont(self, path: Path) -> str:
        """Import a SoundFont (``.sf2``: a RIFF file of form ``sfbk``) for MIDI tracks and
        return its reference; :meth:`source_path` gives the file to hand to FluidSynth."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except OSError as e:
            raise SourceError(f"{path}: cannot read it ({e.strerror or e})") from e
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise SourceError(f"{path}: not a SoundFont 2 file (no RIFF 'sfbk' header)")
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=self._audio))
        try:
            copy, h = self._copy_hashed(path, tmp)
            ref = "sha256:" + h
            if self._side(h).exists():
                return ref
            meta = {"version": _SIDE_VERSION, "ref": ref, "format": "SF2", "kind": "soundfont",
                    "ext": "sf2", "imported_from": path.name}
            self._commit(h, copy, "sf2", meta, tmp)
            return ref
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def source_path(self, ref: str) -> Path:
        """The file behind ``ref`` as it was imported (a SoundFont for FluidSynth, or an
        audio file's original bytes)."""
        h = _hex_of(ref)
        path = self._original(h, self._meta(h, ref))
        if not path.exists():
            raise SourceError(f"{ref}: its file {path.name} is missing from the pool")
        return path

    def add_array(self, data: NDArray[np.float32], sample_rate: int) -> str:
        """Import ``data`` (``(channels, frames)``) as a 32-bit float WAV at ``sample_rate``
        and return its reference (used by bounce, and by tests)."""
        arr = np.asarray(data)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise SourceError(f"add_array: data must be (channels, frames); got {arr.shape}")
        fd, name = tempfile.mkstemp(prefix=".array-", suffix=".wav", dir=self._audio)
        os.close(fd)
        try:
            fmt = "RF64" if arr.nbytes > 3 * 1024 * _MIB else "WAV"
            try:
                sf.write(name, arr.T.astype(np.float32, copy=False), sample_rate,
                         subtype="FLOAT", format=fmt)
            except (sf.LibsndfileError, ValueError, TypeError, RuntimeError) as e:
                raise SourceError(f"add_array: cannot write {arr.shape} at {sample_rate!r} Hz "
                                  f"({e})") from e
            return self.import_file(Path(name))
        finally:
            with suppress(OSError):
                os.unlink(name)

    def _validate(self, copy: Path, shown: Path) -> _Info:
        """Open and decode the whole file once: header sanity, real frame count, finite
        samples. Raises SourceError naming ``shown``."""
        try:
            f = sf.SoundFile(str(copy))
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise SourceError(f"{shown}: not a readable audio file ({_why(e)})") from e
        with f:
            fmt, subtype = f.format, f.subtype
            rate, channels, declared = int(f.samplerate), int(f.channels), int(f.frames)
            if not _MIN_RATE <= rate <= _MAX_RATE:
                raise SourceError(f"{shown}: sample rate {rate} Hz is not plausible "
                                  f"({_MIN_RATE}..{_MAX_RATE})")
            if channels < 1:
                raise SourceError(f"{shown}: no channels")
            if fmt in ("WAV", "WAVEX"):
                _check_wav_data(copy, shown)
            frames = 0
            try:
                for block in f.blocks(_DECODE_BLOCK, dtype="float32", always_2d=True):
                    if not np.isfinite(block).all():
                        at = frames + int(np.argmin(np.isfinite(block).all(axis=1)))
                        raise SourceError(f"{shown}: holds NaN or infinite samples (frame "
                                          f"{at})")
                    frames += len(block)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise SourceError(f"{shown}: cannot be decoded past frame {frames} "
                                  f"({_why(e)})") from e
        if frames == 0:
            raise SourceError(f"{shown}: holds no audio (zero frames)")
        # libsndfile takes a lossy file's length from its stream, not a header it trusts
        if frames != declared and fmt not in ("MP3", "OGG"):
            raise SourceError(f"{shown}: truncated or inconsistent: the header says "
                              f"{declared} frames, the data holds {frames}")
        return _Info(fmt, subtype, rate, channels, frames)

    def _derive(self, original: Path, meta: dict[str, Any], tmp: Path, h: str,
                label: str) -> None:
        """Write the converted file (when needed) and the peaks for this pool's rate,
        each atomically; ``original`` is the file holding the original bytes."""
        direct = meta["format"] in _DIRECT_FORMATS and meta["sample_rate"] == self.sample_rate
        channels = int(meta["channels"])
        peaks: _Peaks | None = None
        conv_tmp = tmp / "converted.rf64"
        try:
            with sf.SoundFile(str(original)) as fin:
                if direct:
                    peaks = _Peaks(channels, int(meta["frames"]))
                    for block in fin.blocks(_DECODE_BLOCK, dtype="float32", always_2d=True):
                        peaks.feed(block)
                else:
                    out_frames_est = math.ceil(int(meta["frames"]) * self.sample_rate
                                               / int(meta["sample_rate"]))
                    peaks = _Peaks(channels, out_frames_est)
                    self._convert(fin, conv_tmp, peaks, meta)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise SourceError(f"{label}: cannot be decoded ({_why(e)})") from e
        if not direct:
            fsync_path(conv_tmp)
            os.replace(conv_tmp, self._converted(h))
        peaks_tmp = tmp / "peaks.npz"
        with open(peaks_tmp, "wb") as fo:
            arrays: dict[str, Any] = {f"fpp{fpp}": arr[:, : -(-peaks.pos // fpp)]
                                      for fpp, arr in peaks.levels.items()}
            np.savez(fo, frames=np.int64(peaks.pos), **arrays)
            fo.flush()
            os.fsync(fo.fileno())
        os.replace(peaks_tmp, self._peaks_path(h))

    def _convert(self, fin: sf.SoundFile, dest: Path, peaks: _Peaks,
                 meta: dict[str, Any]) -> None:
        channels = int(meta["channels"])
        rate_in = int(meta["sample_rate"])
        resampler = (soxr.ResampleStream(rate_in, self.sample_rate, channels, dtype="float32",
                                         quality="VHQ")
                     if rate_in != self.sample_rate else None)
        with sf.SoundFile(str(dest), "w", samplerate=self.sample_rate, channels=channels,
                          subtype="FLOAT", format="RF64") as fo:
            blocks = fin.blocks(_DECODE_BLOCK, dtype="float32", always_2d=True)
            pending: NDArray[np.float32] | None = None
            for block in blocks:
                # hand soxr each block knowing whether it is the last, so it flushes its tail
                if pending is not None:
                    self._emit(pending, False, resampler, fo, peaks)
                pending = np.ascontiguousarray(block)
            if pending is not None:
                self._emit(pending, True, resampler, fo, peaks)

    @staticmethod
    def _emit(block: NDArray[np.float32], last: bool, resampler: Any, fo: sf.SoundFile,
              peaks: _Peaks) -> None:
        y = resampler.resample_chunk(block, last=last) if resampler is not None else block
        y = np.ascontiguousarray(y, dtype=np.float32)
        if len(y):
            fo.write(y)
            peaks.feed(y)

    def _ensure_rate(self, h: str, ref: str) -> None:
        """Derive the converted file and peaks for this pool's rate if another rate's pool
        imported the source (e.g. the project's rate changed)."""
        meta = self._meta(h, ref)
        if self._peaks_path(h).exists() and self._playable(h, meta).exists():
            return
        original = self._original(h, meta)
        if not original.exists():
            raise SourceError(f"{ref}: its original file {original.name} is missing")
        tmp = Path(tempfile.mkdtemp(prefix=".derive-", dir=self._audio))
        try:
            self._derive(original, meta, tmp, h, label=ref)
            _fsync_dir(self._audio)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- reading --------------------------------------------------------------------------

    def source(self, ref: str) -> Source:
        """The source named ``ref`` at the project's rate (opened once, then shared).
        Raises :class:`SourceError` naming ``ref`` when it is missing or corrupt."""
        # an open source first: a compile asks for every clip's source, nearly always one
        # already open (a dict read needs no lock; only valid refs are ever put there)
        got = self._open.get(ref) if isinstance(ref, str) else None
        if got is not None and not self._closed:
            return got
        h = _hex_of(ref)
        with self._lock:
            if self._closed:
                raise SourceError(f"{ref}: the pool is closed")
            got = self._open.get(ref)
            if got is not None:
                return got
        if self._meta(h, ref).get("kind") == "soundfont":
            raise SourceError(f"{ref}: a SoundFont, not audio (for MIDI tracks' instruments)")
        self._ensure_rate(h, ref)
        meta = self._meta(h, ref)
        path = self._playable(h, meta)
        try:
            size = path.stat().st_size
            where = _float_wav_data(path) if self.map_files else None
            channels = int(meta["channels"])
            if where is not None and where[1] // (4 * channels) > 0:  # (at this rate, as above)
                opened: InMemorySource | StreamingSource = MappedSource(
                    ref, path, where[0], where[1] // (4 * channels), channels)
            elif size > self.stream_above_bytes:
                opened = StreamingSource(ref, path)
            else:
                data, rate = sf.read(str(path), dtype="float32", always_2d=True)
                if rate != self.sample_rate:
                    raise SourceError(f"{ref}: {path.name} is at {rate} Hz, not "
                                      f"{self.sample_rate}")
                opened = InMemorySource(ref, np.ascontiguousarray(data.T))
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise SourceError(f"{ref}: its audio file {path.name} is unreadable ({e})") from e
        if opened.channels != meta["channels"]:
            opened.close()
            raise SourceError(f"{ref}: {path.name} has {opened.channels} channels, the pool "
                              f"recorded {meta['channels']}")
        with self._lock:
            if self._closed:
                opened.close()
                raise SourceError(f"{ref}: the pool is closed")
            prior = self._open.setdefault(ref, opened)
        if prior is not opened:
            opened.close()
        return prior

    def peaks(self, ref: str, frames_per_peak: int) -> NDArray[np.float32]:
        """The overview of ``ref`` at ``frames_per_peak`` (one of :data:`PEAK_LEVELS`):
        ``(channels, ceil(frames / frames_per_peak), 2)`` float32, ``[..., 0]`` the minimum
        and ``[..., 1]`` the maximum of each span of frames."""
        h = _hex_of(ref)
        if frames_per_peak not in PEAK_LEVELS:
            raise ValueError(f"frames_per_peak {frames_per_peak}: one of {PEAK_LEVELS}")
        self._ensure_rate(h, ref)
        try:
            with np.load(self._peaks_path(h)) as z:
                arr: NDArray[np.float32] = z[f"fpp{frames_per_peak}"]
        except (OSError, ValueError, KeyError) as e:
            raise SourceError(f"{ref}: its peaks are unreadable ({e})") from e
        return arr

    def refs(self) -> list[str]:
        """Every source in the pool, sorted."""
        return sorted("sha256:" + p.stem for p in self._audio.glob("*.json")
                      if len(p.stem) == 64)

    def verify(self, ref: str) -> bool:
        """Re-hash the original bytes: True when they still match the name."""
        h = _hex_of(ref)
        meta = self._meta(h, ref)
        digest = hashlib.sha256()
        try:
            with open(self._original(h, meta), "rb") as f:
                while chunk := f.read(4 * _MIB):
                    digest.update(chunk)
        except OSError as e:
            raise SourceError(f"{ref}: its original file is unreadable ({e})") from e
        return digest.hexdigest() == h

    def __contains__(self, ref: object) -> bool:
        try:
            return isinstance(ref, str) and self._side(_hex_of(ref)).exists()
        except SourceError:
            return False
