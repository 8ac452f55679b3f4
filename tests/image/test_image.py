"""The pedal's image, as a musician would flash it: ``image/build`` makes the amd64 twin of
the Pi's image, QEMU boots it (TCG, no KVM) with the kernel and initrd beside the disk, and
the test checks the running system through the serial console and the engine's OSC port:
all services active, the root file system read-only and /data writable (and grown to the
disk), a loop recorded over OSC still there after the power is cut. The arm64 image is built
too and checked without booting: partition table, boot files, config.txt, arm64 binaries,
units enabled.

Set ``OURO_IMAGE_DIR`` to a directory holding ``amd64/`` and ``arm64/`` from earlier
builds to test those instead of building (for working on the tests themselves).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtcore.client import EngineClient, EngineUnreachable

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow, pytest.mark.image,
    pytest.mark.skipif(os.geteuid() != 0, reason="image/build needs root"),
    pytest.mark.timeout(2700),  # the arm64 build: about 12-18 min here, downloads included
]
BOOT_TIMEOUT_S = 600  # TCG on two cores: the kernel, systemd, jackd and the engine
GROW_MB = 256  # the "card" is this much bigger than the image: /data takes it at first boot


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def build(arch: str, out: Path) -> Path:
    given = os.environ.get("OURO_IMAGE_DIR")
    if given:
        return Path(given) / arch
    cache = Path(os.environ.get("OURO_IMAGE_CACHE", "/var/cache/ouroboros-image-debs")) / arch
    proc = subprocess.run([str(REPO / "image" / "build"), "--arch", arch, "--out", str(out),
                           "--cache", str(cache)], capture_output=True, text=True,
                          timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the stages said what they were doing
    for stage in ("wheels", "rootfs", "system", "boot", "disk"):
        assert re.search(rf"\[\d/5\] {stage} done in \d+ s", proc.stdout), proc.stdout
    return out


class Serial:
    """The guest's serial console over a TCP socket: everything it prints is kept; ``run``
    types a command into the root shell and returns its output and exit code."""

    def __init__(self, port: int):
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "QEMU's serial port never opened"
                time.sleep(0.2)
        self.sock.settimeout(None)
        self.text = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.text += data.decode(errors="replace")

    def run(self, command: str, timeout_s: float = 120) -> tuple[int, str]:
        mark = uuid.uuid4().hex[:12]
        with self._lock:
            start = len(self.text)
        self.sock.sendall(f"echo {mark}-B; {command}; echo {mark}-E-$?\n".encode())
        pattern = re.compile(rf"{mark}-B\r?\n(.*?){mark}-E-(\d+)", re.S)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                m = pattern.search(self.text, start)
            if m:
                return int(m.group(2)), m.group(1).replace("\r", "")
            assert time.monotonic() < deadline, f"no answer to {command!r}:\n{self.tail()}"
            time.sleep(0.2)

    def tail(self, n: int = 4000) -> str:
        with self._lock:
            return self.text[-n:]

    def close(self) -> None:
        self.sock.close()


class Machine:
    """The amd64 image booted in qemu-system-x86_64 (TCG): OSC on a forwarded UDP port."""

    def __init__(self, image_dir: Path, disk: Path):
        self.osc_port = free_port(socket.SOCK_DGRAM)
        serial_port = free_port(socket.SOCK_STREAM)
        cmdline = (image_dir / "cmdline.txt").read_text().strip() if (
            image_dir / "cmdline.txt").exists() else ""
        append = cmdline or "console=ttyS0 root=LABEL=ouro-root ro rootwait"
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1536",
             "-nodefaults", "-display", "none", "-no-reboot",
             "-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
             "-append", append,
             "-drive", f"file={disk},format=raw,if=virtio,cache=writeback",
             "-netdev", f"user,id=n0,hostfwd=udp:127.0.0.1:{self.osc_port}-:9951",
             "-device", "virtio-net-pci,netdev=n0,romfile=",  # no iPXE ROM needed
             "-serial", f"tcp:127.0.0.1:{serial_port},server=on,wait=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.serial = Serial(serial_port)
        self.osc = EngineClient("127.0.0.1", self.osc_port)

    def wait_engine(self) -> dict[str, Any]:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"QEMU exited:\n{self.serial.tail()}"
            try:
                return self.osc.status(timeout_s=2)
            except EngineUnreachable:
                assert time.monotonic() < deadline, \
                    f"the engine never answered /ouro/status:\n{self.serial.tail()}"

    def pull_the_plug(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.serial.close()
        self.osc.close()


@pytest.fixture(scope="module")
def amd64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("amd64", tmp_path_factory.mktemp("image-amd64"))


@pytest.fixture(scope="module")
def arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("arm64", tmp_path_factory.mktemp("image-arm64"))


@pytest.fixture
def disk(amd64: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the built image, GROW_MB larger (a bigger card)."""
    copy = tmp_path / "card.img"
    subprocess.run(["cp", "--sparse=always", str(amd64 / "ouroboros-amd64.img"), str(copy)],
                   check=True)
    with open(copy, "r+b") as f:
        f.truncate(copy.stat().st_size + GROW_MB * (1 << 20))
    yield copy


EM_AARCH64 = b"\xb7\x00"  # ELF e_machine 183, little-endian


def e_machine(elf: bytes) -> bytes:
    """The CPU an ELF file is for: its e_machine field."""
    return elf[18:20]


def sfdisk_json(image: Path) -> dict[str, Any]:
    out = subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True,
                         text=True).stdout
    table: dict[str, Any] = json.loads(out)["partitiontable"]
    return table


def test_the_amd64_image_boots_runs_the_pedal_and_keeps_a_loop_through_a_power_cut(
        amd64: Path, disk: Path) -> None:
    manifest = json.loads((amd64 / "manifest.json").read_text())
    data_mb = manifest["disk"]["partitions"]["data"]
    vm = Machine(amd64, disk)
    try:
        st = vm.wait_engine()
        assert st["jack"]["state"] == "running", st["jack"]
        # the services, through the serial console's root shell
        units = ["jackd", "ouro-engine", "ouro-pedal", "avahi-daemon", "systemd-networkd",
                 "ouro-grow-data", "ouro-cpu-performance"]
        deadline = time.monotonic() + 120
        while (rc := vm.serial.run(f"systemctl is-active {' '.join(units)}"))[0] != 0:
            assert time.monotonic() < deadline, rc
            time.sleep(2)
        assert rc[1].split() == ["active"] * len(units), rc
        rc = vm.serial.run("systemctl --failed --no-legend --plain | wc -l")
        assert rc == (0, "0\n"), vm.serial.run("systemctl --failed")
        # ssh is off unless a key was given at build time
        assert vm.serial.run("systemctl is-enabled ssh")[1].strip() == "disabled"
        # the pedal runs headless here (no GPIO in QEMU), as the pedal service's log says
        rc = vm.serial.run("journalctl -b -u ouro-pedal --no-pager | tail -n 5")
        assert "headless" in rc[1], rc
        # / is read-only, /data is writable and took the rest of the disk
        assert vm.serial.run("findmnt -n -o OPTIONS /")[1].split(",")[0] == "ro"
        assert vm.serial.run("touch /probe")[0] != 0
        assert vm.serial.run("touch /data/probe && rm /data/probe")[0] == 0
        size = int(vm.serial.run("df -B1M --output=size /data | tail -n 1")[1])
        assert size > data_mb + GROW_MB * 0.8, size
        # avahi publishes ouroboros.local: asked through nss-mdns, as any program on the
        # network's hosts would ask (QEMU's user network carries no multicast to this side)
        assert vm.serial.run("hostname")[1].strip() == "ouroboros"
        # (avahi probes the name before it publishes it: a few seconds after it starts)
        deadline = time.monotonic() + 60
        while not re.match(r"\d+\.\d+\.\d+\.\d+\s", (rc := vm.serial.run(
                "getent ahostsv4 ouroboros.local | head -n 1"))[1]):
            assert time.monotonic() < deadline, rc
            time.sleep(2)
        assert rc[0] == 0, rc
        assert vm.serial.run("getent ahostsv4 nosuchpedal.local")[0] != 0
        # a loop, recorded over OSC, saved
        vm.osc.command("record", 0, 0)
        deadline = time.monotonic() + 60
        while vm.osc.status()["cells"][0][0]["state"] != "recording":
            assert time.monotonic() < deadline, "no recording"
            time.sleep(0.2)
        time.sleep(2.0)
        vm.osc.command("record", 0, 0)
        while (cell := vm.osc.status()["cells"][0][0])["crc32"] is None:
            assert time.monotonic() < deadline + 60, cell
            time.sleep(0.5)
        while vm.osc.status()["session"]["problem"] is not None or vm.serial.run(
                "grep -c '\"takes\"' /data/ouroboros/session/session.json")[0] != 0:
            assert time.monotonic() < deadline + 120, vm.osc.status()["session"]
            time.sleep(0.5)
        rc = vm.serial.run("python3 -c \"import json; print(len(json.load(open("
                           "'/data/ouroboros/session/session.json'))['takes']))\"")
        assert rc == (0, "1\n"), rc
        # numba's kernel cache lives on /data too: damage one file the way a power cut can
        # (cut short, and on disk), and the engine must still come up after the cut
        rc = vm.serial.run("f=$(find /data/ouroboros/cache/numba -name '*.nbi' | head -n 1); "
                           "test -n \"$f\" && truncate -s 3 \"$f\" && sync && echo \"$f\"")
        assert rc[0] == 0, rc
        damaged = Path(rc[1].strip()).name
    finally:
        vm.pull_the_plug()  # the power, cut: no shutdown, no sync
    again = Machine(amd64, disk)
    try:
        st = again.wait_engine()
        now = st["cells"][0][0]
        assert now["crc32"] == cell["crc32"], (now, cell)
        assert now["length_frames"] == cell["length_frames"]
        assert st["session"]["restored"]["problems"] == [], st["session"]
        rc = again.serial.run("findmnt -n -o OPTIONS /")
        assert rc[1].startswith("ro"), rc
        rc = again.serial.run("journalctl -b -u ouro-engine --no-pager | grep -c 'damaged "
                              f"compiled-kernel cache removed ({damaged}'")
        assert rc == (0, "1\n"), (rc, again.serial.run("journalctl -b -u ouro-engine")[1])
    finally:
        again.close()


def test_the_arm64_image_holds_a_pi_boot_partition_and_an_arm64_system(
        arm64: Path, tmp_path: Path) -> None:
    image = arm64 / "ouroboros-arm64.img"
    manifest = json.loads((arm64 / "manifest.json").read_text())
    table = sfdisk_json(image)
    assert table["label"] == "dos"
    parts = table["partitions"]
    assert [p["type"] for p in parts] == ["c", "83", "83"], parts
    assert parts[0].get("bootable") is True
    sizes_mb = [p["size"] // 2048 for p in parts]
    assert sizes_mb == list(manifest["disk"]["partitions"].values())
    boot_off = parts[0]["start"] * 512
    mtools = {"MTOOLS_SKIP_CHECK": "1", **os.environ}
    listing = subprocess.run(["mdir", "-b", "-i", f"{image}@@{boot_off}", "::/"], check=True,
                             capture_output=True, text=True, env=mtools).stdout
    names = {Path(line.strip()).name for line in listing.splitlines()}
    for needed in ("start4.elf", "fixup4.dat", "config.txt", "cmdline.txt", "vmlinuz",
                   "initrd.img", "bcm2711-rpi-4-b.dtb", "overlays"):
        assert needed in names, (needed, sorted(names))

    def boot_file(name: str) -> str:
        return subprocess.run(["mtype", "-i", f"{image}@@{boot_off}", f"::/{name}"],
                              check=True, capture_output=True, text=True, env=mtools).stdout

    # the initramfs: arm64 programs, and the drivers that reach the SD card's root
    initrd = tmp_path / "initrd.img"
    subprocess.run(["mcopy", "-n", "-i", f"{image}@@{boot_off}", "::/initrd.img", str(initrd)],
                   check=True, env=mtools)
    unpacked = tmp_path / "initrd"
    unpacked.mkdir(exist_ok=True)
    subprocess.run(f"zcat '{initrd}' | cpio -id --quiet", shell=True, cwd=unpacked,
                   check=True)
    modules = {p.name.split(".ko")[0] for p in unpacked.rglob("*.ko*")}
    assert {"sdhci-iproc", "ext4", "usb-storage"} <= modules, sorted(modules)
    assert len(modules) < 200, len(modules)  # the Pi's list, not MODULES=most
    assert set(manifest["initramfs_modules"]) >= {"sdhci_iproc", "ext4"}
    loader = unpacked / "usr/lib/ld-linux-aarch64.so.1"
    assert e_machine(loader.read_bytes()) == EM_AARCH64
    assert e_machine((unpacked / "usr/bin/kmod").read_bytes()) == EM_AARCH64
    config = boot_file("config.txt")
    assert "arm_64bit=1" in config and "dtoverlay=ouro-pcm5122" in config
    assert "root=LABEL=ouro-root ro" in boot_file("cmdline.txt")
    overlays = subprocess.run(["mdir", "-b", "-i", f"{image}@@{boot_off}", "::/overlays"],
                              check=True, capture_output=True, text=True, env=mtools).stdout
    assert "ouro-pcm5122.dtbo" in overlays and "ouro-spi0.dtbo" in overlays
    assert "dtoverlay=ouro-spi0" in config
    # the overlays apply to the Pi 4's tree (with libfdt, as the firmware applies them)
    trees = ["bcm2711-rpi-4-b.dtb", "overlays/ouro-pcm5122.dtbo", "overlays/ouro-spi0.dtbo"]
    for name in trees:
        subprocess.run(["mcopy", "-n", "-i", f"{image}@@{boot_off}", f"::/{name}",
                        str(tmp_path / Path(name).name)], check=True, env=mtools)
    merged = tmp_path / "merged.dtb"
    subprocess.run(["fdtoverlay", "-i", str(tmp_path / trees[0]), "-o", str(merged),
                    *(str(tmp_path / Path(n).name) for n in trees[1:])], check=True)

    def fdtget(node: str, prop: str) -> str:
        return subprocess.run(["fdtget", str(merged), node, prop], check=True,
                              capture_output=True, text=True).stdout.strip()

    assert fdtget("/sound", "compatible") == "simple-audio-card"
    assert fdtget("/soc/spi@7e204000", "status") == "okay"
    # the root file system: arm64 binaries, the venv, units enabled
    root_off = parts[1]["start"] * 512
    root = tmp_path / "root.ext4"
    subprocess.run(["dd", f"if={image}", f"of={root}", "bs=1M", f"skip={root_off >> 20}",
                    f"count={sizes_mb[1]}", "status=none"], check=True)

    def debugfs(request: str) -> str:
        return subprocess.run(["debugfs", "-R", request, str(root)], check=True,
                              capture_output=True, text=True).stdout

    def cat(path: str) -> bytes:
        return subprocess.run(["debugfs", "-R", f"cat {path}", str(root)], check=True,
                              capture_output=True).stdout

    jackd = cat("/usr/bin/jackd")
    assert jackd[:7] == b"\x7fELF\x02\x01\x01"  # ELF, 64-bit, little-endian, version 1
    assert e_machine(jackd) == EM_AARCH64
    assert e_machine(cat("/usr/bin/python3.11")) == EM_AARCH64
    wants = debugfs("ls -l /etc/systemd/system/multi-user.target.wants")
    for unit in ("jackd.service", "ouro-engine.service", "ouro-pedal.service",
                 "avahi-daemon.service", "ouro-grow-data.service"):
        assert unit in wants, (unit, wants)
    assert "ssh.service" not in wants
    site = "/opt/ouroboros/venv/lib/python3.11/site-packages"
    lgpio = debugfs(f"ls {site}")
    assert "_lgpio.cpython-311-aarch64-linux-gnu.so" in lgpio
    numpy_so = [n for n in debugfs(f"ls {site}/numpy/_core").split() if n.endswith(".so")]
    assert numpy_so and all("aarch64" in n for n in numpy_so), numpy_so
    assert b"LABEL=ouro-data" in cat("/etc/fstab")
    inside = json.loads(cat("/usr/share/ouroboros/manifest.json"))
    assert inside["arch"] == "arm64" and inside["debian"]["jackd2"], inside.keys()
    assert shutil.which("debugfs")
