"""The committed drawings are what firmware/hwdocs.py makes from the pin maps, they are
well-formed SVG, the drilling template is to scale, and every used pin is labelled."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from firmware.hwdocs import (
    drill_holes,
    drill_template_svg,
    generate,
    led_resistor_ohms,
    main,
    wiring_svg,
)
from firmware.pinmap import HW_DIR, builtin_boards, builtin_pinmap

NS = {"svg": "http://www.w3.org/2000/svg"}


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_generated_files_are_the_expected_set() -> None:
    names = sorted(p.name for p in generate())
    assert names == sorted([f"wiring-{b}.svg" for b in builtin_boards()]
                           + ["drill-template.svg"])


@pytest.mark.parametrize("path", sorted(generate()), ids=lambda p: p.name)
def test_committed_files_equal_the_generator(path: Path) -> None:
    assert path.is_file(), f"{path} missing: run python -m firmware.hwdocs"
    assert path.read_text(encoding="utf-8") == generate()[path], \
        f"{path.name} is stale: run python -m firmware.hwdocs"


def test_output_is_deterministic() -> None:
    assert generate() == generate()


@pytest.mark.parametrize("path", sorted(generate()), ids=lambda p: p.name)
def test_svgs_parse_as_xml(path: Path) -> None:
    root = ET.fromstring(path.read_text(encoding="utf-8"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.attrib["viewBox"].split()) == 4


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    real = generate()
    stale = {tmp_path / p.name: text for p, text in real.items()}
    for p, text in stale.items():
        p.write_text(text, encoding="utf-8")
    first = sorted(stale)[0]
    first.write_text("<svg/>", encoding="utf-8")
    monkeypatch.setattr("firmware.hwdocs.generate", lambda: stale)
    monkeypatch.setattr("firmware.hwdocs.HW_DIR", tmp_path / "hw")
    (tmp_path / "hw").mkdir()
    assert main(["--check"]) == 1
    assert first.name in capsys.readouterr().err
    assert first.read_text(encoding="utf-8") == "<svg/>"  # --check writes nothing
    assert main([]) == 0
    assert main(["--check"]) == 0


def test_drill_template_scale_bar_is_100_mm() -> None:
    root = ET.fromstring(drill_template_svg())
    width, height = root.attrib["width"], root.attrib["height"]
    assert width.endswith("mm") and height.endswith("mm")
    _, _, vb_w, vb_h = (float(v) for v in root.attrib["viewBox"].split())
    # One user unit is one millimetre: the viewBox spans the document's size in mm.
    assert (vb_w, vb_h) == (float(width[:-2]), float(height[:-2]))
    bar = root.find(".//svg:line[@id='scale-bar']", NS)
    assert bar is not None
    length = float(bar.attrib["x2"]) - float(bar.attrib["x1"])
    assert length == 100.0 and bar.attrib["y1"] == bar.attrib["y2"]


def test_drill_template_holes() -> None:
    holes = drill_holes()
    assert [h.d for h in holes if h.label.startswith("FS")] == [12.0] * 4
    fs_x = [h.x for h in holes if h.label.startswith("FS")]
    assert fs_x == sorted(fs_x) and fs_x[0] > 12 and 145 - fs_x[-1] > 12
    assert {h.d for h in holes if h.label.startswith(("IN", "OUT"))} == {9.5}
    assert {h.d for h in holes if h.label.startswith("MIDI")} == {15.5}
    assert [h.d for h in holes if h.label == "ENCODER"] == [7.0]
    assert len([h for h in holes if h.label.startswith("LED")]) == 3
    window = next(h for h in holes if h.label == "OLED window")
    # The window shows the 0.96" module's 21.74 x 10.86 mm active area and stays on its glass.
    assert 21.74 < window.w < 26.7 and 10.86 < window.h < 19.26
    text = " ".join(texts(ET.fromstring(drill_template_svg())))
    assert "FS1 Ø12" in text and "100 mm" in text


@pytest.mark.parametrize("name", builtin_boards())
def test_every_used_pin_is_labelled_in_its_wiring_svg(name: str) -> None:
    pm = builtin_pinmap(name)
    root = ET.fromstring((HW_DIR / f"wiring-{name}.svg").read_text(encoding="utf-8"))
    labels = texts(root)
    for gpio, role in {**pm.pins(), **pm.bus_pins()}.items():
        assert f"GPIO{gpio}" in labels, (gpio, role)
    joined = "\n".join(labels)
    for sw in pm.switches:
        assert f"footswitch {sw.name}" in joined
    for led in pm.leds:
        assert re.search(rf"LED {led} \(", joined)
    for reserved in pm.reserved:
        assert f"reserved: {reserved}" in joined
    assert sum(1 for t in labels if t == "GND") >= 8  # every GND pin is labelled too
    assert f"hw/pinmaps/{name}.toml" in joined


def test_wiring_shows_the_display_bus() -> None:
    spi = "\n".join(texts(ET.fromstring(wiring_svg(builtin_pinmap("rpi4-spi")))))
    assert "OLED CS" in spi and "OLED DC" in spi and "OLED RES" in spi
    assert "SPI0 MISO (SPI0, leave free)" in spi and "SPI0 MISO (HAT)" not in spi
    i2c = "\n".join(texts(ET.fromstring(wiring_svg(builtin_pinmap("rpi4")))))
    assert "OLED SDA" in i2c and "OLED CS" not in i2c


def test_led_resistors_for_3v3() -> None:
    assert led_resistor_ohms(2.0) == 270  # red: (3.3 - 2.0) / 5 mA = 260 -> 270
    assert led_resistor_ohms(2.1) == 270  # green/yellow: 240 -> 270
    assert led_resistor_ohms(2.0, 0.010) == 150  # 130 -> 150
    assert led_resistor_ohms(0.0, 0.001) == 3300
