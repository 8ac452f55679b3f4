#!/usr/bin/env python3
"""image/build: the pedal's disk image, from Debian's packages and this repository.

    image/build --arch arm64|amd64 --out DIR [--ssh-key FILE] [--snapshot TIMESTAMP]

Root, no Docker, no loop devices. Stages (each prints what it does and how long it took):

1. wheels   our wheel, and every Python dependency as a wheel for the target's CPU
2. rootfs   Debian bookworm with mmdebstrap; on arm64 the packages' maintainer scripts run
            under proot + qemu-aarch64-static (this machine has no binfmt_misc)
3. system   image/rootfs/ copied over it, the ``ouro`` user, the venv, units enabled
4. boot     arm64: the Pi's boot files (raspi-firmware, kernel, DTBs, overlays from hw/,
            config.txt, cmdline.txt); amd64: the kernel and initrd beside the image
5. disk     boot (FAT), root (ext4, read-only at run time) and data (ext4) file systems
            made from directories (mkfs.fat + mcopy, mke2fs -d) and laid into one
            partitioned file (sfdisk, dd)

Every version that went in is recorded in /usr/share/ouroboros/manifest.json inside the
image and in DIR/manifest.json; ``--pins DIR/manifest.json`` with ``--snapshot`` rebuilds
the same package set.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OVERLAY = REPO / "image" / "rootfs"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SNAPSHOT = "http://snapshot.debian.org/archive/debian/{}"
PYTHON = "3.11"  # bookworm's python3
MiB = 1 << 20

COMMON_PACKAGES = [
    "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "systemd-resolved", "avahi-daemon",
    "libnss-mdns", "jackd2", "libjack-jackd2-0", "alsa-utils", "libsndfile1", "python3",
    "openssh-server", "cloud-guest-utils", "e2fsprogs", "fdisk", "util-linux", "procps",
    "initramfs-tools", "less",
]
ARCH_PACKAGES = {
    "amd64": ["linux-image-amd64"],
    "arm64": ["linux-image-arm64", "raspi-firmware", "python3-spidev", "i2c-tools"],
}
# What pip may take for each target: manylinux wheels up to bookworm's glibc 2.36.
PLATFORMS = {
    "amd64": [f"manylinux_2_{n}_x86_64" for n in range(36, 16, -1)] + ["manylinux2014_x86_64"],
    "arm64": [f"manylinux_2_{n}_aarch64" for n in range(36, 16, -1)] + ["manylinux2014_aarch64"],
}
EXTRAS = {"amd64": "pedal", "arm64": "pedal,pi"}
# pip evaluates environment markers on the build machine: name the Pi's packages outright
ARCH_PYTHON = {"amd64": [], "arm64": ["lgpio>=0.2.2", "rpi-lgpio>=0.5"]}
UNITS = ["jackd.service", "ouro-engine.service", "ouro-pedal.service",
         "ouro-grow-data.service", "ouro-cpu-performance.service", "systemd-networkd.service",
         "systemd-resolved.service", "avahi-daemon.service"]
VENV = Path("/opt/ouroboros/venv")
DATA_MB = 64  # the data partition as built; grown to the card at first boot
BOOT_MB = 256
QEMU = {"arm64": "qemu-aarch64-static", "amd64": "qemu-x86_64-static"}
PI_DEVICE_TREES = ("bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4-io.dtb",
                   "bcm2712-rpi-5-b.dtb")
# the labels our overlays (hw/overlays/) refer to, at their place in mainline's bcm2711 tree
PI_SYMBOLS = {"gpio": "/soc/gpio@7e200000", "i2s": "/soc/i2s@7e203000",
              "i2c1": "/soc/i2c@7e804000", "spi0": "/soc/spi@7e204000"}
# where the drivers on the way to the Pi's root file system live (kernel/drivers/<this>)
BOOT_SUBSYSTEMS = ("mmc", "regulator", "clk", "gpio", "pinctrl", "reset", "firmware", "dma",
                   "pci", "usb", "mailbox", "soc", "phy", "power", "nvmem", "irqchip", "bus")
ROOT_MODULES = ("ext4", "usb_storage", "uas", "sd_mod", "xhci_pci")
MERGED_USR_SETUP = "/usr/share/mmdebstrap/hooks/merged-usr/setup00.sh"
MERGED_USR_ESSENTIAL = "/usr/share/mmdebstrap/hooks/merged-usr/essential00.sh"
NAMESPACE = uuid.UUID("6f75726f-626f-726f-7300-000000000000")  # for repeatable fs UUIDs


class BuildError(Exception):
    """A stage failed; the message says which and why."""


def say(msg: str) -> None:
    print(f"image/build: {msg}", flush=True)


def run(cmd: Sequence[str | Path], *, env: dict[str, str] | None = None,
        stdin: str | None = None, capture: bool = False) -> str:
    shown = " ".join(str(c) for c in cmd)
    try:
        out = subprocess.run([str(c) for c in cmd], check=True, text=True, input=stdin,
                             env={**os.environ, **(env or {})},
                             stdout=subprocess.PIPE if capture else None)
    except FileNotFoundError as exc:
        raise BuildError(f"{cmd[0]} is not installed ({shown})") from exc
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"failed with exit code {exc.returncode}: {shown}") from exc
    return out.stdout or ""


class Build:
    def __init__(self, args: argparse.Namespace):
        self.arch: str = args.arch
        self.out = Path(args.out).resolve()
        self.ssh_key: Path | None = Path(args.ssh_key) if args.ssh_key else None
        self.snapshot: str | None = args.snapshot
        self.pins: Path | None = Path(args.pins) if args.pins else None
        self.cache: Path | None = Path(args.cache).resolve() if args.cache else None
        self.work = Path(tempfile.mkdtemp(prefix=f"ouro-image-{self.arch}-",
                                          dir=args.work or None))
        self.root = self.work / "root"
        self.wheels = self.work / "wheels"
        self.epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or self._git_epoch())
        self.manifest: dict[str, object] = {}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers

    def _git_epoch(self) -> int:
        try:
            return int(run(["git", "-C", REPO, "log", "-1", "--format=%ct"], capture=True))
        except (BuildError, ValueError):
            return 0

    def _commit(self) -> str:
        try:
            rev = run(["git", "-C", REPO, "rev-parse", "HEAD"], capture=True).strip()
            dirty = run(["git", "-C", REPO, "status", "--porcelain"], capture=True).strip()
        except BuildError:
            return "unknown"
        return rev + ("+dirty" if dirty else "")

    def fs_uuid(self, name: str) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{self.arch}/{name}/{self.epoch}"))

    def check(self) -> None:
        if os.geteuid() != 0:
            raise BuildError("run as root (mmdebstrap's root mode, file ownership in the image)")
        tools = ["mmdebstrap", "mke2fs", "mkfs.fat", "mcopy", "sfdisk", "dd", "useradd",
                 "systemctl", "eatmydata"]
        if self.arch != host_arch():
            # image/foreign_chroot.py, and systemd-tmpfiles for image/foreign-apt's replays
            tools += ["proot", QEMU[self.arch], "systemd-tmpfiles"]
        if self.arch == "arm64":
            tools.append("dtc")
        missing = [t for t in tools if shutil.which(t) is None]
        if missing:
            raise BuildError(f"missing tools: {', '.join(missing)} (apt-get install mmdebstrap "
                             f"e2fsprogs dosfstools mtools fdisk passwd eatmydata systemd "
                             f"proot qemu-user-static device-tree-compiler)")
        if self.ssh_key is not None and not self.ssh_key.is_file():
            raise BuildError(f"--ssh-key {self.ssh_key}: no such file")

    # ------------------------------------------------------------------ stages

    def stage_wheels(self) -> None:
        py = sys.executable
        run([py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", self.wheels, REPO])
        (ours,) = self.wheels.glob("ouroboros_looper-*.whl")
        site = self.site_packages
        cmd: list[str | Path] = [py, "-m", "pip", "install", "-q", "--no-compile", "--target", site,
               "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
               "--abi", "cp" + PYTHON.replace(".", "")]
        for p in PLATFORMS[self.arch]:
            cmd += ["--platform", p]
        if self.pins is not None:
            pins = json.loads(self.pins.read_text())["python"]
            constraints = self.work / "constraints.txt"
            constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()
                                           if n != "ouroboros-looper"))
            cmd += ["--constraint", constraints]
        run([*cmd, f"{ours}[{EXTRAS[self.arch]}]", *ARCH_PYTHON[self.arch]])

    @property
    def site_packages(self) -> Path:
        return self.root / VENV.relative_to("/") / "lib" / f"python{PYTHON}" / "site-packages"

    def stage_rootfs(self) -> None:
        packages = COMMON_PACKAGES + ARCH_PACKAGES[self.arch]
        mirror = SNAPSHOT.format(self.snapshot) if self.snapshot else MIRROR
        foreign = self.arch != host_arch()
        cmd: list[str | Path] = [
            "mmdebstrap", "--mode=root", f"--arch={self.arch}",
            "--components=main,non-free-firmware", "--aptopt=Acquire::Retries \"3\"",
            "--skip=essential/unlink",
            # /bin -> usr/bin made by mmdebstrap, not by usrmerge's script (which needs ldd,
            # and ldd does not work on the target's binaries under qemu-user)
            f"--setup-hook={MERGED_USR_SETUP}",
        ]
        env = {"SOURCE_DATE_EPOCH": str(self.epoch)}
        if self.snapshot:
            cmd.append("--aptopt=Acquire::Check-Valid-Until \"false\"")
        if self.cache is not None:
            self.cache.mkdir(parents=True, exist_ok=True)
            cmd += ["--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
                    f"--setup-hook=sync-in {self.cache} /var/cache/apt/archives"]
        arch_overlay = REPO / "image" / f"rootfs-{self.arch}"
        if arch_overlay.is_dir():  # before the packages: their scripts read these settings
            cmd.append(f"--setup-hook=sync-in {arch_overlay} /")
        if not foreign:
            cmd += ["--variant=minbase", f"--include={','.join(packages)}",
                    f"--essential-hook={MERGED_USR_ESSENTIAL}"]
        else:
            # No binfmt_misc here: the kernel cannot run the target's binaries, and apt's own
            # chroot(2) (DPkg::Chroot-Directory, how mmdebstrap installs --include) fails.
            # mmdebstrap calls `chroot` from PATH for everything else: that `chroot` is
            # image/foreign_chroot.py (proot + qemu-user). mmdebstrap installs the essential
            # set and apt; image/foreign-apt installs the rest with the target's own apt.
            env.update(self.chroot_env())
            inner = " ".join([f"'{REPO / 'image' / 'foreign-apt'}'", '"$1"', "usr-is-merged",
                              "'?and(?priority(required),?architecture(native))'", *packages])
            cmd += ["--variant=apt", "--skip=check/qemu", f"--customize-hook={inner}"]
        if self.cache is not None:
            cmd.append(f"--customize-hook=sync-out /var/cache/apt/archives {self.cache}")
        cmd += ["--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb",
                # eatmydata: no fsync while unpacking (a throwaway tree until it is an image)
                "--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata"]
        # the venv was made before: keep it out of mmdebstrap's way, then back
        venv_parts = self.work / "venv-stage"
        shutil.move(self.root, venv_parts)
        run([*cmd, SUITE, self.root, mirror], env=env)
        shutil.copytree(venv_parts, self.root, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(venv_parts)
        if self.arch == "arm64":
            self.pi_initramfs()

    def chroot_env(self) -> dict[str, str]:
        """The environment in which `chroot` (for mmdebstrap, systemctl's SysV helper and
        our own calls) enters the target: on a foreign architecture, image/foreign_chroot.py
        under that name, first on PATH."""
        if self.arch == host_arch():
            return {}
        wrap = self.work / "foreign-bin"
        if not wrap.is_dir():
            wrap.mkdir()
            (wrap / "chroot").symlink_to(REPO / "image" / "foreign_chroot.py")
        return {"PATH": f"{wrap}:{os.environ['PATH']}", "OURO_QEMU": QEMU[self.arch]}

    def pi_initramfs(self) -> None:
        """The Pi's initramfs again, now with the modules its device trees call for."""
        (version,) = [p.name for p in (self.root / "usr/lib/modules").iterdir()]
        dtbs = self.root / "usr/lib" / f"linux-image-{version}" / "broadcom"
        trees = [dtbs / name for name in PI_DEVICE_TREES if (dtbs / name).is_file()]
        if not trees:
            raise BuildError(f"no Raspberry Pi device tree in {dtbs}")
        modules = initramfs_modules(self.root / "usr/lib/modules" / version,
                                    [t.read_bytes() for t in trees])
        (self.root / "etc/initramfs-tools/modules").write_text(
            "# written by image/build: what the Pi's device trees need to reach the root file\n"
            f"# system ({', '.join(t.name for t in trees)}), and ext4 and USB storage\n"
            + "".join(f"{m}\n" for m in modules))
        self.manifest["initramfs_modules"] = modules
        env = self.chroot_env()
        chroot = shutil.which("chroot", path=env.get("PATH")) or "chroot"
        run([chroot, self.root, "update-initramfs", "-u", "-k", version], env=env)

    def stage_system(self) -> None:
        root = self.root
        shutil.copytree(OVERLAY, root, symlinks=True, dirs_exist_ok=True)
        for d in ("data", "boot/firmware"):
            (root / d).mkdir(parents=True, exist_ok=True)
        lib = root / "var/lib/ouroboros"
        if lib.is_symlink() or lib.exists():
            lib.unlink()
        lib.symlink_to("/data/ouroboros")
        run(["useradd", "--prefix", root, "--system", "--user-group", "--groups", "audio",
             "--home-dir", "/data/ouroboros", "--no-create-home", "--shell",
             "/usr/sbin/nologin", "ouro"])
        self.make_venv()
        # systemctl hands units with a SysV script to update-rc.d, inside the target
        env = self.chroot_env()
        run(["systemctl", f"--root={root}", "enable", *UNITS], env=env)
        run(["systemctl", f"--root={root}", "disable", "ssh.service"], env=env)
        if self.ssh_key is not None:
            ssh = root / "root/.ssh"
            ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copy(self.ssh_key, ssh / "authorized_keys")
            (ssh / "authorized_keys").chmod(0o600)
            run(["systemctl", f"--root={root}", "enable", "ssh.service",
                 "ouro-ssh-keys.service"], env=env)
        (root / "etc/machine-id").write_text("")  # each pedal gets its own at boot

    def make_venv(self) -> None:
        venv = self.root / VENV.relative_to("/")
        site = self.site_packages
        # pip --target put the scripts (with this machine's interpreter) and the data files
        # under site-packages: the data files go where an installed copy looks for them
        shutil.rmtree(site / "bin", ignore_errors=True)
        share = site / "share"
        if share.is_dir():
            shutil.copytree(share, venv / "share", dirs_exist_ok=True)
            shutil.rmtree(share)
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        for name, target in (("python3", "/usr/bin/python3"), ("python", "python3"),
                             (f"python{PYTHON}", "python3")):
            link = venv / "bin" / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
        (venv / "pyvenv.cfg").write_text(
            f"home = /usr/bin\ninclude-system-site-packages = true\nversion = {PYTHON}\n")
        ouro = venv / "bin" / "ouro"
        ouro.write_text(f"#!{VENV}/bin/python3\nimport sys\n\nfrom rtcore.cli import main\n\n"
                        "sys.exit(main())\n")
        ouro.chmod(0o755)
        # byte-compiled now: the venv is read-only on the pedal
        run([sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
             "unchecked-hash", "-s", str(self.root), "-p", "/", site])

    def stage_boot(self) -> None:
        boot = self.work / "boot"
        boot.mkdir()
        kernels = sorted((self.root / "boot").glob("vmlinuz-*"))
        initrds = sorted((self.root / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise BuildError("no kernel or initrd in the root file system's /boot")
        kernel, initrd = kernels[-1], initrds[-1]
        if self.arch == "amd64":
            for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.img")):
                shutil.copy(src, self.out / name)
                shutil.copy(src, boot / name)
            for d in (boot, self.out):
                (d / "cmdline.txt").write_text(self.cmdline("ttyS0") + "\n")
            return
        firmware = self.root / "usr/lib/raspi-firmware"
        for f in firmware.iterdir():
            if f.is_file():
                shutil.copy(f, boot / f.name)
        version = kernel.name.removeprefix("vmlinuz-")
        dtbs = self.root / "usr/lib" / f"linux-image-{version}" / "broadcom"
        found = []
        for dtb in PI_DEVICE_TREES:
            if (dtbs / dtb).is_file():
                with_symbols(dtbs / dtb, boot / dtb, self.work / "dts")
                found.append(dtb)
        if "bcm2711-rpi-4-b.dtb" not in found:
            raise BuildError(f"no Raspberry Pi 4 device tree in {dtbs}")
        self.manifest["device_trees"] = found
        shutil.copy(kernel, boot / "vmlinuz")
        shutil.copy(initrd, boot / "initrd.img")
        overlays = boot / "overlays"
        overlays.mkdir()
        for dts in sorted((REPO / "hw" / "overlays").glob("*.dts")):
            run(["dtc", "-q", "-@", "-I", "dts", "-O", "dtb", "-o",
                 overlays / (dts.stem + ".dtbo"), dts])
        (boot / "config.txt").write_text((REPO / "image" / "config.txt").read_text())
        # Debian's kernel names the Pi 4's mini UART (GPIO 14/15 with Bluetooth on) ttyS1
        (boot / "cmdline.txt").write_text(self.cmdline("ttyS1,115200") + "\n")

    def cmdline(self, console: str) -> str:
        return (f"console=tty0 console={console} root=LABEL=ouro-root ro rootwait "
                "fsck.repair=yes net.ifnames=0")

    def stage_disk(self) -> None:
        parts = self.work / "parts"
        parts.mkdir()
        env = {"E2FSPROGS_FAKE_TIME": str(self.epoch)}
        self.write_manifest()
        # boot: FAT32
        boot_img = parts / "boot.vfat"
        run(["mkfs.fat", "-F", "32", "-n", "OURO-BOOT", "-i",
             self.fs_uuid("boot").replace("-", "")[:8], "-C", boot_img,
             str(BOOT_MB * 1024)], capture=True)
        files = sorted((self.work / "boot").iterdir())
        run(["mcopy", "-s", "-m", "-i", boot_img, *files, "::"])
        # root: ext4 from the directory, sized to what it holds plus room for fs metadata
        used = int(run(["du", "-s", "-B1", "--apparent-size", self.root],
                       capture=True).split()[0])
        root_mb = int(used * 1.25 / MiB) + 128
        root_img = parts / "root.ext4"
        run(["mke2fs", "-q", "-t", "ext4", "-L", "ouro-root", "-U", self.fs_uuid("root"),
             "-E", f"hash_seed={self.fs_uuid('root-hash')}", "-m", "0", "-d", self.root,
             root_img, f"{root_mb}M"], env=env)
        # data: the engine's directory owned by ouro, grown at first boot
        data = self.work / "data"
        for d in ("ouroboros",):
            (data / d).mkdir(parents=True)
        uid, gid = self.ouro_ids()
        for p in (data / "ouroboros",):
            os.chown(p, uid, gid)
        data_img = parts / "data.ext4"
        run(["mke2fs", "-q", "-t", "ext4", "-L", "ouro-data", "-U", self.fs_uuid("data"),
             "-E", f"hash_seed={self.fs_uuid('data-hash')}", "-d", data, data_img,
             f"{DATA_MB}M"], env=env)
        # one MBR disk: 1 MiB aligned partitions, the data partition last so it can grow
        sizes = [BOOT_MB, root_mb, DATA_MB]
        disk = self.out / f"ouroboros-{self.arch}.img"
        disk.unlink(missing_ok=True)
        starts = [1]
        for s in sizes[:-1]:
            starts.append(starts[-1] + s)
        total = starts[-1] + sizes[-1]
        with open(disk, "wb") as f:
            f.truncate(total * MiB)
        script = ["label: dos", f"label-id: 0x{self.fs_uuid('disk')[:8]}", "unit: sectors"]
        types = ["c", "83", "83"]
        for i, (start, size, t) in enumerate(zip(starts, sizes, types, strict=True)):
            boot_flag = ", bootable" if i == 0 else ""
            script.append(f"start={start * 2048}, size={size * 2048}, type={t}{boot_flag}")
        run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk],
            stdin="\n".join(script) + "\n")
        for img, start in zip((boot_img, root_img, data_img), starts, strict=True):
            run(["dd", f"if={img}", f"of={disk}", "bs=1M", f"seek={start}",
                 "conv=notrunc,sparse", "status=none"])
        self.manifest["disk"] = {"file": disk.name, "mib": total,
                                 "partitions": dict(zip(("boot", "root", "data"), sizes,
                                                        strict=True))}
        (self.out / "manifest.json").write_text(json.dumps(self.manifest, indent=1) + "\n")

    def ouro_ids(self) -> tuple[int, int]:
        for line in (self.root / "etc/passwd").read_text().splitlines():
            f = line.split(":")
            if f[0] == "ouro":
                return int(f[2]), int(f[3])
        raise BuildError("no user ouro in the image")

    def write_manifest(self) -> None:
        debs = run(["dpkg-query", f"--admindir={self.root}/var/lib/dpkg", "-W",
                    "-f", "${Package} ${Version} ${Architecture}\\n"], capture=True)
        python = {}
        for info in sorted(self.site_packages.glob("*.dist-info")):
            meta = (info / "METADATA").read_text(errors="replace").splitlines()
            fields = dict(line.split(": ", 1) for line in meta[:10] if ": " in line)
            python[fields.get("Name", info.name).lower().replace("_", "-")] = \
                fields.get("Version", "?")
        self.manifest.update({
            "arch": self.arch, "suite": SUITE,
            "mirror": SNAPSHOT.format(self.snapshot) if self.snapshot else MIRROR,
            "snapshot": self.snapshot, "source_date_epoch": self.epoch,
            "commit": self._commit(),
            "debian": {p: v for p, v, _a in (line.split() for line in debs.splitlines())},
            "python": python,
        })
        target = self.root / "usr/share/ouroboros"
        target.mkdir(parents=True, exist_ok=True)
        (target / "manifest.json").write_text(json.dumps(self.manifest, indent=1) + "\n")

    # ------------------------------------------------------------------ driver

    def run(self) -> None:
        self.check()
        self.out.mkdir(parents=True, exist_ok=True)
        stages = [("wheels", self.stage_wheels), ("rootfs", self.stage_rootfs),
                  ("system", self.stage_system), ("boot", self.stage_boot),
                  ("disk", self.stage_disk)]
        t_all = time.monotonic()
        try:
            for n, (name, fn) in enumerate(stages, 1):
                say(f"[{n}/{len(stages)}] {name} ({self.arch}) ...")
                t0 = time.monotonic()
                try:
                    fn()
                except BuildError as exc:
                    raise BuildError(f"stage {name}: {exc}") from exc
                self.timings[name] = time.monotonic() - t0
                say(f"[{n}/{len(stages)}] {name} done in {self.timings[name]:.0f} s")
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        say(f"{self.out / f'ouroboros-{self.arch}.img'} in {time.monotonic() - t_all:.0f} s")


def with_symbols(src: Path, dst: Path, scratch: Path) -> None:
    """A copy of Debian's device tree that overlays can be applied to: Debian builds its
    device trees without __symbols__, and the Pi firmware resolves an overlay's references
    (``target = <&i2s>``) through them. The tree is decompiled, the nodes of PI_SYMBOLS get
    their mainline labels, and dtc -@ compiles it again (which also gives those nodes a
    phandle). Nothing else changes."""
    scratch.mkdir(exist_ok=True)
    dts = run(["dtc", "-q", "-I", "dtb", "-O", "dts", src], capture=True)
    by_path = {path: label for label, path in PI_SYMBOLS.items()}
    out: list[str] = []
    path: list[str] = []  # the open nodes, the root ("/") first
    seen = set()
    for line in dts.splitlines():
        stripped = line.strip()
        if stripped.endswith("{"):
            name = stripped[:-1].strip().split(": ")[-1]
            path.append(name)
            full = "/" + "/".join(path[1:])
            if full in by_path:
                indent = line[:len(line) - len(line.lstrip())]
                line = f"{indent}{by_path[full]}: {name} {{"
                seen.add(full)
        elif stripped == "};":
            path.pop()
        out.append(line)
    missing = sorted(set(by_path) - seen)
    if missing:
        raise BuildError(f"{src.name}: no node at {', '.join(missing)}")
    source = scratch / (src.stem + ".dts")
    source.write_text("\n".join(out) + "\n")
    run(["dtc", "-q", "-@", "-I", "dts", "-O", "dtb", "-o", dst, source])


def fdt_nodes(blob: bytes) -> list[tuple[str, list[str]]]:
    """Every node of a flattened device tree: its name (without the unit address) and its
    compatible strings, read straight from the DTB's structure block."""
    magic, _size, off_struct, off_strings = struct.unpack_from(">4I", blob)
    if magic != 0xD00DFEED:
        raise BuildError("not a device tree blob (bad magic)")
    nodes: list[tuple[str, list[str]]] = []
    stack: list[int] = []
    pos = off_struct
    while True:
        (token,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        if token == 1:  # FDT_BEGIN_NODE: a NUL-terminated name, padded to 4 bytes
            end = blob.index(b"\0", pos)
            nodes.append((blob[pos:end].decode().split("@")[0], []))
            stack.append(len(nodes) - 1)
            pos = (end + 4) & ~3
        elif token == 2:  # FDT_END_NODE
            stack.pop()
        elif token == 3:  # FDT_PROP: length, name offset, value padded to 4 bytes
            length, nameoff = struct.unpack_from(">2I", blob, pos)
            pos += 8
            name_end = blob.index(b"\0", off_strings + nameoff)
            if blob[off_strings + nameoff:name_end] == b"compatible" and stack:
                value = blob[pos:pos + length].rstrip(b"\0")
                nodes[stack[-1]][1].extend(v.decode() for v in value.split(b"\0") if v)
            pos = (pos + length + 3) & ~3
        elif token == 4:  # FDT_NOP
            continue
        elif token == 9:  # FDT_END
            return nodes
        else:
            raise BuildError(f"device tree blob: unknown token {token} at {pos - 4}")


def initramfs_modules(moddir: Path, trees: list[bytes]) -> list[str]:
    """The modules the kernel would load for these device trees' nodes (matched the way udev
    matches a node's modalias against modules.alias) that drive something on the way to the
    root file system, plus ext4 and USB storage."""
    aliases = []
    for line in (moddir / "modules.alias").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias" and parts[1].startswith("of:"):
            aliases.append((parts[1], parts[2]))
    wanted = set()
    for blob in trees:
        for name, compatible in fdt_nodes(blob):
            if not compatible:
                continue
            modalias = f"of:N{name}T<NULL>" + "".join(f"C{c}" for c in compatible)
            wanted |= {module for pattern, module in aliases
                       if fnmatch.fnmatchcase(modalias, pattern)}
    # a module's subsystem, from where it lives: kernel/drivers/<subsystem>/...
    where = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path = line.split(":", 1)[0]
        stem = Path(path).name.split(".ko")[0].replace("-", "_")
        where[stem] = Path(path).parts
    chosen = {m for m in wanted
              if len(where.get(m, ())) > 2 and where[m][1] == "drivers"
              and where[m][2] in BOOT_SUBSYSTEMS}
    return sorted(chosen | set(ROOT_MODULES))


def host_arch() -> str:
    return run(["dpkg", "--print-architecture"], capture=True).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="image/build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, choices=("arm64", "amd64"))
    ap.add_argument("--out", required=True, help="where the image (and kernel) go")
    ap.add_argument("--ssh-key", help="a public key: SSH on, root login with this key only")
    ap.add_argument("--snapshot", help="build from snapshot.debian.org at this time "
                                       "(e.g. 20261101T000000Z) for the same package set")
    ap.add_argument("--pins", help="a manifest.json of an earlier build: the same Python "
                                   "package versions")
    ap.add_argument("--cache", help="a directory keeping downloaded .deb files between builds")
    ap.add_argument("--work", help="where the temporary tree goes (default: $TMPDIR)")
    args = ap.parse_args(argv)
    try:
        Build(args).run()
    except BuildError as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
