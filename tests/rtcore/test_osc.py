"""The OSC control server over real UDP sockets on loopback, driving a real engine.

Most tests leave the engine's audio side still: a command the server accepts then waits in
``engine.commands``, which shows exactly what was routed. Tests that need time to pass run
a :class:`Pump` (silent blocks through ``engine.process`` plus ``IOSide.service``).
A request followed by ``/ouro/ping`` is complete once the ``/ouro/pong`` is back: the server
handles one sender's packets in order and answers from one socket.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from rtcore.commands import VOCABULARY, Command, parse_args
from rtcore.config import EngineConfig
from rtcore.engine import Engine
from rtcore.errors import OuroError
from rtcore.ioside import IOSide
from rtcore.osc import (
    MAX_MESSAGES_PER_PACKET,
    MAX_PACKET_BYTES,
    MIDI_ADDRESSES,
    RECORDER_ADDRESSES,
    SERVER_ADDRESSES,
    SESSION_ADDRESSES,
    OscError,
    OscServer,
    signature,
)

ROOT = Path(__file__).resolve().parents[2]
REPLY_TIMEOUT_S = 2.0


def config() -> EngineConfig:
    return EngineConfig(block_size=256, declick_ms=0, smoothing_ms=0)


# ---------------------------------------------------------------------------- the rig


class EngineController:
    """The server's Controller protocol over a bare Engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.columns = engine.ncols
        self.rows = engine.nrows

    def submit(self, cmd: Command) -> None:
        self.engine.submit(cmd)

    def command_marks(self) -> tuple[int, int]:
        return self.engine.commands_submitted, self.engine.commands_taken

    def status_json(self) -> str:
        return json.dumps(self.engine.status())


class Pump:
    """The engine's audio and I/O side in a thread: silent blocks, a few times real time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.io = IOSide(engine)
        bs, ch = engine.block_size, engine.channels
        self.inputs = np.zeros((bs, ch), np.float32)
        self.main = np.zeros((bs, ch), np.float32)
        self.click = np.zeros(bs, np.float32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-pump", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.engine.process(self.inputs, self.main, self.click)
            self.io.service()

    def __enter__(self) -> Pump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class Client:
    """A UDP socket on loopback that sends to the server and decodes what comes back."""

    def __init__(self, port: int) -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def close(self) -> None:
        self.sock.close()

    def send(self, address: str, *args: Any) -> None:
        self.send_raw(message(address, *args))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def recv(self, timeout: float = REPLY_TIMEOUT_S) -> OscMessage | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        return OscMessage(data)

    def until(self, address: str, timeout: float = REPLY_TIMEOUT_S,
              ) -> tuple[OscMessage, list[OscMessage]]:
        """Read until a message to ``address`` comes; returns it and what came before."""
        before: list[OscMessage] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.recv(left) if left > 0 else None
            if msg is None:
                got = [m.address for m in before]
                pytest.fail(f"no {address} within {timeout} s (got {got})")
            if msg.address == address:
                return msg, before
            before.append(msg)

    def sync(self) -> list[OscMessage]:
        """Ping and wait for the pong: everything sent before has been handled by then."""
        self.send("/ouro/ping")
        return self.until("/ouro/pong")[1]

    def ping_until_answered(self, timeout: float = 5.0) -> None:
        """Ping every 0.2 s until a pong comes: right after a flood, the kernel may drop a
        ping while the server's receive buffer is still full, as UDP may."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send("/ouro/ping")
            msg = self.recv(0.2)
            while msg is not None and msg.address != "/ouro/pong":
                msg = self.recv(0.2)
            if msg is not None:
                self.quiet_for(0.2)  # pongs of earlier pings
                return
        pytest.fail(f"no /ouro/pong within {timeout} s")

    def errors(self) -> list[str]:
        return [m.params[0] for m in self.sync() if m.address == "/ouro/error"]

    def status(self) -> dict[str, Any]:
        self.send("/ouro/status")
        reply, _ = self.until("/ouro/status")
        assert len(reply.params) == 1 and isinstance(reply.params[0], str)
        doc = json.loads(reply.params[0])
        assert isinstance(doc, dict)
        return doc

    def quiet_for(self, seconds: float) -> list[OscMessage]:
        """Everything that arrives within ``seconds``."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is not None:
                got.append(msg)
        return got


def message(address: str, *args: Any) -> bytes:
    """An OSC message; python-osc picks the type tags (int i, float f, str s)."""
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg)
    return bytes(builder.build().dgram)


def bundle(*dgrams: bytes) -> bytes:
    """A bundle (time tag: immediately) of messages or bundles given as datagrams."""
    out = bytearray(b"#bundle\x00" + (1).to_bytes(8, "big"))
    for d in dgrams:
        out += len(d).to_bytes(4, "big") + d
    return bytes(out)


def queued(engine: Engine) -> list[Command]:
    return [cmd for cmd, _ in list(engine.commands)]


def wait_for(predicate: Any, timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def engine() -> Engine:
    return Engine(config())


@pytest.fixture
def server(engine: Engine) -> Iterator[OscServer]:
    srv = OscServer(EngineController(engine), port=0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: OscServer) -> Iterator[Client]:
    c = Client(server.port)
    yield c
    c.close()


# ---------------------------------------------------------------------------- commands


# Every command once, in an order where each is valid for the still engine; undo and redo
# have nothing to step to, so the engine refuses them.
ROUTED: list[tuple[str, tuple[Any, ...], bool]] = [
    ("tempo", (90.0,), True),
    ("tap", (), True),
    ("record", (0, 0), True),
    ("play", (0, 0), True),  # accepted: a record for the cell is queued
    ("solo", (0, 0), True),
    ("stop", (0, 0), True),
    ("clear", (0, 0), True),
    ("undo", (1, 1), False),
    ("redo", (1, 1), False),
    ("volume", (1, 1, 0.5), True),
    ("select", (2, 3), True),
    ("click", (1,), True),
    ("click_volume", (0.25,), True),
    ("master_volume", (0.75,), True),
    ("monitor", (1, 0.5), True),
    ("sync", ("midi",), True),
    ("clock_out", (1,), True),
    ("count_in", (1,), True),
]


def test_every_command_is_routed(engine: Engine, server: OscServer, client: Client) -> None:
    assert {name for name, _, _ in ROUTED} == set(VOCABULARY)
    for name, args, accepted in ROUTED:
        before = len(engine.commands)
        client.send(f"/ouro/{name}", *args)
        errors = client.errors()
        if accepted:
            assert errors == [], name
            assert len(engine.commands) == before + 1, name
            want = parse_args(name, list(args), columns=5, rows=5)
            assert queued(engine)[-1] == want
        else:
            assert len(errors) == 1, (name, errors)
            assert errors[0].startswith(f"{name}: cell (1, 1) has nothing to"), errors
            assert len(engine.commands) == before
    stats = server.stats()
    assert stats["handled"] == len(ROUTED) - 2 + len(ROUTED)  # commands + the pings
    assert stats["errors"] == 2


def test_commands_take_effect_in_the_engine(engine: Engine, server: OscServer,
                                            client: Client) -> None:
    with Pump(engine):
        client.send("/ouro/tempo", 90.0)
        client.send("/ouro/select", 2, 3)
        client.send("/ouro/volume", 1, 1, 0.5)
        client.send("/ouro/master_volume", 0.75)
        client.send("/ouro/click", 1)
        client.send("/ouro/click_volume", 0.25)
        client.send("/ouro/monitor", 1, 0.5)
        client.send("/ouro/record", 0, 0)
        assert client.errors() == []
        doc: dict[str, Any] = {}

        def recording() -> bool:
            nonlocal doc
            doc = client.status()
            return bool(doc["cells"][0][0]["state"] == "recording")

        wait_for(recording, what="cell (0, 0) recording")
        assert doc["tempo"] == 90.0
        assert doc["selected"] == [2, 3]
        assert doc["cells"][1][1]["volume"] == 0.5
        assert doc["master_volume"] == 0.75
        assert doc["click"] == {"on": True, "volume": 0.25}
        assert doc["monitor"] == {"on": True, "gain": 0.5}

        # a second record ends the column's first recording: it plays from the next beat
        client.send("/ouro/record", 0, 0)
        assert client.errors() == []
        wait_for(lambda: client.status()["cells"][0][0]["state"] == "playing",
                 what="cell (0, 0) playing")
        cell = client.status()["cells"][0][0]
        assert cell["beats"] >= 1
        assert cell["length_frames"] == round(cell["beats"] * 48000 * 60 / 90)


def test_status_answers_the_engine_status_document(engine: Engine, client: Client) -> None:
    doc = client.status()
    assert doc == json.loads(json.dumps(engine.status()))
    assert len(doc["cells"]) == 5 and all(len(col) == 5 for col in doc["cells"])
    for key in ("state", "next_state", "volume", "beats", "length_frames",
                "sync_offset_frames", "consolidated"):
        assert key in doc["cells"][4][4]
    assert len(doc["columns"]) == 5
    assert {"beats", "position", "running"} <= set(doc["columns"][0])


def test_status_reflects_a_command_sent_before_it(engine: Engine, client: Client) -> None:
    with Pump(engine):
        client.send("/ouro/select", 4, 1)
        wait_for(lambda: client.status()["selected"] == [4, 1], what="selection")


# ---------------------------------------------------------------------------- bad requests


def _tag_c() -> bytes:
    return b"/ouro/tap\x00\x00\x00,c\x00\x00"


def _nested(depth: int) -> bytes:
    d = message("/ouro/tap")
    for _ in range(depth):
        d = bundle(d)
    return d


BAD: list[tuple[str, bytes, list[str]]] = [
    ("too few args", message("/ouro/record", 1), ["record: takes column row", "got 1"]),
    ("too many args", message("/ouro/tap", 1), ["tap: takes no arguments, got 1"]),
    ("float column", message("/ouro/record", 1.0, 0),
     ["record: column must be an integer, got 1.0"]),
    ("string volume", message("/ouro/volume", 0, 0, "loud"),
     ["volume: value must be a number, got 'loud'"]),
    ("column out of range", message("/ouro/record", 5, 0),
     ["record: column 5 out of range 0..4"]),
    ("row out of range", message("/ouro/play", 0, -1), ["play: row -1 out of range 0..4"]),
    ("tempo out of range", message("/ouro/tempo", 500.0), ["tempo: tempo 500 BPM", "range"]),
    ("volume too high", message("/ouro/volume", 0, 0, 9.0), ["volume: value 9 is above 4"]),
    ("switch not 0/1", message("/ouro/click", 2), ["click: value must be 0 or 1, got 2"]),
    ("unknown command", message("/ouro/fly", 1),
     ["unknown address '/ouro/fly'", "record", "monitor", "status"]),
    ("outside /ouro/", message("/mixer/fader", 1), ["'/mixer/fader' is outside /ouro/"]),
    ("garbage", b"\x00\x01\x02garbage!", ["malformed OSC packet (11 bytes)", "not '/'"]),
    ("truncated", message("/ouro/volume", 0, 0, 0.5)[:-2],
     ["malformed OSC packet", "/ouro/volume: the arguments are cut short (2 bytes"]),
    ("truncated address", b"/ouro/vol", ["malformed OSC packet (9 bytes)", "no terminating"]),
    ("empty packet", b"", ["empty packet (0 bytes)"]),
    ("unsupported type tag", _tag_c(), ["unsupported OSC type tag 'c'"]),
    ("not UTF-8", b"/ouro/\xff\xfe\x00\x00\x00\x00", ["malformed OSC packet", "not UTF-8"]),
    ("status with args", message("/ouro/status", 1), ["status: takes no arguments"]),
    ("subscribe too fast", message("/ouro/subscribe", 61), ["subscribe: rate 61 Hz", "0..60"]),
    ("subscribe float", message("/ouro/subscribe", 2.5), ["subscribe: rate must be an integer"]),
    ("subscribe no rate", message("/ouro/subscribe"), ["subscribe: takes rate"]),
    ("too large", b"/ouro/tap" + b"\x00" * (MAX_PACKET_BYTES + 3),
     [f"packet of {MAX_PACKET_BYTES + 12} bytes is too large"]),
    ("bundle too big", bundle(*[message("/ouro/tap")] * (MAX_MESSAGES_PER_PACKET + 1)),
     [f"more than {MAX_MESSAGES_PER_PACKET} messages"]),
    ("bundle too deep", _nested(9), ["nested more than 8 deep"]),
    ("bundle element cut", bundle(message("/ouro/tap"))[:-4],
     ["bundle element at byte 16 claims 16 bytes; 12 follow"]),
]


@pytest.mark.parametrize(("packet", "expected"), [(p, e) for _, p, e in BAD],
                         ids=[name for name, _, _ in BAD])
def test_a_bad_request_is_answered_and_serving_goes_on(
        engine: Engine, server: OscServer, client: Client, packet: bytes,
        expected: list[str]) -> None:
    client.send_raw(packet)
    errors = client.errors()  # this also shows that a ping is still answered
    assert len(errors) == 1, errors
    for text in expected:
        assert text in errors[0]
    assert queued(engine) == []
    assert server.stats()["errors"] == 1
    assert client.status()["tempo"] == 120.0


def test_an_engine_refusal_is_answered(engine: Engine, client: Client) -> None:
    client.send("/ouro/play", 3, 3)
    assert client.errors() == ["play: cell (3, 3) is empty"]


def test_an_unexpected_exception_is_answered_counted_and_survived(
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken(EngineController):
        def submit(self, cmd: Command) -> None:
            raise RuntimeError("the controller broke")

    with OscServer(Broken(Engine(config())), port=0) as srv:
        c = Client(srv.port)
        try:
            c.send("/ouro/tap")
            assert c.errors() == [
                "internal error handling /ouro/tap: RuntimeError: the controller broke"]
            c.send("/ouro/tap")
            assert len(c.errors()) == 1
            assert srv.stats()["internal_errors"] == 2
            assert srv.running
        finally:
            c.close()
    # one traceback in the log however often it happens
    logged = [r for r in caplog.records if r.name == "rtcore.osc"]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_a_reply_too_large_to_send_is_counted_and_answered() -> None:
    class Huge(EngineController):
        def status_json(self) -> str:
            return json.dumps({"padding": "x" * 70000})

    with OscServer(Huge(Engine(config())), port=0) as srv:
        c = Client(srv.port)
        try:
            c.send("/ouro/status")
            errors = c.errors()
            assert len(errors) == 1 and "too large for one UDP datagram" in errors[0]
            assert srv.stats()["send_errors"] == 1
        finally:
            c.close()


# ---------------------------------------------------------------------------- bundles


def test_a_bundle_with_two_commands(engine: Engine, client: Client) -> None:
    builder = OscBundleBuilder(IMMEDIATELY)
    for dgram in (message("/ouro/select", 1, 2), message("/ouro/volume", 0, 0, 0.25)):
        builder.add_content(OscMessage(dgram))
    client.send_raw(builder.build().dgram)
    assert client.errors() == []
    assert queued(engine) == [
        parse_args("select", [1, 2], columns=5, rows=5),
        parse_args("volume", [0, 0, 0.25], columns=5, rows=5),
    ]


def test_a_bad_message_in_a_bundle_does_not_stop_the_others(engine: Engine,
                                                             client: Client) -> None:
    client.send_raw(bundle(message("/ouro/record", 9, 0),
                           bundle(message("/ouro/select", 4, 4), message("/ouro/ping"))))
    _, before = client.until("/ouro/pong")  # the bundle's own ping
    assert [m.address for m in before] == ["/ouro/error"]
    assert before[0].params == ["record: column 9 out of range 0..4"]
    assert queued(engine) == [parse_args("select", [4, 4], columns=5, rows=5)]


# ---------------------------------------------------------------------------- subscriptions


def _statuses(msgs: list[OscMessage]) -> list[dict[str, Any]]:
    return [json.loads(m.params[0]) for m in msgs if m.address == "/ouro/status"]


def test_ack_answers_once_the_audio_thread_has_taken_the_commands(
        engine: Engine, client: Client) -> None:
    client.send("/ouro/ack", 1)  # nothing queued: at once
    assert client.until("/ouro/ack")[0].params == [1]
    client.send("/ouro/select", 2, 3)
    client.send("/ouro/ack", 2)
    # no audio thread yet: the select waits in the queue, and so does the answer
    assert client.recv(0.2) is None
    assert engine.commands_taken == 0 and engine.commands_submitted == 1
    with Pump(engine):
        ack, _ = client.until("/ouro/ack")
    assert ack.params == [2]
    assert engine.commands_taken == 1
    assert engine.status()["selected"] == [2, 3]


def test_ack_gives_up_naming_the_token_when_no_audio_runs(engine: Engine,
                                                         client: Client) -> None:
    client.send("/ouro/select", 1, 1)
    client.send("/ouro/ack", 77)
    err, before = client.until("/ouro/error", timeout=3.0)
    assert "ack 77" in err.params[0] and "audio" in err.params[0], err.params
    assert not [m for m in before if m.address == "/ouro/ack"]


@pytest.mark.parametrize(("args", "says"), [
    ((), "takes one integer token, got 0 argument(s)"),
    ((1.5,), "takes one integer token, got 1.5"),
    (("x",), "takes one integer token, got 'x'"),
])
def test_ack_with_bad_arguments_is_refused(client: Client, args: tuple[Any, ...],
                                           says: str) -> None:
    client.send("/ouro/ack", *args)
    err, _ = client.until("/ouro/error")
    assert says in err.params[0], err.params


def test_subscribe_pushes_the_status_until_unsubscribe(server: OscServer,
                                                       client: Client) -> None:
    client.send("/ouro/subscribe", 20)
    pushes = _statuses(client.quiet_for(0.5))
    # 20 Hz for 0.5 s is about 10, the first at once; a loaded machine may send fewer
    assert 4 <= len(pushes) <= 13, len(pushes)
    assert all(len(p["cells"]) == 5 for p in pushes)
    assert server.stats()["subscribers"] == 1
    client.send("/ouro/unsubscribe")
    client.sync()
    assert _statuses(client.quiet_for(0.3)) == []
    assert server.stats()["subscribers"] == 0

    client.send("/ouro/subscribe", 30)
    client.until("/ouro/status")
    client.send("/ouro/subscribe", 0)
    client.sync()
    assert _statuses(client.quiet_for(0.3)) == []
    assert server.stats()["subscribers"] == 0


def test_resubscribing_changes_the_rate(server: OscServer, client: Client) -> None:
    client.send("/ouro/subscribe", 60)
    client.until("/ouro/status")
    client.send("/ouro/subscribe", 4)
    client.sync()
    pushes = _statuses(client.quiet_for(0.6))
    # at 60 Hz this would be about 36
    assert 1 <= len(pushes) <= 5, len(pushes)
    assert server.stats()["subscribers"] == 1


def test_the_subscriber_limit(engine: Engine) -> None:
    with OscServer(EngineController(engine), port=0, max_subscribers=2) as srv:
        clients = [Client(srv.port) for _ in range(3)]
        try:
            a, b, c = clients
            for x in (a, b):
                x.send("/ouro/subscribe", 1)
                assert x.errors() == []
            c.send("/ouro/subscribe", 1)
            errors = c.errors()
            assert len(errors) == 1 and "already 2 subscribers" in errors[0]
            a.send("/ouro/subscribe", 2)  # a rate change is no new subscriber
            assert a.errors() == []
            a.send("/ouro/unsubscribe")
            a.sync()
            c.send("/ouro/subscribe", 1)
            assert c.errors() == []
            assert srv.stats()["subscribers"] == 2
        finally:
            for x in clients:
                x.close()


# ---------------------------------------------------------------------------- flood


FLOOD = [
    b"\xde\xad\xbe\xef" * 4,
    message("/ouro/ping"),
    message("/ouro/status"),
    message("/ouro/volume", 0, 0, 0.5),
    message("/ouro/fly"),
    message("/elsewhere"),
    bundle(message("/ouro/select", 1, 1), message("/ouro/tap")),
    message("/ouro/volume", 0, 0, 0.5)[:-3],
    b"",
    message("/ouro/record", 7, 7),
]


def _flood(port: int, count: int, min_s: float = 0.0) -> None:
    """Send ``count`` packets of FLOOD as fast as possible, and go on for ``min_s``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    until = time.monotonic() + min_s
    i = 0
    try:
        while i < count or time.monotonic() < until:
            try:
                sock.sendto(FLOOD[i % len(FLOOD)], ("127.0.0.1", port))
            except OSError:
                pass  # a full send buffer: the flood goes on
            i += 1
    finally:
        sock.close()


# Low enough that the server reaches it even on a loaded machine, where it shares the GIL
# with the flooding thread and the pump.
FLOOD_RATE = 400.0


@pytest.fixture
def slow_server(engine: Engine) -> Iterator[OscServer]:
    srv = OscServer(EngineController(engine), port=0, max_rate=FLOOD_RATE)
    srv.start()
    yield srv
    srv.stop()


def test_a_flood_is_throttled_and_the_server_survives(engine: Engine,
                                                      slow_server: OscServer) -> None:
    server = slow_server
    client = Client(server.port)
    try:
        with Pump(engine):
            t0 = time.monotonic()
            frame0 = engine.frame
            flooder = threading.Thread(target=_flood, args=(server.port, 20000, 0.3))
            flooder.start()
            flooder.join(30)
            assert not flooder.is_alive()
            frame1 = engine.frame
            # answered after the flood, behind whatever the kernel still queued
            client.ping_until_answered()
            assert client.status()["cells"][0][0]["volume"] == 0.5
            elapsed = time.monotonic() - t0
            stats = server.stats()
    finally:
        client.close()
    assert server.running
    # the pump does about a block per millisecond; a starved one would do none
    assert frame1 - frame0 >= 10 * engine.block_size, "the audio side stalled in the flood"
    assert stats["throttled"] >= 1 and stats["throttled_s"] > 0, stats
    assert stats["received"] < 20000
    # the bucket: a burst of max_rate / 10, then max_rate messages per second
    assert stats["messages"] <= FLOOD_RATE * (0.1 + elapsed) + MAX_MESSAGES_PER_PACKET
    assert stats["errors"] > 0 and stats["handled"] > 0
    assert stats["status_builds"] <= 100 * elapsed + 2


def test_stop_is_prompt_even_during_a_flood(slow_server: OscServer) -> None:
    server = slow_server
    flooder = threading.Thread(target=_flood, args=(server.port, 20000), daemon=True)
    flooder.start()
    wait_for(lambda: server.stats()["throttled"] >= 1, what="throttling")
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 0.5
    assert not server.running
    flooder.join(30)


# ---------------------------------------------------------------------------- life cycle


def test_stop_is_prompt_and_frees_the_port(engine: Engine) -> None:
    srv = OscServer(EngineController(engine), port=0)
    srv.start()
    c = Client(srv.port)
    try:
        c.send("/ouro/subscribe", 1)
        c.until("/ouro/status")
    finally:
        c.close()
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 0.5
    assert not srv.running
    threads = [t.name for t in threading.enumerate()]
    assert "ouro-osc" not in threads
    again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        again.bind(("127.0.0.1", srv.port))
    finally:
        again.close()
    srv.stop()  # twice is fine


def test_port_zero_picks_a_free_port(engine: Engine) -> None:
    with OscServer(EngineController(engine), port=0) as srv:
        assert srv.port > 0
        assert srv._thread is not None and srv._thread.name == "ouro-osc"
        assert srv._thread.daemon
        c = Client(srv.port)
        try:
            assert c.sync() == []
        finally:
            c.close()


def test_a_port_in_use_raises_osc_error_naming_it(engine: Engine) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        with pytest.raises(OscError) as info:
            OscServer(EngineController(engine), "127.0.0.1", port)
    finally:
        taken.close()
    assert isinstance(info.value, OSError) and isinstance(info.value, OuroError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "in use" in str(info.value)


# ---------------------------------------------------------------------------- the docs


def test_the_docs_list_every_address() -> None:
    doc = (ROOT / "docs" / "osc.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r"^\| `/ouro/([\w/]+)` \| ([^|]*) \|", doc, re.MULTILINE)}
    for name in VOCABULARY:
        assert name in rows, f"/ouro/{name} is not in the table of docs/osc.md"
        assert rows[name].strip() == f"{signature(name)}", name
    for name in SERVER_ADDRESSES + MIDI_ADDRESSES + SESSION_ADDRESSES + RECORDER_ADDRESSES:
        assert name in rows, f"/ouro/{name} is not in the table of docs/osc.md"


def test_the_docs_examples_run(engine: Engine, server: OscServer) -> None:
    doc = (ROOT / "docs" / "osc.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.DOTALL)
    assert blocks
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(blocks).replace("9951", str(server.port)), "docs/osc.md", "exec"),
         namespace)
    names = [cmd.name for cmd in queued(engine)]
    assert {"tempo", "record", "volume", "monitor"} <= set(names)
    assert namespace["status"]["tempo"] == 120.0


def test_simple_udp_client_reaches_the_server(engine: Engine, server: OscServer) -> None:
    pedal = SimpleUDPClient("127.0.0.1", server.port)
    pedal.send_message("/ouro/select", [3, 4])
    pedal.send_message("/ouro/ping", [])
    replies = list(pedal.get_messages(timeout=0.5))
    assert [m.address for m in replies] == ["/ouro/pong"]
    assert queued(engine) == [parse_args("select", [3, 4], columns=5, rows=5)]
