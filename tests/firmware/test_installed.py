"""An installed copy of the project (a wheel in a fresh venv, as the pedal's image has it)
finds its pin maps and key map without the repository beside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

CHECK = """
import sys
from pathlib import Path
import firmware
from firmware.keymap import default_keymap
from firmware.pinmap import HW_DIR, builtin_boards, builtin_pinmap
assert Path(firmware.__file__).is_relative_to(sys.prefix), firmware.__file__
assert HW_DIR == Path(sys.prefix) / "share" / "ouroboros" / "hw", HW_DIR
print(" ".join(builtin_boards()))
print(builtin_pinmap("rpi5").board, sorted(default_keymap().modes))
"""


def test_a_wheel_in_a_fresh_venv_carries_the_pin_maps_and_the_key_map(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, timeout=300)
    out = subprocess.run([str(python), "-I", "-c", CHECK], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    boards, pinmap = out.stdout.splitlines()
    assert boards.split() == sorted(p.stem for p in (REPO / "hw" / "pinmaps").glob("*.toml"))
    assert pinmap == "rpi5 ['edit', 'menu', 'play']"
