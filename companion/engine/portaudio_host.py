"""The player's sound without JACK: PortAudio (through ``sounddevice``), for a tablet or a
desktop with no JACK server. It drives the same :class:`companion.engine.player.Player` as
:class:`rtcore.host.JackHost` does and offers the few things the player process asks of a
host: its rate and block size, ``attach``, ``poll``, ``status`` and ``close``.

PortAudio calls :meth:`PortAudioHost._callback` on its own real-time thread with a
``(frames, 2)`` float32 buffer, which the player writes into directly; the click and input
buffers are made beforehand. An output underflow (PortAudio's word for an xrun) is counted.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from companion.errors import CompanionError


class PortAudioError(CompanionError, RuntimeError):
    """No PortAudio, no output device, or the device refused the stream."""


class PortAudioHost:
    def __init__(self, sample_rate: int, blocksize: int = 256, device: str | int | None = None,
                 client_name: str = "ouro-player"):
        try:
            import sounddevice as sd
        except OSError as exc:  # the PortAudio library itself is missing
            raise PortAudioError(f"PortAudio is not installed ({exc})") from None
        self._sd = sd
        self.sample_rate = int(sample_rate)
        self.blocksize = int(blocksize)
        self.device = device
        self.client_name = client_name
        self.engine: Any = None
        self.underflows = 0
        self.callbacks = 0
        self.audio_thread = 0  # PortAudio's callback thread, once it has run
        self.stream: Any = None
        try:
            info = sd.query_devices(device, "output")
        except (ValueError, sd.PortAudioError) as exc:
            raise PortAudioError(f"no PortAudio output device {device or '(default)'}: "
                                 f"{exc}") from None
        self.device_name = str(info["name"])

    def attach(self, engine: Any) -> None:
        """Open the output stream and start calling ``engine.process`` (a :class:`Player`)."""
        self.engine = engine
        self._inputs = np.zeros((self.blocksize, 2), np.float32)
        self._click = np.zeros(self.blocksize, np.float32)
        try:
            self.stream = self._sd.OutputStream(
                samplerate=self.sample_rate, blocksize=self.blocksize, device=self.device,
                channels=2, dtype="float32", callback=self._callback, latency="low")
            self.stream.start()
        except self._sd.PortAudioError as exc:
            raise PortAudioError(f"{self.device_name}: cannot open a stream at "
                                 f"{self.sample_rate} Hz ({exc})") from None

    def _callback(self, outdata: Any, frames: int, _time: Any, status: Any) -> None:
        """PortAudio's real-time thread: no allocation beyond what the player does."""
        if status.output_underflow:
            self.underflows += 1
        self.audio_thread = threading.get_ident()
        self.callbacks += 1
        n = min(frames, self.blocksize)
        self.engine.process(self._inputs[:n], outdata[:n], self._click[:n])
        if frames > n:  # PortAudio may hand a larger buffer than asked: silence the rest
            outdata[n:] = 0.0

    def poll(self) -> None:
        """Nothing to supervise: PortAudio keeps its stream."""

    def status(self) -> dict[str, Any]:
        active = bool(self.stream is not None and self.stream.active)
        return {"backend": "portaudio", "device": self.device_name,
                "state": "running" if active else "stopped", "sample_rate": self.sample_rate,
                "blocksize": self.blocksize, "underflows": self.underflows,
                "callbacks": self.callbacks,
                "cpu_load": round(float(self.stream.cpu_load), 3) if active else None}

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
            self.stream = None
