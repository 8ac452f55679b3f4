"""The pedal's images, as a musician would flash them, booted in QEMU (TCG, no KVM):

- amd64, the Pi image's test twin: ``qemu-system-x86_64`` with the kernel and initrd beside
  the disk, the disk on virtio.
- arm64, the Pi's own image: ``qemu-system-aarch64 -M virt`` (Cortex-A72) with the kernel
  and initrd from the card's boot partition and the card on USB storage (``qemu-xhci`` +
  ``usb-storage``). USB, not virtio: the Pi's initramfs holds the modules that reach the
  root on the Pi (SD card and USB, image/build's ``MODULES=list``), and a Pi 4 boots from a
  USB drive too, so the test goes the way a pedal can, and the image carries no driver that
  only the test needs.
- arm64 on ``-M raspi3b``: QEMU's Raspberry Pi 3 (BCM2837) with the card as its SD card and
  Debian's own device tree for it: the Pi's SD path, the Pi's real GPIO controller
  (``pinctrl-bcm2835``) under the pedal process, and no OLED wired.

Both full boots get the same checks through the serial console and the engine's OSC port:
the root and data file systems checked by fsck at boot (marked as having errors before the
first boot), all services active and none restarted (``NRestarts=0``), the root file system
read-only and /data writable (and grown to the card), a loop recorded over OSC still there
after the power is cut. The arm64 image is also checked without booting: partition table,
boot files, config.txt, arm64 binaries, units enabled.

A failed wait or check on a booted image says what it waited for, for how long, what it
last saw, and how the machine was (``Machine.wait_for``, ``Machine.failure``,
``Machine.report``): the serial console's last lines, the units' states and logs, QEMU's
exit status and stderr (kept in a file in the test's tmp_path, beside the console's log).

Set ``OURO_IMAGE_DIR`` to a directory holding ``amd64/`` and ``arm64/`` from earlier
builds to test those instead of building (for working on the tests themselves).
"""

from __future__ import annotations

import codecs
import datetime
import json
import os
import pprint
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rtcore.client import EngineClient, EngineUnreachable

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow, pytest.mark.image,
    pytest.mark.skipif(os.geteuid() != 0, reason="image/build needs root"),
    # the arm64 build (12-18 min here, downloads included), then two boots of it
    pytest.mark.timeout(3600),
]
BOOT_TIMEOUT_S = 600  # TCG on two cores: the kernel, systemd, jackd and the engine
# the engine's first start on arm64 compiles its kernels under emulation: about 210 s on
# virt when nothing else runs here, 510 s seen with the other core busy
ENGINE_TIMEOUT_S = {"amd64": BOOT_TIMEOUT_S, "arm64": 1200}
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


class NoAnswer(Exception):
    """The root shell on the serial console did not finish a command in time."""

    def __init__(self, command: str, timeout_s: float, partial: str):
        super().__init__(f"no answer to {command!r} within {timeout_s:g} s")
        self.command, self.timeout_s, self.partial = command, timeout_s, partial


class Serial:
    """The guest's serial console over a TCP socket: everything it prints is kept; ``run``
    types a command into the root shell and returns its output and exit code."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.settimeout(None)
        self.text = ""
        self.quiet = False  # kernel messages still printed on the console
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # across reads
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.text += utf8.decode(data)

    def run(self, command: str, timeout_s: float = 120) -> tuple[int, str]:
        """The exit code and output of ``command``; raises NoAnswer after ``timeout_s``."""
        mark = uuid.uuid4().hex[:12]
        if not self.quiet:
            # kernel messages stop going to the console, where they land in the middle of a
            # command's output (dmesg and the journal keep them)
            command = f"dmesg -n 1; {command}"
        with self._lock:
            start = len(self.text)
        self.sock.sendall(f"echo {mark}-B; {command}; echo {mark}-E-$?\n".encode())
        pattern = re.compile(rf"{mark}-B\r?\n(.*?){mark}-E-(\d+)", re.S)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                m = pattern.search(self.text, start)
                partial = self.text[start:]
            if m:
                self.quiet = True
                return int(m.group(2)), m.group(1).replace("\r", "")
            if time.monotonic() >= deadline:
                raise NoAnswer(command, timeout_s, partial)
            time.sleep(0.2)

    def lines(self, n: int) -> list[str]:
        """The console's last ``n`` lines, without colours and carriage returns."""
        with self._lock:
            text = self.text[-200 * n:]
        return [ANSI.sub("", line).rstrip("\r") for line in text.split("\n")][-n:]

    def save(self, path: Path) -> None:
        with self._lock:
            path.write_text(self.text)

    def close(self) -> None:
        self.sock.close()


class Explained(AssertionError):
    """A failure whose message already says what failed and how the machine was."""


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
UNITS = ["jackd", "ouro-engine", "ouro-pedal", "ouro-grow-data", "ouro-cpu-performance",
         "avahi-daemon", "systemd-networkd"]  # the units report() describes
T = TypeVar("T")


def shown(value: object, limit: int = 4000) -> str:
    text = (value or "(nothing)") if isinstance(value, str) else pprint.pformat(value, width=100)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class Qemu:
    """How one board is started: QEMU's command line without its serial port and network,
    the network card that carries the OSC forward, and which of the board's serial ports
    holds the console (the ones before it are left unconnected)."""

    def __init__(self, argv: list[str], nic: str, console_port: int = 0):
        self.argv, self.nic, self.console_port = argv, nic, console_port


def amd64_board(image_dir: Path, disk: Path) -> Qemu:
    """The amd64 image: the kernel and initrd beside the disk, the disk on virtio."""
    cmdline = (image_dir / "cmdline.txt").read_text().strip()
    return Qemu(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2",
                 "-m", "1536", "-kernel", str(image_dir / "vmlinuz"),
                 "-initrd", str(image_dir / "initrd.img"), "-append", cmdline,
                 "-drive", f"file={disk},format=raw,if=virtio,cache=writeback"],
                "virtio-net-pci,netdev=n0,romfile=")  # no iPXE ROM needed


def virt_board(boot: PiBoot, disk: Path) -> Qemu:
    """The Pi image on QEMU's virt board: the card on USB storage behind an xHCI controller
    (as a USB drive on a Pi 4), the console on the board's PL011 (ttyAMA0)."""
    cmdline = boot.cmdline.replace("console=ttyS1,115200", "console=ttyAMA0,115200")
    return Qemu(["qemu-system-aarch64", "-M", "virt", "-accel", "tcg", "-cpu", "cortex-a72",
                 "-smp", "2", "-m", "2048", "-kernel", str(boot.kernel),
                 "-initrd", str(boot.initrd), "-append", cmdline,
                 "-drive", f"if=none,id=card,file={disk},format=raw,cache=writeback",
                 "-device", "qemu-xhci", "-device", "usb-storage,drive=card"],
                "virtio-net-pci,netdev=n0,romfile=")


def raspi3b_board(boot: PiBoot, disk: Path) -> Qemu:
    """The Pi image on QEMU's Raspberry Pi 3: the card as its SD card, Debian's device tree
    for the board, the console on the mini UART (ttyS1, the board's second serial port,
    as on a real Pi with Bluetooth on), the network on QEMU's usb-net (usb0)."""
    return Qemu(["qemu-system-aarch64", "-M", "raspi3b", "-accel", "tcg",
                 "-kernel", str(boot.kernel), "-initrd", str(boot.initrd),
                 "-dtb", str(boot.pi3_dtb), "-append", boot.cmdline,
                 "-drive", f"if=sd,file={disk},format=raw,cache=writeback"],
                "usb-net,netdev=n0", console_port=1)


class PiBoot:
    """What QEMU needs from the Pi image to boot it without the Pi's firmware: the kernel,
    initrd and cmdline.txt from the card's boot partition, and Debian's Raspberry Pi 3
    device tree from the root file system (the card's boot partition has the Pi 4's and
    5's only)."""

    def __init__(self, image: Path, into: Path):
        table = sfdisk_json(image)["partitions"]
        boot_off, root_off = table[0]["start"] * 512, table[1]["start"] * 512
        into.mkdir(parents=True, exist_ok=True)
        mtools = {"MTOOLS_SKIP_CHECK": "1", **os.environ}
        for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
            subprocess.run(["mcopy", "-n", "-i", f"{image}@@{boot_off}", f"::/{name}",
                            str(into / name)], check=True, env=mtools)
        self.kernel, self.initrd = into / "vmlinuz", into / "initrd.img"
        self.cmdline = (into / "cmdline.txt").read_text().strip()
        root = f"{image}?offset={root_off}"  # e2fsprogs opens a file system inside a file
        lib = subprocess.run(["debugfs", "-R", "ls -p /usr/lib", root], check=True,
                             capture_output=True, text=True).stdout
        (kernel_dir,) = {f.split("/")[5] for f in lib.splitlines() if f.count("/") >= 6
                         and f.split("/")[5].startswith("linux-image-")}
        self.pi3_dtb = into / "bcm2837-rpi-3-b.dtb"
        subprocess.run(["debugfs", "-R", f"dump /usr/lib/{kernel_dir}/broadcom/"
                        f"{self.pi3_dtb.name} {self.pi3_dtb}", root], check=True,
                       capture_output=True)
        assert self.pi3_dtb.stat().st_size > 10_000, self.pi3_dtb


class Machine:
    """An image booted in QEMU (TCG): OSC on a forwarded UDP port, the root shell on the
    serial console.

    Every wait goes through :meth:`wait_for` and every check's message through
    :meth:`failure`, so that a failed test says what it waited for, for how long, what it
    last saw, and how the machine was then (:meth:`report`): the console's last lines, the
    units' states and logs as the guest's root shell tells them, QEMU's status and stderr.
    """

    def __init__(self, board: Qemu, logs: Path, name: str = "boot"):
        self.name = name
        self.osc_port = free_port(socket.SOCK_DGRAM)
        serial_port = free_port(socket.SOCK_STREAM)
        self.stderr_path = logs / f"qemu-{name}.stderr"
        self.serial_log = logs / f"serial-{name}.log"
        self.serial: Serial | None = None
        self.osc = EngineClient("127.0.0.1", self.osc_port)
        self.started = time.monotonic()
        with open(self.stderr_path, "wb") as stderr:  # a file: a full pipe would block QEMU
            self.proc = subprocess.Popen(
                [*board.argv, "-nodefaults", "-display", "none", "-no-reboot",
                 "-netdev", f"user,id=n0,hostfwd=udp:127.0.0.1:{self.osc_port}-:9951",
                 "-device", board.nic,
                 *["-serial", "null"] * board.console_port,
                 "-serial", f"tcp:127.0.0.1:{serial_port},server=on,wait=off"],
                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            self.serial = Serial(self.wait_for(
                f"QEMU's serial port (TCP 127.0.0.1:{serial_port}) to take a connection",
                lambda: socket.create_connection(("127.0.0.1", serial_port), timeout=5),
                lambda _: True, 30, every_s=0.2, retry_on=(OSError,)))
        except BaseException:
            self.close()
            raise

    def wait_for(self, what: str, probe: Callable[[], T], done: Callable[[T], bool],
                 timeout_s: float, *, every_s: float = 0.5, since: float | None = None,
                 retry_on: tuple[type[Exception], ...] = ()) -> T:
        """Calls ``probe`` until ``done`` says yes to what it returned, and returns that.
        Fails, with what it last saw and :meth:`report`, when ``timeout_s`` (counted from
        ``since``, default now) has passed, when QEMU exits, or when ``probe`` raises
        anything but ``retry_on`` (which counts as not yet)."""
        __tracebackhide__ = True
        start = time.monotonic() if since is None else since
        tries = 0
        seen: object = "nothing yet"

        def fail(why: str) -> Explained:
            return Explained(self.failure(
                what, seen, f"{why} after {time.monotonic() - start:.0f} s of the "
                f"{timeout_s:g} s allowed (tries: {tries})"))

        while True:
            if self.proc.poll() is not None:
                raise fail(f"QEMU exited (status {self.proc.returncode})")
            tries += 1
            try:
                value = probe()
            except Explained:
                raise  # a run() that got no answer: already told, with a report
            except retry_on as e:
                seen = e
            except Exception as e:
                seen = e
                raise fail(f"{type(e).__name__} raised") from e
            else:
                seen = value
                if done(value):
                    return value
            if time.monotonic() - start >= timeout_s:
                raise fail("gave up")
            time.sleep(every_s)

    def run(self, command: str, timeout_s: float = 120) -> tuple[int, str]:
        """``command`` in the root shell on the serial console: exit code and output."""
        __tracebackhide__ = True
        assert self.serial is not None
        try:
            return self.serial.run(command, timeout_s)
        except NoAnswer as e:
            raise Explained(self.failure(
                f"an answer to {command!r} from the root shell on the serial console",
                e.partial, f"none after {timeout_s:g} s")) from None

    def failure(self, what: str, seen: object, how: str = "") -> str:
        """The message for a failed wait or check: what, for how long, what was seen last,
        and :meth:`report`."""
        return "\n".join([f"waiting for / checking: {what}", *([how] if how else []),
                          f"last seen: {shown(seen)}", self.report()])

    def report(self, shell_timeout_s: float = 15) -> str:
        """How the machine is now: QEMU's status and stderr, the serial console's last 60
        lines and, if the guest's root shell answers within ``shell_timeout_s``, the failed
        units, the states of :data:`UNITS`, and the engine's and jackd's last log lines."""
        age = time.monotonic() - self.started
        rc = self.proc.poll()
        out = [f"==== {self.name}: QEMU (pid {self.proc.pid}) "
               + (f"running for {age:.0f} s" if rc is None
                  else f"EXITED with status {rc} (launched {age:.0f} s ago)")]
        try:
            err = self.stderr_path.read_text(errors="replace").splitlines()[-30:]
        except OSError as e:
            err = [f"(unreadable: {e})"]
        out += [f"---- QEMU stderr ({self.stderr_path}), last 30 lines:", *(err or ["(empty)"])]
        if self.serial is None:
            out.append("---- serial console: never connected")
            return "\n".join(out)
        out += [f"---- serial console, last 60 lines (all of it: {self.serial_log}):",
                *(self.serial.lines(60) if self.serial.text else ["(nothing yet)"])]
        if rc is not None:
            out.append("---- root shell: not asked (QEMU exited)")
            return "\n".join(out)
        units = " ".join(UNITS)
        for command in ["true",
                        "systemctl --failed --no-pager --full",
                        f"systemctl is-active {units}",
                        "systemctl show --no-pager -p Id,ActiveState,SubState,NRestarts,"
                        f"Result {units}",
                        "journalctl -b -u ouro-engine -n 30 --no-pager -o short-monotonic",
                        "journalctl -b -u jackd -n 30 --no-pager -o short-monotonic"]:
            try:
                code, text = self.serial.run(f"SYSTEMD_COLORS=0 {command}", shell_timeout_s)
            except NoAnswer as e:
                out += [f"---- root shell: no answer to {command!r} within "
                        f"{shell_timeout_s:g} s; got: {shown(e.partial.strip(), 500)!r}"]
                break
            except OSError as e:
                out.append(f"---- root shell: serial console unusable ({e})")
                break
            if command != "true":
                out += [f"---- root shell: {command}  (exit {code})",
                        ANSI.sub("", text).rstrip("\n")]
        return "\n".join(out)

    def wait_engine(self, timeout_s: float = BOOT_TIMEOUT_S) -> dict[str, Any]:
        return self.wait_for(
            f"the engine to answer /ouro/status (OSC, UDP 127.0.0.1:{self.osc_port})",
            self.osc.status, lambda _: True, timeout_s, every_s=0,
            retry_on=(EngineUnreachable,))

    def pull_the_plug(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.serial is not None:
            self.serial.close()
            self.serial.save(self.serial_log)
        self.osc.close()


@pytest.fixture(scope="module")
def amd64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("amd64", tmp_path_factory.mktemp("image-amd64"))


@pytest.fixture(scope="module")
def arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("arm64", tmp_path_factory.mktemp("image-arm64"))


EM_AARCH64 = b"\xb7\x00"  # ELF e_machine 183, little-endian


def e_machine(elf: bytes) -> bytes:
    """The CPU an ELF file is for: its e_machine field."""
    return elf[18:20]


def sfdisk_json(image: Path) -> dict[str, Any]:
    out = subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True,
                         text=True).stdout
    table: dict[str, Any] = json.loads(out)["partitiontable"]
    return table


def card(image: Path, into: Path, *, size_mb: int | None = None) -> Path:
    """A copy of the built image on a bigger card: GROW_MB larger, or ``size_mb`` in all
    (an SD card in QEMU's raspi boards must be a power of two)."""
    copy = into / "card.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
    with open(copy, "r+b") as f:
        f.truncate(size_mb << 20 if size_mb else copy.stat().st_size + (GROW_MB << 20))
    return copy


def last_checked(dumpe2fs_header: str) -> datetime.datetime:
    """The ``Last checked:`` time of a ``dumpe2fs -h`` header (e2fsck sets it; marking a
    file system as damaged does not)."""
    for line in dumpe2fs_header.splitlines():
        if line.startswith("Last checked:"):
            return datetime.datetime.strptime(" ".join(line.split(":", 1)[1].split()),
                                              "%a %b %d %H:%M:%S %Y")
    raise AssertionError(f"no 'Last checked:' in {dumpe2fs_header!r}")


def mark_damaged(disk: Path) -> dict[str, datetime.datetime]:
    """Sets the error flag of the root and data file systems, as the kernel does when it
    finds damage (``tune2fs -E force_fsck``): the next boot must check and repair both.
    Returns each file system's last check time (by label) before the boot."""
    parts = sfdisk_json(disk)["partitions"]
    checked: dict[str, datetime.datetime] = {}
    for part in parts[1:]:
        fs = f"{disk}?offset={part['start'] * 512}"
        subprocess.run(["tune2fs", "-E", "force_fsck", fs], check=True, capture_output=True)
        state = subprocess.run(["dumpe2fs", "-h", fs], check=True, capture_output=True,
                               text=True).stdout
        assert "with errors" in state, state
        label = re.search(r"^Filesystem volume name:\s*(\S+)", state, re.M)
        assert label, state
        checked[label.group(1)] = last_checked(state)
    assert set(checked) == {"ouro-root", "ouro-data"}, checked
    return checked


OURO_UNITS = ["jackd", "ouro-engine", "ouro-pedal", "ouro-grow-data", "ouro-cpu-performance"]


def check_not_restarted(vm: Machine, units: list[str] = OURO_UNITS) -> None:
    """Every one of ``units`` active and never restarted since boot (``NRestarts=0``): a
    unit that crashes and comes back is active again a second later, and only its restart
    count tells."""
    __tracebackhide__ = True
    rc = vm.run("systemctl show --no-pager -p Id,ActiveState,NRestarts " + " ".join(units))
    shown_units = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
                   for block in rc[1].strip().split("\n\n")]
    got = {u.get("Id", "?"): (u.get("ActiveState"), u.get("NRestarts")) for u in shown_units}
    want = {f"{u}.service": ("active", "0") for u in units}
    assert got == want, vm.failure(f"{', '.join(units)} active with NRestarts=0", got)


def check_file_systems_checked(vm: Machine, before: dict[str, datetime.datetime]) -> None:
    """The root file system checked by the initramfs before it was mounted, /data by
    systemd-fsck@, and both repaired: the error flags that :func:`mark_damaged` set are
    gone and each superblock's last check is later than ``before`` (the superblock is the
    evidence that stays: the volatile journal can have rotated the boot's first lines out
    by the time the engine answers on a slow emulated board)."""
    __tracebackhide__ = True
    forced = "{} contains a file system with errors, check forced."
    rc = vm.run("test -e /run/initramfs/fsck-root && cat /run/initramfs/fsck.log")
    assert rc[0] == 0 and forced.format("ouro-root") in rc[1], vm.failure(
        "the initramfs's fsck of ouro-root (/run/initramfs/fsck-root, fsck.log)", rc)
    for label, was in before.items():
        rc = vm.run(f"dumpe2fs -h /dev/disk/by-label/{label} 2>/dev/null "
                    "| grep -E '^(Filesystem state|Last checked):'")
        assert rc[0] == 0 and "error" not in rc[1] and last_checked(rc[1]) > was, vm.failure(
            f"{label}'s error flag cleared by an fsck at this boot (last checked before the "
            f"boot: {was:%Y-%m-%d %H:%M:%S})", rc)
    rc = vm.run("dmesg | grep -c 'mounting fs with errors' || true")
    assert rc[1].strip() == "0", vm.failure("no file system mounted with errors", rc)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_the_image_boots_runs_the_pedal_and_keeps_a_loop_through_a_power_cut(
        arch: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    image_dir: Path = request.getfixturevalue(arch)
    image = image_dir / f"ouroboros-{arch}.img"
    manifest = json.loads((image_dir / "manifest.json").read_text())
    data_mb = manifest["disk"]["partitions"]["data"]
    disk = card(image, tmp_path)
    checked_before = mark_damaged(disk)
    board = (amd64_board(image_dir, disk) if arch == "amd64"
             else virt_board(PiBoot(image, tmp_path / "boot"), disk))
    vm = Machine(board, tmp_path, "boot1")
    try:
        st = vm.wait_engine(ENGINE_TIMEOUT_S[arch])
        assert st["jack"]["state"] == "running", vm.failure("jackd running", st["jack"])
        # the services, through the serial console's root shell
        units = ["jackd", "ouro-engine", "ouro-pedal", "avahi-daemon", "systemd-networkd",
                 "ouro-grow-data", "ouro-cpu-performance"]
        rc = vm.wait_for(f"`systemctl is-active {' '.join(units)}` to exit 0",
                         lambda: vm.run(f"systemctl is-active {' '.join(units)}"),
                         lambda rc: rc[0] == 0, 120, every_s=2)
        assert rc[1].split() == ["active"] * len(units), vm.failure("all units active", rc)
        rc = vm.run("systemctl --failed --no-legend --plain | wc -l")
        assert rc == (0, "0\n"), vm.failure("no failed units", rc)
        check_file_systems_checked(vm, checked_before)
        # ssh is off unless a key was given at build time
        rc = vm.run("systemctl is-enabled ssh")
        assert rc[1].strip() == "disabled", vm.failure("ssh disabled", rc)
        # the pedal runs headless here, and says why: no gpiochip on amd64; on virt a
        # PL061, which is not the Pi's pin controller
        rc = vm.run("journalctl -b -u ouro-pedal --no-pager -o cat | grep 'ouro pedal: '")
        assert "headless (mock pins)" in rc[1], vm.failure("the pedal's log: headless", rc)
        if arch == "arm64":
            assert "pl061" in rc[1], vm.failure("the pedal's log naming virt's PL061", rc)
        # / is read-only, /data is writable and took the rest of the disk
        rc = vm.run("findmnt -n -o OPTIONS /")
        assert rc[1].split(",")[0] == "ro", vm.failure("/ mounted read-only", rc)
        rc = vm.run("touch /probe")
        assert rc[0] != 0, vm.failure("/ refusing a write", rc)
        rc = vm.run("touch /data/probe && rm /data/probe")
        assert rc[0] == 0, vm.failure("/data taking a write", rc)
        rc = vm.run("df -B1M --output=size /data | tail -n 1")
        size = int(rc[1]) if rc[1].strip().isdigit() else None
        assert size is not None and size > data_mb + GROW_MB * 0.8, vm.failure(
            f"/data grown to more than {data_mb} + 0.8 * {GROW_MB} MiB", rc)
        # avahi publishes ouroboros.local: asked through nss-mdns, as any program on the
        # network's hosts would ask (QEMU's user network carries no multicast to this side)
        rc = vm.run("hostname")
        assert rc[1].strip() == "ouroboros", vm.failure("the hostname ouroboros", rc)
        # (avahi probes the name before it publishes it: a few seconds after it starts)
        rc = vm.wait_for("ouroboros.local to resolve through nss-mdns",
                         lambda: vm.run("getent ahostsv4 ouroboros.local | head -n 1"),
                         lambda rc: bool(re.match(r"\d+\.\d+\.\d+\.\d+\s", rc[1])), 60,
                         every_s=2)
        assert rc[0] == 0, vm.failure("getent ahostsv4 ouroboros.local exiting 0", rc)
        rc = vm.run("getent ahostsv4 nosuchpedal.local")
        assert rc[0] != 0, vm.failure("nosuchpedal.local not resolving", rc)
        # a loop, recorded over OSC, saved (a status request is UDP through QEMU's user
        # network: one unanswered is not yet a failure, the wait's deadline is)
        error = vm.osc.command("record", 0, 0)
        assert error is None, vm.failure("/ouro/record 0 0 accepted", error)
        asked = time.monotonic()
        vm.wait_for("cell 0,0 recording after /ouro/record 0 0",
                    lambda: vm.osc.status()["cells"][0][0], lambda c: c["state"] == "recording",
                    60, every_s=0.2, since=asked, retry_on=(EngineUnreachable,))
        time.sleep(2.0)
        error = vm.osc.command("record", 0, 0)
        assert error is None, vm.failure("the second /ouro/record 0 0 accepted", error)
        cell = vm.wait_for("cell 0,0 holding a loop (a crc32) after the second /ouro/record",
                           lambda: vm.osc.status()["cells"][0][0],
                           lambda c: c["crc32"] is not None, 120, every_s=0.5, since=asked,
                           retry_on=(EngineUnreachable,))
        vm.wait_for(
            "the session saved: no session problem, and \"takes\" in session.json",
            lambda: (vm.osc.status()["session"], vm.run(
                "grep -c '\"takes\"' /data/ouroboros/session/session.json")),
            lambda seen: seen[0]["problem"] is None and seen[1][0] == 0, 180, every_s=0.5,
            since=asked, retry_on=(EngineUnreachable,))
        rc = vm.run("python3 -c \"import json; print(len(json.load(open("
                    "'/data/ouroboros/session/session.json'))['takes']))\"")
        assert rc == (0, "1\n"), vm.failure("one take in session.json", rc)
        # numba's kernel cache lives on /data too: damage one file the way a power cut can
        # (cut short, and on disk), and the engine must still come up after the cut
        rc = vm.run("f=$(find /data/ouroboros/cache/numba -name '*.nbi' | head -n 1); "
                    "test -n \"$f\" && truncate -s 3 \"$f\" && sync && echo \"$f\"")
        assert rc[0] == 0, vm.failure("a numba cache index to damage", rc)
        damaged = Path(rc[1].strip()).name
        check_not_restarted(vm)
    finally:
        vm.pull_the_plug()  # the power, cut: no shutdown, no sync
    again = Machine(board, tmp_path, "boot2")
    try:
        st = again.wait_engine(ENGINE_TIMEOUT_S[arch])
        now = st["cells"][0][0]
        assert now["crc32"] == cell["crc32"], again.failure(
            f"cell 0,0's crc32 {cell['crc32']} after the power cut", now)
        assert now["length_frames"] == cell["length_frames"], again.failure(
            f"cell 0,0's length {cell['length_frames']} after the power cut", now)
        assert st["session"]["restored"]["problems"] == [], again.failure(
            "the session restored without problems", st["session"])
        rc = again.run("findmnt -n -o OPTIONS /")
        assert rc[1].startswith("ro"), again.failure("/ mounted read-only", rc)
        rc = again.run("journalctl -b -u ouro-engine --no-pager | grep -c 'damaged "
                       f"compiled-kernel cache removed ({damaged}'")
        assert rc == (0, "1\n"), again.failure(
            f"the engine's log telling once that it removed the damaged {damaged}",
            (rc, again.run("journalctl -b -u ouro-engine --no-pager")[1]))
        check_not_restarted(again, ["jackd", "ouro-engine", "ouro-pedal"])
    finally:
        again.close()


def test_the_pi_image_boots_from_a_raspberry_pi_3s_sd_card_and_the_pedal_keeps_its_gpio(
        arm64: Path, tmp_path: Path) -> None:
    """The Pi's SD path and the Pi's own GPIO controller under the pedal process: QEMU's
    raspi3b (BCM2837, ``pinctrl-bcm2835``), no OLED wired. The engine is not waited for
    (its first start compiles its kernels for about five minutes on this board)."""
    image = arm64 / "ouroboros-arm64.img"
    disk = card(image, tmp_path, size_mb=2048)
    vm = Machine(raspi3b_board(PiBoot(image, tmp_path / "boot"), disk), tmp_path, "raspi3b")
    try:
        assert vm.serial is not None
        serial = vm.serial
        vm.wait_for("the root shell on the mini UART (ttyS1)", lambda: serial.run("true", 5),
                    lambda rc: rc[0] == 0, BOOT_TIMEOUT_S, every_s=5, retry_on=(NoAnswer,))
        rc = vm.run("findmnt -n -o SOURCE,OPTIONS /")
        assert re.match(r"/dev/mmcblk\dp2 ro,", rc[1]), vm.failure("/ from the SD card, ro", rc)
        rc = vm.run("test -e /run/initramfs/fsck-root && echo checked")
        assert rc == (0, "checked\n"), vm.failure("the root checked by the initramfs", rc)
        log = "journalctl -b -u ouro-pedal --no-pager -o cat | grep 'ouro pedal: '"
        rc = vm.wait_for("the pedal on the Pi's GPIO controller (pinctrl-bcm2835) and "
                         "running without a screen (no OLED wired)", lambda: vm.run(log),
                         lambda rc: "pinctrl-bcm2835" in rc[1]
                         and "running without a screen" in rc[1], BOOT_TIMEOUT_S, every_s=5)
        assert "headless" not in rc[1], vm.failure("no headless pedal on a Pi", rc)
        # a pedal that dies restarts a second later: give it the time to die, then count
        time.sleep(20)
        check_not_restarted(vm, ["ouro-pedal"])
        # lgpio's notification FIFOs went to the pedal's runtime directory
        rc = vm.run("find /run/ouro-pedal -type p -name '.lgd-nfy*' | wc -l")
        assert rc[0] == 0 and int(rc[1]) >= 1, vm.failure(
            "lgpio's FIFOs in /run/ouro-pedal", rc)
        # the network on usb0 (QEMU's usb-net; a phone's USB tethering looks the same)
        rc = vm.wait_for("an IPv4 address on usb0 (DHCP by systemd-networkd)",
                         lambda: vm.run("ip -4 -o addr show dev usb0"),
                         lambda rc: " inet " in rc[1], 120, every_s=2)
    finally:
        vm.close()


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
    # ... and fsck for the root file system (the hook leaves it out unless told the type)
    programs = {p.name for p in unpacked.rglob("*") if p.is_file()}
    assert {"fsck", "fsck.ext4", "logsave"} <= programs, sorted(programs)
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
