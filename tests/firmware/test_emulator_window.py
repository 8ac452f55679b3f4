"""The desktop pedal in a window: ``ouro pedal --emulate window`` on an X server (Xvfb),
keys pressed and held in the window with XTEST (xdotool), the window's pixels read back,
and a real engine on ``jackd -d dummy`` receiving the commands.

A key is a switch held down as long as the key is: a tap the test means must not stay
down past the hold time, which on a busy machine (xdotool is a process per key) it might.
Each tap's longest possible time down is measured; when a check fails after a tap that may
have been a hold, the test is skipped naming it, not failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageGrab

from firmware.display import WINDOW_CLASS
from firmware.keymap import default_keymap
from firmware.screen import View, render
from rtcore.client import EngineClient, EngineProcess
from rtcore.jackd import JackServer, unique_server_name
from tests.rtcore.test_live import wait_until

pytestmark = [pytest.mark.jack, pytest.mark.gui,
              pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("xdotool") is None,
                                 reason="needs Xvfb and xdotool")]
ROOT = Path(__file__).resolve().parents[2]
SCALE = 4  # the window draws each OLED pixel as 4x4


@pytest.fixture
def xserver() -> Iterator[str]:
    """A private Xvfb; yields its DISPLAY (it picks a free display number itself)."""
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "640x480x24",
                             "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with os.fdopen(read) as f:
            number = f.readline().strip()
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    with JackServer(unique_server_name("test-window"), period_frames=256) as srv, \
            EngineProcess(srv.name, tmp_path / "data") as eng:
        yield eng


def test_keys_in_the_window_are_the_footswitches(xserver: str, engine: EngineProcess) -> None:
    env = {**os.environ, "DISPLAY": xserver, "SDL_AUDIODRIVER": "dummy"}
    pedal = subprocess.Popen([sys.executable, "-m", "rtcore.cli", "pedal", "--emulate", "window",
                              "--engine", f"127.0.0.1:{engine.osc_port}",
                              "--data-dir", str(engine.data_dir)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    client = EngineClient("127.0.0.1", engine.osc_port)

    def xdo(*args: str) -> str:
        return subprocess.run(["xdotool", *args], env=env, check=True, capture_output=True,
                              text=True, timeout=30).stdout

    def windows() -> list[str]:
        return subprocess.run(["xdotool", "search", "--name", ".*"], env=env,
                              capture_output=True, text=True).stdout.split()

    hold_time_s = default_keymap().hold_time_s
    untimely: list[str] = []  # taps that may have been held past the hold time

    def press(key: str, seconds: float = 0.06) -> None:
        t0 = time.monotonic()
        xdo("keydown", key)
        time.sleep(seconds)
        xdo("keyup", key)
        longest = time.monotonic() - t0  # from before the key went down to after it rose
        if key != "q" and seconds < hold_time_s <= longest:
            untimely.append(f"a tap of {key!r} may have been down {longest:.2f} s (the hold "
                            f"time is {hold_time_s:g} s)")

    def shown() -> Image.Image:
        """The OLED as the window shows it: its 512x256 pixels, one in 4x4."""
        grab = ImageGrab.grab(xdisplay=xserver).convert("L")
        return grab.crop((left, top, left + 128 * SCALE, top + 64 * SCALE)).resize(
            (128, 64), Image.Resampling.NEAREST).point(lambda v: 255 if v > 127 else 0)

    def off_by(mode: str) -> int:
        status = client.status()
        sel = tuple(status["selected"])
        seen = np.asarray(shown())
        return min(int(np.count_nonzero(seen != np.asarray(render(View(
            status=status, selected=sel, mode=mode, blink=b)).convert("L"))))
            for b in (True, False))

    try:
        # the window once it is mapped (no window manager here: focusing a window that is
        # not yet viewable fails, as it did once in CI)
        window = wait_until(lambda: subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--class", WINDOW_CLASS], env=env,
            capture_output=True, text=True).stdout.split(), 30,
            describe=lambda: f"no pedal window; the pedal "
                             f"{'runs' if pedal.poll() is None else f'exited {pedal.returncode}'}"
                             f", X windows: {windows()}")[0]
        wait_until(lambda: subprocess.run(["xdotool", "windowfocus", "--sync", window],
                                          env=env, capture_output=True,
                                          timeout=30).returncode == 0,
                        describe=lambda: "the pedal window never took the keyboard focus")
        geometry = dict(line.split("=") for line in xdo("getwindowgeometry", "--shell",
                                                         window).split())
        left, top = int(geometry["X"]), int(geometry["Y"])
        # a tap of a: FS1 records (0,0); again: it plays and the selection moves to row 1
        press("a")
        wait_until(lambda: client.status()["cells"][0][0]["state"] == "recording",
                   describe=lambda: "no recording")
        time.sleep(1.2)
        press("a")
        wait_until(lambda: client.status()["selected"] == [0, 1],
                   describe=lambda: "the selection did not move")
        assert client.status()["cells"][0][0]["state"] == "playing"
        # the window comes to show the pedal's frame for the status, pixel for pixel but for
        # what moves (the beat, the progress bars, the meter)
        wait_until(lambda: off_by("PLAY") < 0.04 * 128 * 64, 10,
                   describe=lambda: f"{off_by('PLAY')} pixels differ")
        # f held down (a real hold, as long as the key is down): EDIT mode, on screen
        press("f", 1.0)
        wait_until(lambda: off_by("EDIT") < 0.04 * 128 * 64, 5,
                   describe=lambda: "EDIT mode is not on screen")
        # s held in EDIT mode: stop everything
        press("s", 1.0)
        wait_until(lambda: client.status()["cells"][0][0]["state"] == "idle",
                   describe=lambda: "s hold did not stop")
        # q quits the pedal; the engine goes on
        press("q")
        _, err = pedal.communicate(timeout=15)
        assert pedal.returncode == 0, err
        assert "emulated (window)" in err and "6 gestures" in err, err
        assert client.status()["cells"][0][0]["state"] == "idle"
    except AssertionError as exc:
        if not untimely:
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else repr(exc)
        pytest.skip(f"the test could not make its taps on this busy machine: "
                    f"{'; '.join(untimely)} ({first_line[:300]})")
    finally:
        if pedal.poll() is None:
            pedal.terminate()
        if pedal.stderr is not None and not pedal.stderr.closed:
            _, err = pedal.communicate(timeout=10)
            print(f"the pedal (exit {pedal.returncode}) said:\n{err}")  # shown on failure
        client.close()
