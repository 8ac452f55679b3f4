"""image/build's own logic that needs no root and no network: reading a device tree blob
made by the real dtc, and choosing the Pi's initramfs modules from it the way udev would
match them, against a kernel module directory laid out as Debian ships it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]

DTS = """/dts-v1/;
/ {
    compatible = "raspberrypi,4-model-b", "brcm,bcm2711";
    soc {
        emmc2: mmc@7e340000 { compatible = "brcm,bcm2711-emmc2"; status = "okay"; };
        usb@7e980000 { compatible = "brcm,bcm2835-usb"; };
        sd_io_1v8_reg { compatible = "regulator-gpio"; };
        gpu { compatible = "brcm,bcm2711-vc5"; };
        i2s@7e203000 { compatible = "brcm,bcm2835-i2s"; };
        empty-node { };
    };
};
"""
# as the kernel writes them: each compatible string twice, alone and followed by others
ALIASES = "".join(f"alias of:N*T*C{c}{more} {m}\n" for c, m in (
    ("brcm,bcm2711-emmc2", "sdhci_iproc"), ("brcm,bcm2835-usb", "dwc2"),
    ("regulator-gpio", "gpio_regulator"), ("brcm,bcm2711-vc5", "vc4"),
    ("brcm,bcm2835-i2s", "snd_soc_bcm2835_i2s"), ("brcm,bcm2712-pcie", "brcm_pcie_2712"))
    for more in ("C*", "")) + "alias pci:v00001033d00000194sv*sd*bc*sc*i* xhci_pci\n"
DEPS = """\
kernel/drivers/mmc/host/sdhci-iproc.ko.xz: kernel/drivers/mmc/host/sdhci-pltfm.ko.xz
kernel/drivers/usb/dwc2/dwc2.ko.xz:
kernel/drivers/regulator/gpio-regulator.ko.xz:
kernel/drivers/gpu/drm/vc4/vc4.ko.xz:
kernel/sound/soc/bcm/snd-soc-bcm2835-i2s.ko.xz:
kernel/drivers/pci/controller/brcm-pcie-2712.ko.xz:
kernel/fs/ext4/ext4.ko.xz:
"""


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_build", REPO / "image" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dtb(tmp_path: Path) -> bytes:
    if shutil.which("dtc") is None:
        pytest.skip("dtc is not installed (./run tests installs device-tree-compiler)")
    (tmp_path / "pi.dts").write_text(DTS)
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", tmp_path / "pi.dtb",
                    tmp_path / "pi.dts"], check=True)
    return (tmp_path / "pi.dtb").read_bytes()


def test_the_device_tree_reader_finds_every_node_and_its_compatible_strings(
        dtb: bytes) -> None:
    nodes = dict(load_build().fdt_nodes(dtb))
    assert nodes[""] == ["raspberrypi,4-model-b", "brcm,bcm2711"]  # the root node
    assert nodes["mmc"] == ["brcm,bcm2711-emmc2"]  # unit address dropped
    assert nodes["usb"] == ["brcm,bcm2835-usb"]
    assert nodes["empty-node"] == [] and "soc" in nodes
    assert len(nodes) == 8


def test_the_initramfs_gets_the_boot_path_drivers_the_tree_calls_for(
        dtb: bytes, tmp_path: Path) -> None:
    build = load_build()
    moddir = tmp_path / "modules"
    moddir.mkdir()
    (moddir / "modules.alias").write_text(ALIASES)
    (moddir / "modules.dep").write_text(DEPS)
    modules = build.initramfs_modules(moddir, [dtb])
    # SD card, USB and the regulator the SD card's I/O voltage comes from; not the GPU or
    # the sound card (not on the way to the root file system), nor what the tree lacks
    assert {"sdhci_iproc", "dwc2", "gpio_regulator"} <= set(modules)
    assert not {"vc4", "snd_soc_bcm2835_i2s", "brcm_pcie_2712"} & set(modules)
    assert set(build.ROOT_MODULES) <= set(modules)
    assert modules == sorted(modules)


def test_a_file_that_is_not_a_device_tree_is_refused_by_name() -> None:
    build = load_build()
    with pytest.raises(build.BuildError, match="not a device tree"):
        build.fdt_nodes(b"\x00" * 64)


BASE = """/dts-v1/;
/ {
    #address-cells = <1>;
    #size-cells = <1>;
    compatible = "raspberrypi,4-model-b", "brcm,bcm2711";
    soc {
        #address-cells = <1>;
        #size-cells = <1>;
        gpio@7e200000 { compatible = "brcm,bcm2711-gpio"; };
        i2s@7e203000 { compatible = "brcm,bcm2835-i2s"; status = "disabled"; };
        spi@7e204000 { compatible = "brcm,bcm2835-spi"; status = "disabled"; };
        i2c@7e804000 { compatible = "brcm,bcm2835-i2c"; status = "disabled"; };
    };
};
"""


def test_our_overlays_apply_to_a_debian_tree_only_once_it_has_symbols(tmp_path: Path) -> None:
    """Debian's trees have no __symbols__; the Pi firmware, like fdtoverlay (libfdt), cannot
    resolve ``target = <&i2s>`` without them."""
    if shutil.which("dtc") is None or shutil.which("fdtoverlay") is None:
        pytest.skip("dtc/fdtoverlay are not installed (./run tests installs "
                    "device-tree-compiler)")
    build = load_build()
    (tmp_path / "base.dts").write_text(BASE)
    base, fixed = tmp_path / "base.dtb", tmp_path / "fixed.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", base, tmp_path / "base.dts"],
                   check=True)
    overlays = []
    for name in ("ouro-pcm5122", "ouro-spi0"):  # both, as config.txt loads them
        overlays.append(tmp_path / f"{name}.dtbo")
        subprocess.run(["dtc", "-q", "-@", "-I", "dts", "-O", "dtb", "-o", overlays[-1],
                        REPO / "hw" / "overlays" / f"{name}.dts"], check=True)

    def apply(tree: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["fdtoverlay", "-i", tree, "-o", tmp_path / "merged.dtb",
                               *overlays], capture_output=True, text=True)

    assert apply(base).returncode != 0  # as Debian ships it
    build.with_symbols(base, fixed, tmp_path / "scratch")
    assert apply(fixed).returncode == 0, apply(fixed).stderr

    def get(*args: str) -> str:
        return subprocess.run(["fdtget", tmp_path / "merged.dtb", *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    assert get("/soc/i2s@7e203000", "status") == "okay"
    assert get("/sound", "compatible") == "simple-audio-card"
    assert get("/soc/i2c@7e804000", "clock-frequency") == "400000"
    assert get("/soc/i2c@7e804000/pcm5122@4d", "compatible") == "ti,pcm5122"
    assert get("/soc/spi@7e204000", "status") == "okay"
    assert get("/soc/spi@7e204000/spidev@0", "compatible") == "rohm,dh2228fv"
    symbols = subprocess.run(["fdtget", "-p", fixed, "/__symbols__"], check=True,
                             capture_output=True, text=True).stdout.split()
    assert sorted(symbols) == sorted(build.PI_SYMBOLS)


def test_a_tree_without_a_node_the_overlays_need_is_refused_by_path(tmp_path: Path) -> None:
    if shutil.which("dtc") is None:
        pytest.skip("dtc is not installed")
    build = load_build()
    (tmp_path / "base.dts").write_text(BASE.replace("spi@7e204000", "spi@7e204001"))
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", tmp_path / "base.dtb",
                    tmp_path / "base.dts"], check=True)
    with pytest.raises(build.BuildError, match="/soc/spi@7e204000"):
        build.with_symbols(tmp_path / "base.dtb", tmp_path / "out.dtb", tmp_path / "s")
