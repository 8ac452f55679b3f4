"""The installed distribution: its console script, which extra pulls in which toolkit, and
the data files (key map, pin maps) an installed copy needs.

The pedal image installs ``.[pedal]`` and the tablet installs ``.[companion]``; a GUI toolkit
on the pedal or a GPIO library on the tablet would be dead weight, or fail to install.
"""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

DIST = "ouroboros-looper"
REPO = Path(__file__).resolve().parents[1]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_of_extra(extra: str) -> set[str]:
    """Normalized names of the requirements that ``DIST[extra]`` adds."""
    marker = re.compile(r"""extra\s*==\s*["']""" + re.escape(extra) + r"""["']""")
    names = set()
    for spec in metadata.metadata(DIST).get_all("Requires-Dist") or []:
        requirement, _, markers = spec.partition(";")
        if marker.search(markers):
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            assert match, f"unparseable Requires-Dist: {spec!r}"
            names.add(_normalize(match.group(1)))
    return names


def test_ouro_console_script_points_at_rtcore_cli() -> None:
    scripts = metadata.entry_points(group="console_scripts", name="ouro")
    assert [ep.value for ep in scripts] == ["rtcore.cli:main"]


@pytest.mark.parametrize(
    ("extra", "forbidden"),
    [("pedal", "kivy"), ("pi", "kivy"), ("companion", "gpiozero"), ("companion", "lgpio")],
)
def test_extra_keeps_out_the_other_sides_toolkit(extra: str, forbidden: str) -> None:
    names = requirements_of_extra(extra)
    assert names, f"extra {extra!r} lists no requirements; is {DIST} installed?"
    assert forbidden not in names, f"extra {extra!r} must not require {forbidden}: {names}"


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


@pytest.mark.slow
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
