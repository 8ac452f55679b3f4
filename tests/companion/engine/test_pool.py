"""The audio pool with real files: exact round trips, formats, resampling quality, streaming
equal to in-memory, peaks, idempotent and atomic imports, and every kind of bad file."""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from companion.engine.pool import PEAK_LEVELS, InMemorySource, Pool, StreamingSource
from companion.errors import SourceError

SR = 48000


def noise(channels: int, frames: int, seed: int = 0, amp: float = 0.3) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-amp, amp, (channels, frames))).astype(np.float32)


def tone(freq: float, rate: int, frames: int, amp: float = 0.5,
         channels: int = 1) -> NDArray[np.float32]:
    t = np.arange(frames) / rate
    s = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.tile(s, (channels, 1))


def write(path: Path, data: NDArray[np.float32], rate: int, **kw: Any) -> Path:
    sf.write(str(path), data.T, rate, **kw)
    return path


def read_all(src: Any) -> NDArray[np.float32]:
    out = np.full((src.channels, src.frames), np.nan, np.float32)
    assert src.read(0, out)
    return out


def snapshot(pool: Pool) -> dict[str, bytes]:
    root = pool.directory
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def pool(tmp_path: Path) -> Any:
    with Pool(tmp_path / "proj", SR) as p:
        yield p


@pytest.mark.parametrize("channels", [1, 2, 8])
def test_float_wav_at_the_project_rate_comes_back_bit_identical(pool: Pool, tmp_path: Path,
                                                                channels: int) -> None:
    x = noise(channels, 12345)
    x[0, 5] = -1.5  # over full scale: float files keep it
    f = write(tmp_path / "take.wav", x, SR, subtype="FLOAT")
    ref = pool.import_file(f)
    assert ref == "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()
    src = pool.source(ref)
    assert (src.ref, src.channels, src.frames) == (ref, channels, 12345)
    np.testing.assert_array_equal(read_all(src), x)
    # the original's bytes are kept under the name; no converted copy is made for it
    audio = pool.directory / "audio"
    assert (audio / f"{ref[7:]}.wav").read_bytes() == f.read_bytes()
    assert not list(audio.glob("*.rf64"))


def test_add_array_is_exact(pool: Pool) -> None:
    x = noise(2, 777, seed=4)
    src = pool.source(pool.add_array(x, SR))
    np.testing.assert_array_equal(read_all(src), x)


@pytest.mark.parametrize(("fmt", "subtype", "ext"), [
    ("WAV", "PCM_16", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "PCM_32", "wav"),
    ("FLAC", "PCM_16", "flac"), ("FLAC", "PCM_24", "flac"), ("AIFF", "PCM_16", "aiff"),
])
def test_lossless_formats_read_as_their_exact_samples(pool: Pool, tmp_path: Path, fmt: str,
                                                      subtype: str, ext: str) -> None:
    x = noise(2, 40000, seed=2)
    f = write(tmp_path / f"t.{ext}", x, SR, format=fmt, subtype=subtype)
    want, _ = sf.read(str(f), dtype="float32", always_2d=True)
    src = pool.source(pool.import_file(f))
    np.testing.assert_array_equal(read_all(src), want.T)
    assert np.abs(want.T - x).max() < 2 ** -14  # and they are the samples written


@pytest.mark.parametrize(("fmt", "subtype", "ext"), [
    ("OGG", "VORBIS", "ogg"), ("OGG", "OPUS", "opus"), ("MP3", "MPEG_LAYER_III", "mp3"),
])
def test_lossy_formats_are_decoded_once(pool: Pool, tmp_path: Path, fmt: str, subtype: str,
                                        ext: str) -> None:
    # this libsndfile (1.2.2) reads and writes MP3 itself (mpg123 and LAME inside)
    rate = 48000
    x = tone(440.0, rate, rate, amp=0.4, channels=2)
    f = write(tmp_path / f"t.{ext}", x, rate, format=fmt, subtype=subtype)
    ref = pool.import_file(f)
    src = pool.source(ref)
    assert src.channels == 2
    # decoders add or drop an encoder's padding: the length is right to a few frames' worth
    assert abs(src.frames - rate) < 3000
    y = read_all(src)
    level = float(np.sqrt(np.mean(y[0, 4800:40000].astype(np.float64) ** 2)))
    assert level == pytest.approx(0.4 / np.sqrt(2), rel=0.05)
    # a decoded float copy at the project rate is what later opens read
    assert (pool.directory / "audio" / f"{ref[7:]}.{SR}.rf64").exists()


def test_resampling_keeps_frequency_and_level_without_aliasing(pool: Pool,
                                                               tmp_path: Path) -> None:
    rate = 44100
    x = tone(1000.0, rate, 2 * rate, amp=0.5)
    ref = pool.import_file(write(tmp_path / "a.wav", x, rate, subtype="FLOAT"))
    src = pool.source(ref)
    assert src.frames == 2 * SR
    y = read_all(src)[0, SR // 2 : SR // 2 + SR].astype(np.float64)  # one second, mid-file
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    k = int(np.argmax(spectrum))
    assert k == 1000  # 1 Hz bins: the tone is at 1 kHz
    assert float(np.sqrt(np.mean(y**2))) == pytest.approx(0.5 / np.sqrt(2), rel=1e-4)
    # everything away from the tone is more than 120 dB down
    others = np.concatenate([spectrum[: k - 20], spectrum[k + 20 :]])
    assert 20 * np.log10(others.max() / spectrum[k]) < -120
    # downsampling: a tone above the new Nyquist (23 kHz into 44.1 kHz) must vanish, not fold
    with Pool(tmp_path / "p441", 44100) as low:
        hi = tone(23000.0, SR, SR, amp=0.5)
        z = read_all(low.source(low.add_array(hi, SR)))[0, 4410:-4410].astype(np.float64)
        assert np.sqrt(np.mean(z**2)) < 0.5 * 10 ** (-100 / 20)


def test_importing_the_same_bytes_again_changes_nothing(pool: Pool, tmp_path: Path) -> None:
    x = noise(2, 5000)
    f = write(tmp_path / "a.wav", x, 44100, subtype="PCM_24")
    ref = pool.import_file(f)
    before = snapshot(pool)
    g = tmp_path / "copy with another name.wav"
    g.write_bytes(f.read_bytes())
    assert pool.import_file(g) == ref
    assert pool.import_file(f) == ref
    assert snapshot(pool) == before
    assert pool.refs() == [ref]
    other = pool.add_array(x, SR)
    assert sorted(pool.refs()) == sorted([ref, other])


def wav_bytes(x: NDArray[np.float32], rate: int, subtype: str = "PCM_16") -> bytes:
    import io

    b = io.BytesIO()
    sf.write(b, x.T, rate, format="WAV", subtype=subtype)
    return b.getvalue()


def _bad_files() -> dict[str, tuple[bytes, str]]:
    good = wav_bytes(noise(2, 4000), SR)
    rate_at = good.index(b"fmt ") + 12  # sample rate field of the fmt chunk
    absurd_rate = good[:rate_at] + struct.pack("<I", 5) + good[rate_at + 4 :]
    huge_rate = good[:rate_at] + struct.pack("<I", 50_000_000) + good[rate_at + 4 :]
    data_at = good.index(b"data")
    lying = good[: data_at + 4] + struct.pack("<I", 10 * 4000 * 4) + good[data_at + 8 :]
    nan = np.zeros((1, 100), np.float32)
    nan[0, 50] = np.nan
    flac = bytearray()
    import io

    b = io.BytesIO()
    sf.write(b, noise(2, 20000).T, SR, format="FLAC")
    flac = bytearray(b.getvalue())
    b = io.BytesIO()
    sf.write(b, noise(2, 20000).T, SR, format="OGG", subtype="VORBIS")
    ogg = b.getvalue()
    return {
        "truncated ogg": (ogg[: len(ogg) // 3], ""),
        "text": (b"this is not audio at all\n" * 20, "not a readable audio file"),
        "empty": (b"", "not a readable audio file"),
        "truncated wav": (good[: len(good) // 2], "truncated"),
        "lying header": (lying, "truncated"),
        "zero frames": (wav_bytes(np.zeros((2, 0), np.float32), SR), "zero frames"),
        "absurd rate": (absurd_rate, "sample rate 5 Hz is not plausible"),
        "huge rate": (huge_rate, "not plausible"),
        "nan": (wav_bytes(nan, SR, "FLOAT"), "NaN or infinite samples (frame 50)"),
        "truncated flac": (bytes(flac[: len(flac) // 2]), "cannot be decoded"),
        "header only": (good[:44], "truncated"),
    }


@pytest.mark.parametrize("name", sorted(_bad_files()))
def test_bad_files_are_refused_and_leave_the_pool_as_it_was(pool: Pool, tmp_path: Path,
                                                            name: str) -> None:
    keep = pool.add_array(noise(1, 100), SR)
    before = snapshot(pool)
    content, words = _bad_files()[name]
    f = tmp_path / f"{name.replace(' ', '_')}.wav"
    f.write_bytes(content)
    with pytest.raises(SourceError) as e:
        pool.import_file(f)
    assert str(f) in str(e.value)
    assert words in str(e.value)
    assert snapshot(pool) == before
    assert pool.refs() == [keep]
    assert not [p for p in (pool.directory / "audio").iterdir() if p.name.startswith(".")]


def test_a_missing_file_is_a_source_error(pool: Pool, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nowhere\.wav: cannot read it"):
        pool.import_file(tmp_path / "nowhere.wav")


def test_unknown_and_malformed_refs_are_named(pool: Pool) -> None:
    missing = "sha256:" + "ab" * 32
    with pytest.raises(SourceError, match=f"{missing}: not in the pool"):
        pool.source(missing)
    with pytest.raises(SourceError, match="not a pool reference"):
        pool.source("sha256:xyz")
    with pytest.raises(SourceError, match="not a pool reference"):
        pool.source("md5:" + "0" * 32)
    assert missing not in pool


def test_corrupt_pool_files_are_named(tmp_path: Path) -> None:
    with Pool(tmp_path / "p", SR) as pool:
        ref = pool.add_array(noise(2, 1000), 44100)
        audio = pool.directory / "audio"
        h = ref[7:]
    # the converted file is damaged between sessions: the next open says so
    (audio / f"{h}.{SR}.rf64").write_bytes(b"garbage")
    with Pool(tmp_path / "p", SR) as pool, pytest.raises(SourceError, match=f"{ref}: its audio"):
        pool.source(ref)
    (audio / f"{h}.json").write_text("{not json")
    with Pool(tmp_path / "p", SR) as pool, pytest.raises(SourceError, match="unreadable"):
        pool.source(ref)


def test_read_fills_zeros_outside_the_source(pool: Pool) -> None:
    x = noise(2, 100)
    src = pool.source(pool.add_array(x, SR))
    out = np.full((2, 50), np.nan, np.float32)
    src.read(-20, out)
    assert not out[:, :20].any()
    np.testing.assert_array_equal(out[:, 20:], x[:, :30])
    src.read(80, out)
    np.testing.assert_array_equal(out[:, :20], x[:, 80:])
    assert not out[:, 20:].any()
    src.read(-100, out)
    assert not out.any()
    out[:] = 1.0
    src.read(500, out)
    assert not out.any()
    big = np.full((2, 300), np.nan, np.float32)
    src.read(-100, big)  # wider than the source on both sides
    np.testing.assert_array_equal(big[:, 100:200], x)
    assert not big[:, :100].any() and not big[:, 200:].any()
    first = np.zeros((1, 10), np.float32)  # fewer rows: the first channels
    src.read(0, first)
    np.testing.assert_array_equal(first[0], x[0, :10])
    with pytest.raises(ValueError):
        src.read(0, np.zeros((3, 10), np.float32))


def test_streaming_equals_in_memory_sample_for_sample(tmp_path: Path) -> None:
    x = noise(2, 300_001, seed=9)
    f = write(tmp_path / "long.wav", x, 44100, subtype="PCM_24")
    with Pool(tmp_path / "mem", SR) as mem, Pool(tmp_path / "disk", SR,
                                                 stream_above_bytes=0) as disk:
        a, b = mem.source(mem.import_file(f)), disk.source(disk.import_file(f))
        assert isinstance(a, InMemorySource) and isinstance(b, StreamingSource)
        assert (a.frames, a.channels) == (b.frames, b.channels)
        np.testing.assert_array_equal(read_all(b), read_all(a))
        rng = np.random.default_rng(3)
        # random seeks, backwards too, spans across ring blocks, past both ends
        for _ in range(200):
            n = int(rng.integers(1, 150_000))
            start = int(rng.integers(-50_000, a.frames + 10_000))
            oa = np.full((2, n), np.nan, np.float32)
            ob = np.full((2, n), np.nan, np.float32)
            a.read(start, oa)
            assert b.read(start, ob)
            np.testing.assert_array_equal(ob, oa)
        # sequential playback in small blocks, as the renderer does it
        blocks = []
        for pos in range(0, a.frames, 1000):
            o = np.zeros((2, 1000), np.float32)
            b.read(pos, o)
            blocks.append(o)
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1)[:, : a.frames],
                                      read_all(a))
        assert b.misses == 0


def test_streaming_without_waiting_gives_zeros_and_counts_misses(tmp_path: Path) -> None:
    x = noise(1, 2_000_000, seed=5)
    with Pool(tmp_path / "p", SR, stream_above_bytes=0) as pool:
        src = pool.source(pool.add_array(x, SR))
        assert isinstance(src, StreamingSource)
        far = 1_500_000
        out = np.full((1, 256), np.nan, np.float32)
        # the first read there finds nothing buffered: the thread is told, nothing waits
        assert src.read(far, out, wait=False) is False
        assert not out.any()
        assert src.misses == 1
        deadline = time.monotonic() + 10
        while not src.read(far, out, wait=False):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        np.testing.assert_array_equal(out[0], x[0, far : far + 256])
        # playing on from there stays ahead of the reader
        for pos in range(far + 256, far + 20_000, 256):
            time.sleep(0.0005)
            src.read(pos, out, wait=False)
        assert src.read(far + 30_000, out, wait=True)
        np.testing.assert_array_equal(out[0], x[0, far + 30_000 : far + 30_256])


def test_a_read_without_waiting_takes_no_lock(tmp_path: Path) -> None:
    """The real-time path must not wait for anyone: with the source's condition held by
    another thread (an offline reader, the read-ahead thread), ``wait=False`` reads still
    return at once, buffered data and all."""
    x = noise(2, 400_000, seed=7)
    with Pool(tmp_path / "p", SR, stream_above_bytes=0) as pool:
        src = pool.source(pool.add_array(x, SR))
        assert isinstance(src, StreamingSource)
        out = np.zeros((2, 512), np.float32)
        assert src.read(1000, out)  # waits: the first block is in
        results: list[bool] = []
        got = np.zeros((2, 512), np.float32)

        def audio() -> None:
            for pos in range(0, 400_000, 50_000):  # far seeks too: the thread is poked
                results.append(src.read(pos, got, wait=False))
            results.append(src.read(1000, got, wait=False))

        with src._cond:  # held for the whole of the real-time reads
            t = threading.Thread(target=audio)
            t.start()
            t.join(timeout=10)
            assert not t.is_alive(), "a read with wait=False waited for a lock"
        assert len(results) == 9 and results[-1] is True
        np.testing.assert_array_equal(got, x[:, 1000:1512])
        assert src.read(350_000, out)  # and the thread still follows the reader
        np.testing.assert_array_equal(out, x[:, 350_000:350_512])


def test_an_open_source_is_found_without_checking_its_name_again(pool: Pool) -> None:
    ref = pool.add_array(noise(1, 1000), SR)
    src = pool.source(ref)
    assert pool.source(ref) is src
    for bad in ("sha256:" + "A" * 64, ref + "0", ref.upper(), "sha256:" + "g" * 64, 5):
        with pytest.raises(SourceError, match="not a pool reference"):
            pool.source(bad)  # type: ignore[arg-type]


def test_close_stops_the_read_ahead_threads(tmp_path: Path) -> None:
    before = threading.active_count()
    pool = Pool(tmp_path / "p", SR, stream_above_bytes=0)
    refs = [pool.add_array(noise(2, 70_000, seed=s), SR) for s in range(3)]
    sources = [pool.source(r) for r in refs]
    assert pool.source(refs[0]) is sources[0]  # opened once, shared
    assert threading.active_count() == before + 3
    pool.close()
    assert threading.active_count() == before
    with pytest.raises(SourceError, match="closed"):
        sources[0].read(0, np.zeros((2, 10), np.float32))
    with pytest.raises(SourceError, match="closed"):
        pool.source(refs[0])
    pool.close()  # twice is fine


@pytest.mark.parametrize("rate", [SR, 44100])
def test_peaks_match_the_samples_at_every_level(pool: Pool, rate: int) -> None:
    x = noise(2, 100_003, seed=6)
    x[1, 70_000] = 0.9
    ref = pool.add_array(x, rate)
    y = read_all(pool.source(ref))
    for fpp in PEAK_LEVELS:
        p = pool.peaks(ref, fpp)
        n = -(-y.shape[1] // fpp)
        assert p.shape == (2, n, 2) and p.dtype == np.float32
        for c in range(2):
            for k in (0, 1, n // 2, n - 1):
                seg = y[c, k * fpp : (k + 1) * fpp]
                assert p[c, k, 0] == seg.min() and p[c, k, 1] == seg.max()
        pad = np.full((2, n * fpp), np.nan, np.float32)
        pad[:, : y.shape[1]] = y
        np.testing.assert_array_equal(p[..., 1], np.nanmax(pad.reshape(2, n, fpp), axis=2))
        np.testing.assert_array_equal(p[..., 0], np.nanmin(pad.reshape(2, n, fpp), axis=2))
    with pytest.raises(ValueError):
        pool.peaks(ref, 100)


def test_verify_rehashes_the_original(pool: Pool) -> None:
    ref = pool.add_array(noise(2, 1000), SR)
    assert pool.verify(ref)
    original = pool.directory / "audio" / f"{ref[7:]}.wav"
    data = bytearray(original.read_bytes())
    data[-1] ^= 1
    original.write_bytes(bytes(data))
    assert not pool.verify(ref)


def test_another_project_rate_derives_its_own_files(tmp_path: Path) -> None:
    x = tone(1000.0, 44100, 44100)
    with Pool(tmp_path / "p", 44100) as pool:
        ref = pool.add_array(x, 44100)
        np.testing.assert_array_equal(read_all(pool.source(ref)), x)
    with Pool(tmp_path / "p", 48000) as pool:
        assert pool.refs() == [ref]
        src = pool.source(ref)
        assert src.frames == 48000
        assert pool.peaks(ref, 1024).shape == (1, 47, 2)


def test_an_import_that_fails_midway_leaves_no_entry(pool: Pool, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "a.wav", noise(2, 1000), 44100)
    real = os.replace
    calls = []

    def failing(src: Any, dst: Any) -> None:
        calls.append(dst)
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        pool.import_file(f)
    monkeypatch.setattr(os, "replace", real)
    assert pool.refs() == []
    assert not [p for p in (pool.directory / "audio").iterdir() if p.name.startswith(".")]
    ref = pool.import_file(f)  # and a retry completes it
    assert pool.refs() == [ref]


def test_a_disk_error_in_the_read_ahead_thread_is_reported(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    with Pool(tmp_path / "p", SR, stream_above_bytes=0) as pool:
        ref = pool.add_array(noise(1, 1_000_000), SR)
        src = pool.source(ref)
        assert isinstance(src, StreamingSource)

        def broken(*args: Any, **kw: Any) -> Any:
            raise OSError(5, "Input/output error")

        out = np.zeros((1, 100), np.float32)
        src.read(0, out)
        monkeypatch.setattr(src._file, "read", broken)
        # past the ring (8 blocks of 65536 frames): the thread fails, the waiting reader hears of it
        with pytest.raises(SourceError, match="failed"):
            src.read(900_000, out)


def test_resampling_keeps_time_alignment(pool: Pool, tmp_path: Path) -> None:
    # a 44.1 kHz sine comes out as the same sine sampled at 48 kHz: no delay, no phase shift
    rate = 44100
    x = tone(1000.0, rate, rate, amp=0.5)
    y = read_all(pool.source(pool.add_array(x, rate)))[0].astype(np.float64)
    want = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(len(y)) / SR)
    mid = slice(2400, len(y) - 2400)  # away from the file's edges (the filter's ramp)
    assert np.abs(y[mid] - want[mid]).max() < 1e-5


def test_concurrent_imports_of_the_same_file_make_one_entry(pool: Pool,
                                                            tmp_path: Path) -> None:
    f = write(tmp_path / "a.flac", noise(2, 100_000), 44100, format="FLAC")
    refs: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            refs.append(pool.import_file(f))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(refs)) == 1 and pool.refs() == refs[:1]
    assert len(list((pool.directory / "audio").iterdir())) == 4  # original, json, rf64, peaks


def test_add_array_refuses_what_is_not_audio(pool: Pool) -> None:
    with pytest.raises(SourceError, match="channels, frames"):
        pool.add_array(np.zeros(10, np.float32), SR)
    with pytest.raises(SourceError, match="channels, frames"):
        pool.add_array(np.zeros((2, 0), np.float32), SR)
    with pytest.raises(SourceError):
        pool.add_array(np.zeros((1, 10), np.float32), 0)
    with pytest.raises(SourceError, match="not plausible"):
        pool.add_array(np.zeros((1, 10), np.float32), 10)
    assert pool.refs() == []


def test_a_soundfont_is_kept_whole_and_found_by_its_path(tmp_path: Path) -> None:
    sf2 = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
    with Pool(tmp_path / "p", 48000) as pool:
        ref = pool.import_soundfont(sf2)
        assert pool.import_soundfont(sf2) == ref
        assert pool.source_path(ref).read_bytes() == sf2.read_bytes()
        with pytest.raises(SourceError, match="a SoundFont, not audio"):
            pool.source(ref)
        wav = tmp_path / "x.wav"
        sf.write(wav, np.zeros((10, 2), np.float32), 48000)
        with pytest.raises(SourceError, match="not a SoundFont 2 file"):
            pool.import_soundfont(wav)


@pytest.mark.parametrize("fmt", ["WAV", "RF64"])
def test_offline_pools_map_float_wavs_and_read_the_same_samples(tmp_path: Path,
                                                                fmt: str) -> None:
    from companion.engine.pool import MappedSource

    rng = np.random.default_rng(9)
    data = rng.standard_normal((3000, 2)).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, data, 48000, subtype="FLOAT", format=fmt)
    with Pool(tmp_path / "p", 48000) as plain_pool:
        ref = plain_pool.import_file(path)
        memory = plain_pool.source(ref)
    with Pool(tmp_path / "p", 48000, map_files=True) as pool:
        mapped = pool.source(ref)
        assert isinstance(mapped, MappedSource) and not isinstance(memory, MappedSource)
        for start, n in [(-50, 100), (0, 3000), (1234, 777), (2990, 64), (5000, 10)]:
            a = np.full((2, n), 7.0, np.float32)
            b = np.full((2, n), 7.0, np.float32)
            memory.read(start, a)
            mapped.read(start, b)
            np.testing.assert_array_equal(a, b)
        one = np.zeros((1, 10), np.float32)
        mapped.read(5, one)
        np.testing.assert_array_equal(one[0], data[5:15, 0])
    # an int16 WAV is read into memory as before
    path16 = tmp_path / "y.wav"
    sf.write(path16, data * 0.1, 48000, subtype="PCM_16")
    with Pool(tmp_path / "p", 48000, map_files=True) as pool:
        assert not isinstance(pool.source(pool.import_file(path16)), MappedSource)
