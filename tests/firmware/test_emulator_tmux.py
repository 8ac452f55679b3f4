"""The desktop pedal as a musician runs it: ``ouro pedal --emulate`` in a terminal (tmux),
keys in, the OLED drawn in block characters out, a real engine on ``jackd -d dummy``."""

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
from PIL import Image

from firmware.display import decode_asciiblock
from firmware.screen import View, render
from rtcore.client import EngineClient, EngineProcess
from rtcore.jackd import JackServer, unique_server_name
from tests.rtcore.test_live import wait_until

pytestmark = [pytest.mark.jack,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]
ROOT = Path(__file__).resolve().parents[2]
SCREEN_ROWS = 32  # 64 pixel rows, two per character row


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    with JackServer(unique_server_name("test-emulator"), period_frames=256) as srv, \
            EngineProcess(srv.name, tmp_path / "data") as eng:
        yield eng


def pane(session: str, colours: bool = False) -> str:
    return subprocess.run(["tmux", "capture-pane", "-t", session, "-p",
                           *(["-e"] if colours else [])],
                          check=True, capture_output=True, text=True).stdout


def wait_pane(session: str, text: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = pane(session)
        if text in seen:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in the pane:\n{seen}")
        time.sleep(0.2)


def differing(a: Image.Image, b: Image.Image) -> int:
    return int(np.count_nonzero(np.asarray(a) != np.asarray(b)))


def test_keys_drive_the_engine_and_the_screen_shows_it(engine: EngineProcess,
                                                        tmp_path: Path) -> None:
    session = f"ouro-pedal-{os.getpid()}"
    cmd = [sys.executable, "-m", "rtcore.cli", "pedal", "--emulate", "--engine",
           f"127.0.0.1:{engine.osc_port}", "--data-dir", str(engine.data_dir)]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "128", "-y", "50",
                    "-c", str(ROOT), *cmd], check=True)
    client = EngineClient("127.0.0.1", engine.osc_port)
    try:
        # the key map is on screen, under the OLED
        legend = wait_pane(session, "FS1 tap: record")
        assert "q: quit" in legend
        # a: FS1 tap -> record (0,0); a again -> it plays; the selection moves to row 1
        subprocess.run(["tmux", "send-keys", "-t", session, "a"], check=True)
        deadline = time.monotonic() + 10
        while client.status()["cells"][0][0]["state"] != "recording":
            assert time.monotonic() < deadline, "the key did not start a recording"
            time.sleep(0.05)
        time.sleep(1.2)
        subprocess.run(["tmux", "send-keys", "-t", session, "a"], check=True)
        while (st := client.status())["selected"] != [0, 1]:
            assert time.monotonic() < deadline + 5, st["selected"]
            time.sleep(0.05)
        assert st["cells"][0][0]["state"] == "playing"
        # the screen in the pane comes to be the pedal's frame for the status: compare with
        # a render of the status read just before the pane, and check it is far from the
        # frame of an empty matrix
        looks: list[tuple[int, int]] = []

        def look() -> tuple[int, int]:
            status = client.status()
            lines = pane(session, colours=True).splitlines()[:SCREEN_ROWS]
            shown = decode_asciiblock("\n".join(lines), 128, 64)
            near = min(differing(shown, render(View(status=status, selected=(0, 1),
                                                    mode="PLAY", blink=b)))
                       for b in (True, False))
            empty = {**status, "cells": [[{**c, "state": "empty", "next_state": "empty"}
                                          for c in col] for col in status["cells"]]}
            far = differing(shown, render(View(status=empty, selected=(0, 1), mode="PLAY")))
            looks.append((near, far))
            return near, far

        # what moves between the two moments: the beat, the progress bars, the meter
        near, far = wait_until(lambda: (nf := look())[0] < 0.04 * 128 * 64 and nf, 10,
                               step_s=0.2, describe=lambda: f"(near, far) pixels {looks[-5:]}")
        assert far > near, (far, near)
        # q quits the pedal (the engine stays)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["tmux", "has-session", "-t", session],
                             capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "q did not end the pedal"
            time.sleep(0.1)
        assert client.status()["cells"][0][0]["state"] == "playing"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        client.close()
