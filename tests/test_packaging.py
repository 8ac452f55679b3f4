"""The installed distribution: its console script, and which extra pulls in which toolkit.

The pedal image installs ``.[pedal]`` and the tablet installs ``.[companion]``; a GUI toolkit
on the pedal or a GPIO library on the tablet would be dead weight, or fail to install.
"""

import re
from importlib import metadata

import pytest

DIST = "ouroboros-looper"


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
    [("pedal", "kivy"), ("companion", "gpiozero")],
)
def test_extra_keeps_out_the_other_sides_toolkit(extra: str, forbidden: str) -> None:
    names = requirements_of_extra(extra)
    assert names, f"extra {extra!r} lists no requirements; is {DIST} installed?"
    assert forbidden not in names, f"extra {extra!r} must not require {forbidden}: {names}"
