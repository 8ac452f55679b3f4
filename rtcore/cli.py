"""The ``ouro`` command: ``start``, ``engine``, ``pedal``, ``offline``, ``demo``, ``bench
engine``, ``bench live``, ``bench midi``, ``bench writer``, ``bench consolidate``, ``bench
pedal``; and the companion's ``render`` and ``project`` (their own parsers, in
``companion/engine/cli.py`` and ``companion/model/cli.py``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rtcore.live import DEFAULT_OSC_PORT

# The companion's commands parse their own arguments; the pedal's commands never import them.
COMPANION_COMMANDS = {
    "render": ("companion.engine.cli", "render an arrangement to a WAV file (spec/companion.md)"),
    "project": ("companion.model.cli", "companion projects: new, import, export, info, "
                "bounce, unfreeze"),
    "play": ("companion.engine.playserver", "play a companion project through JACK, driven "
             "over a local socket (docs/player.md)"),
}
COMPANION_BENCHES = {
    "render": ("companion.engine.bench", "the arrangement engine: mixing vs ecasound and sox, "
               "effects, playback load, drift"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMPANION_COMMANDS:
        import importlib

        module = importlib.import_module(COMPANION_COMMANDS[argv[0]][0])
        return int(module.main(argv[1:]))
    if len(argv) > 1 and argv[0] == "bench" and argv[1] in COMPANION_BENCHES:
        import importlib

        module = importlib.import_module(COMPANION_BENCHES[argv[1]][0])
        return int(module.main(argv[2:]))
    parser = argparse.ArgumentParser(prog="ouro", description="Ouroboros looper")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_module, what) in COMPANION_COMMANDS.items():
        sub.add_parser(name, help=what, add_help=False)

    p = sub.add_parser("engine", help="run the looper live on a JACK server")
    p.add_argument("--server", help="JACK server name (default: the default server)")
    p.add_argument("--name", help="JACK client name (default: ouroboros)")
    p.add_argument("--osc-port", type=int, help=f"OSC UDP port (default: {DEFAULT_OSC_PORT}; "
                   "0 picks a free one)")
    p.add_argument("--osc-host", help="address the OSC server listens on (default: 127.0.0.1; "
                   "0.0.0.0 for controllers on the network)")
    p.add_argument("--config", type=Path, help="TOML config file (see docs/engine.md)")
    p.add_argument("--no-connect", action="store_true",
                   help="do not connect to the sound card's ports")
    p.add_argument("--data-dir", type=Path, help="where the engine keeps its files "
                   "(default: ~/.local/share/ouroboros; /var/lib/ouroboros on the pedal)")

    p = sub.add_parser("start", help="the pedal's main job: JACK, the engine and a short tour")
    p.add_argument("--server", help="JACK server to use, or to start if none answers "
                   "(default: the default server)")
    p.add_argument("--no-tour", action="store_true",
                   help="skip the scripted tour that builds a first loop")
    p.add_argument("--no-pedal", action="store_true",
                   help="run no emulated pedal (by default it is drawn in this terminal, "
                   "keys for footswitches; headless when there is no terminal)")
    p.add_argument("--seconds", type=float, help="stop this many seconds after the engine is "
                   "up (the tour plays to its end first; default: run until Ctrl-C)")
    p.add_argument("--data-dir", type=Path, help="where the engine keeps its files "
                   "(default: ~/.local/share/ouroboros)")
    p.add_argument("--osc-port", type=int, help=f"the engine's OSC UDP port (default: "
                   f"{DEFAULT_OSC_PORT}; 0 picks a free one)")

    p = sub.add_parser("pedal", help="the footswitches and the OLED (its own process), "
                       "talking to the engine over OSC")
    p.add_argument("--engine", help="the engine's OSC host:port (default: from the data "
                   f"directory's engine.json, else 127.0.0.1:{DEFAULT_OSC_PORT})")
    p.add_argument("--data-dir", type=Path, help="the engine's data directory (default: "
                   "~/.local/share/ouroboros)")
    p.add_argument("--pinmap", help="a pin map file, or a built-in board: rpi4, rpi5, "
                   "rpi4-spi (default: rpi4)")
    p.add_argument("--keymap", help="a gesture map file (default: the shipped one)")
    p.add_argument("--emulate", nargs="?", const="terminal",
                   choices=("terminal", "window", "headless"),
                   help="no GPIO or OLED: mock pins driven by the keyboard, the screen in "
                   "the terminal (default), a window, or nowhere (headless)")
    p.add_argument("--headless-without-gpio", action="store_true",
                   help="where there is no Raspberry Pi GPIO pin controller (another board, "
                   "a VM), run as --emulate headless instead of stopping (the image's "
                   "service, the same on every machine)")
    p.add_argument("--fps", type=float, default=30.0, help="frames a second (default 30)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")

    p = sub.add_parser("offline", help="run a performance script without JACK")
    p.add_argument("script", type=Path)
    p.add_argument("--input", type=Path, required=True, help="input WAV (engine frame 0 on)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when the engine refused any command of the script")

    p = sub.add_parser("demo", help="play the seed scenario offline and write its WAVs")
    p.add_argument("--out", type=Path, default=Path("demo-out"))

    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("engine", help="time Engine.process() under full load")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--seconds", type=float, default=20.0, help="audio seconds per block size")
    b.add_argument("--block-sizes", default="64,128,256")

    b = bsub.add_parser("live", help="the engine on a private jackd -d dummy under full load")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--seconds", type=float, default=30.0, help="measured seconds per block size")
    b.add_argument("--block-sizes", default="64,128,256")
    b.add_argument("--baseline-seconds", type=float, default=10.0,
                   help="seconds of counting the idle server's xruns first")

    b = bsub.add_parser("midi", help="MIDI clock: master tick placement, follower accuracy")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--seconds", type=float, default=600.0,
                   help="length of the master and drift runs (default 10 minutes)")
    b.add_argument("--block-size", type=int, default=64)
    b.add_argument("--seed", type=int, default=1, help="seed of the clock's jitter")

    b = bsub.add_parser("writer", help="the session recorder's writer: real-time factor")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--channels", type=int, default=2)
    b.add_argument("--rate", type=int, default=48000)
    b.add_argument("--bits", type=int, choices=(16, 24, 32), default=24)
    b.add_argument("--seconds", type=float, help="audio seconds to write (default: about "
                   "512 MB of PCM, 5 s to 1 h)")
    b.add_argument("--mode", choices=("single", "split"), default="single")
    b.add_argument("--dir", type=Path, help="where to make the temporary directory "
                   "(default: the system's temporary directory)")

    b = bsub.add_parser("pedal", help="footswitch edge to engine ack; OLED frame time")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--presses", type=int, default=500)
    b.add_argument("--period", type=int, default=64, help="JACK period in frames (default 64)")
    b.add_argument("--frames", type=int, default=1000, help="OLED frames to time")

    for name, (_module, what) in COMPANION_BENCHES.items():
        bsub.add_parser(name, help=what, add_help=False)
    b = bsub.add_parser("consolidate", help="consolidating and saving a finished loop")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--seconds", type=float, default=60.0, help="the loop's length")
    b.add_argument("--channels", type=int, default=2)
    b.add_argument("--repeat", type=int, default=9)

    args = parser.parse_args(argv)
    if args.command == "start":
        return _start(args)
    if args.command == "engine":
        return _engine(args)
    if args.command == "pedal":
        return _pedal(parser, args)
    if args.command == "bench" and args.bench == "pedal":
        if not 10 <= args.presses <= 100000 or not 10 <= args.frames <= 100000:
            parser.error("--presses and --frames must be 10..100000")
        if args.period not in (16, 32, 64, 128, 256, 512, 1024):
            parser.error(f"--period must be a power of two from 16 to 1024, got {args.period}")
        from firmware.bench import bench_pedal, format_pedal_report

        pedal_report = bench_pedal(args.presses, args.period, args.frames)
        print(json.dumps(pedal_report) if args.json else format_pedal_report(pedal_report))
        return 0
    if args.command == "offline":
        from rtcore import offline

        return offline.run(args.script, args.input, args.out, strict=args.strict)
    if args.command == "demo":
        from rtcore.demo import run_demo

        return run_demo(args.out)
    if args.command == "bench" and args.bench == "midi":
        if not (math.isfinite(args.seconds) and 60 <= args.seconds <= 7200):
            parser.error(f"--seconds must be 60..7200, got {args.seconds}")
        if not 16 <= args.block_size <= 8192:
            parser.error(f"--block-size must be between 16 and 8192, got {args.block_size}")
        from rtcore.bench_midi import bench_midi, format_midi_report

        midi_report = bench_midi(args.seconds, args.block_size, args.seed)
        print(json.dumps(midi_report) if args.json else format_midi_report(midi_report))
        return 0
    if args.command == "bench" and args.bench == "consolidate":
        if not (math.isfinite(args.seconds) and 0 < args.seconds <= 3600):
            parser.error(f"--seconds must be a positive number up to 3600, got {args.seconds}")
        if not 1 <= args.channels <= 8 or not 1 <= args.repeat <= 1000:
            parser.error("--channels must be 1..8 and --repeat 1..1000")
        from rtcore.bench_consolidate import bench_consolidate, format_consolidate_report

        report = bench_consolidate(args.seconds, args.channels, repeat=args.repeat)
        print(json.dumps(report) if args.json else format_consolidate_report(report))
        return 0
    if args.command == "bench" and args.bench == "writer":
        if not 1 <= args.channels <= 256:
            parser.error(f"--channels must be 1..256, got {args.channels}")
        if not 1000 <= args.rate <= 768000:
            parser.error(f"--rate must be 1000..768000, got {args.rate}")
        if args.seconds is not None and not (math.isfinite(args.seconds)
                                             and 0 < args.seconds <= 3600):
            parser.error(f"--seconds must be a positive number up to 3600, got {args.seconds}")
        if args.dir is not None and not args.dir.is_dir():
            parser.error(f"--dir must be an existing directory, got {args.dir}")
        from rtcore.bench_writer import bench_writer, format_writer_report

        writer_report = bench_writer(args.channels, args.rate, args.bits, args.seconds,
                                     args.mode, args.dir)
        print(json.dumps(writer_report) if args.json else format_writer_report(writer_report))
        return 0
    if args.command == "bench":
        try:
            sizes = tuple(int(s) for s in args.block_sizes.split(","))
        except ValueError:
            parser.error(f"--block-sizes must be integers separated by commas, "
                         f"got {args.block_sizes!r}")
        bad = [s for s in sizes if not 16 <= s <= 8192]
        if bad:
            parser.error(f"--block-sizes must each be between 16 and 8192, got {bad[0]}")
        if not (math.isfinite(args.seconds) and 0 < args.seconds <= 3600):
            parser.error(f"--seconds must be a positive number up to 3600, got {args.seconds}")
        if args.bench == "engine":
            from rtcore.bench import bench_engine, format_report

            report = bench_engine(sizes, args.seconds)
            print(json.dumps(report) if args.json else format_report(report))
            return 0
        from rtcore.bench_live import bench_live, format_live_report

        if not (math.isfinite(args.baseline_seconds) and 1 <= args.baseline_seconds <= 600):
            parser.error(f"--baseline-seconds must be 1..600, got {args.baseline_seconds}")
        if any(s & (s - 1) for s in sizes):
            parser.error("--block-sizes must be powers of two for JACK")
        live = bench_live(sizes, args.seconds, args.baseline_seconds,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
        print(json.dumps(live) if args.json else format_live_report(live))
        return 0
    parser.error("unknown command")
    return 2


def _pedal(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not (math.isfinite(args.fps) and 1 <= args.fps <= 120):
        parser.error(f"--fps must be 1..120, got {args.fps}")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        parser.error(f"--seconds must be a positive number, got {args.seconds}")
    from firmware.app import run_pedal
    from rtcore.live import default_data_dir

    return run_pedal(engine=args.engine, data_dir=args.data_dir or default_data_dir(),
                     pinmap=args.pinmap, keymap=args.keymap, emulate=args.emulate,
                     fps=args.fps, seconds=args.seconds,
                     headless_without_gpio=args.headless_without_gpio,
                     out=lambda line: print(line, file=sys.stderr, flush=True))


def _engine(args: argparse.Namespace) -> int:
    from rtcore.errors import OuroError
    from rtcore.live import load_settings, run_engine

    try:
        settings = load_settings(args.config, server=args.server, client_name=args.name,
                                 osc_port=args.osc_port, osc_host=args.osc_host,
                                 connect=False if args.no_connect else None,
                                 data_dir=args.data_dir)
        return run_engine(settings)
    except OuroError as exc:
        print(f"ouro engine: error: {exc}", file=sys.stderr)
        return 2


def _start(args: argparse.Namespace) -> int:
    from rtcore.start import check_seconds, run_start

    problem = check_seconds(args.seconds)
    if problem is None and args.osc_port is not None and not 0 <= args.osc_port <= 65535:
        problem = f"--osc-port must be 0..65535, got {args.osc_port}"
    if problem is None and args.server == "":
        problem = "--server must name a JACK server, got an empty name"
    if problem is not None:
        print(f"ouro start: error: {problem}", file=sys.stderr)
        return 2
    return run_start(args.server, tour=not args.no_tour, seconds=args.seconds,
                     data_dir=args.data_dir, osc_port=args.osc_port,
                     pedal=not args.no_pedal)


if __name__ == "__main__":
    sys.exit(main())
