"""``ouro engine``'s settings file, and the process guards that need no JACK server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rtcore.errors import ConfigError
from rtcore.live import CpuWakeupGuard, LiveSettings, MemoryLock, load_settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path


def test_a_full_file_is_read_and_overrides_win(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[engine]
tempo_bpm = 100
click = true
[jack]
server = "stage"
connect = false
[jack.connections]
click = ["system:playback_3"]
[osc]
port = 9000
[process]
data_dir = "~/loops"
switch_interval_ms = 0.2
cpu_wakeup_latency_us = -1
""")
    s = load_settings(path, osc_port=9100, server=None)
    assert s.engine.tempo_bpm == 100 and s.engine.click
    assert s.server == "stage" and not s.connect
    assert s.connections == {"click": ["system:playback_3"]}
    assert s.osc_port == 9100  # the command line wins; None leaves the file's value
    assert s.data_dir == Path("~/loops").expanduser()
    assert s.switch_interval_ms == 0.2 and s.cpu_wakeup_latency_us == -1


def test_defaults_without_a_file() -> None:
    s = load_settings(None)
    assert s == LiveSettings(data_dir=s.data_dir)
    assert s.switch_interval_ms == 0.1 and s.cpu_wakeup_latency_us == 0


@pytest.mark.parametrize(("text", "words"), [
    ("[engine\n", "not valid TOML"),
    ("[mixer]\n", "unknown table(s) 'mixer'"),
    ("jack = 3\n", "[jack] must be a table"),
    ("[engine]\nsample_rate = 44100\n", "[engine] sample_rate comes from the JACK server"),
    ("[osc]\nhost = 1\n", "[osc] host must be a string, got 1"),
    ("[osc]\nport = true\n", "[osc] port must be an integer, got True"),
    ("[osc]\nport = 70000\n", "OSC port must be 0..65535, got 70000"),
    ("[process]\nloud = 1\n", "[process] unknown key(s) 'loud'"),
    ("[process]\nswitch_interval_ms = 0\n", "switch_interval_ms must be 0.05..10, got 0"),
    ("[process]\ncpu_wakeup_latency_us = -2\n", "cpu_wakeup_latency_us must be -1 (off)"),
    ("[process]\ncpu_wakeup_latency_us = 0.5\n", "cpu_wakeup_latency_us must be an integer"),
    ("[jack.connections]\nclick = \"system:playback_3\"\n", "click must be a list of port"),
])
def test_every_mistake_names_the_file_and_the_key(tmp_path: Path, text: str, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert words in str(err.value)
    assert str(path) in str(err.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml")


def test_the_wakeup_request_is_written_and_held_until_exit(tmp_path: Path) -> None:
    device = tmp_path / "cpu_dma_latency"  # a plain file stands in for the device node
    device.write_bytes(b"")
    with CpuWakeupGuard(20, device) as guard:
        assert guard.held
        assert device.read_bytes() == (20).to_bytes(4, sys.byteorder, signed=True)
        assert guard.status() == {"requested_us": 20, "held": True, "error": None}
    assert not guard.held


def test_without_the_device_the_engine_runs_on_and_says_why(tmp_path: Path) -> None:
    with CpuWakeupGuard(0, tmp_path / "missing") as guard:
        assert not guard.held
        assert "cannot open" in (guard.error or "") and "missing" in (guard.error or "")


def test_minus_one_asks_for_nothing(tmp_path: Path) -> None:
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    with CpuWakeupGuard(-1, device) as guard:
        assert not guard.held and guard.error is None
    assert device.read_bytes() == b""


def test_memory_lock_is_taken_or_says_why() -> None:
    with MemoryLock(False) as off:
        assert off.status() == {"wanted": False, "held": False, "error": None}
    with MemoryLock(True) as lock:
        locked = [line for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmLck:")]
        if lock.held:
            assert int(locked[0].split()[1]) > 0
        else:  # a memlock limit smaller than the test process
            assert "mlockall failed" in (lock.error or "")
    assert not lock.held
