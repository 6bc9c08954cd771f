"""The virtual board's microphone: a thread that renders the scene for one meter and writes its I2S words into the
board's audio FIFO, at ``speed`` x real time.

The scene (``SceneStream(repeat=True)``) is rendered in ``CHUNK_S`` chunks and its I2S words (int32, little-endian)
written into the FIFO, paced so that device time runs at ``speed`` x real time (0 or inf: as fast as the firmware
reads). The scene's clock starts when the firmware first opens the FIFO and then keeps running while the board is
down or not reading (that audio is lost, as a microphone's would be): a rebooted board hears the scene continue.
Paced or not, the scenario repeats after its duration: its schedule starts again while the sources, the sound paths
and the microphone run on, so the wrap adds nothing to the sound (no second microphone start-up, no phase jump).
Each process start gets a fresh FIFO (``DeviceDirectory.fresh_fifo``); the feeder reopens it and starts on a word
boundary, so a new process never reads half a word. Memory is bounded (``MAX_PENDING_CHUNKS``).

The board's clock: each time the feeder opens a fresh FIFO it writes ``rtc_path`` (rtc.json, firmware/hardware.py)
with the scenario's clock time (``clock_start`` + scene time) of the first word it will write into it, before that
word; the firmware waits for the file after opening the FIFO, so a virtual board's clock starts at the scene time it
hears, at the first boot and after every reboot or power cut.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import json
import os
import select
import threading
import time
from pathlib import Path

from slm.virtual.onepoll import OnePoll

CHUNK_S = 0.1  # device seconds of audio per FIFO write
MAX_PENDING_CHUNKS = 5  # paced: audio waiting beyond the FIFO's own buffer before the oldest is dropped
MAX_BEHIND_S = 1.0  # paced: when rendering falls further behind than this, the scene's clock slips
WAIT_S = 0.02  # poll period while nobody reads the FIFO


class AudioFeeder:
    """``run(stopping)`` (the thread's body) feeds ``fifo_path`` from ``stream`` until ``stopping`` is set. The
    figures may be read any time."""

    def __init__(self, stream, meter_id: str, speed: float, fifo_path: Path, clock_start: dt.datetime | None = None,
                 rtc_path: Path | None = None):
        self.stream, self.meter_id, self.fifo_path = stream, meter_id, str(fifo_path)
        self.clock_start = clock_start
        self.rtc_path = rtc_path
        self.rate = stream.rate
        self.speed = speed
        self.paced = 0 < speed < float("inf")
        self.audio_fed_s = 0.0  # device seconds written into the FIFO
        self.audio_lost_s = 0.0  # device seconds rendered while the board was down or not reading
        self.clock_slips_s = 0.0  # device seconds the scene's clock skipped because rendering fell behind
        self.scene_time_s = 0.0  # device seconds of the scene rendered so far
        self.scene_clock0: float | None = None  # paced: time.monotonic() at scene time 0 (for latency figures)

    def run(self, stopping: threading.Event) -> None:
        chunk_n = max(1, int(round(CHUNK_S * self.rate)))
        pending: collections.deque = collections.deque()  # [bytes, offset], oldest first
        fd = None
        clock0 = None  # monotonic time at scene time 0 (paced)
        rendered = 0  # samples rendered since scene time 0

        def render() -> bytes:
            nonlocal rendered
            words = self.stream.next_chunk(chunk_n)[self.meter_id].words
            rendered += chunk_n
            self.scene_time_s = rendered / self.rate
            return words.astype("<i4").tobytes()

        def drop_oldest() -> None:
            b, o = pending[0]
            tail = (-o) % 4  # keep the FIFO word-aligned: finish a word already begun
            self.audio_lost_s += (len(b) - o - tail) / 4 / self.rate
            if tail:
                pending[0] = [b[o:o + tail], 0]
            else:
                pending.popleft()

        def close_fd() -> None:
            nonlocal fd
            if fd is not None:
                os.close(fd)
                fd = None

        fifo_poll = OnePoll(select.POLLOUT)

        try:
            while not stopping.is_set():
                if fd is None:
                    try:
                        fd = os.open(self.fifo_path, os.O_WRONLY | os.O_NONBLOCK)
                    except OSError as e:  # ENXIO: no reader yet; ENOENT: between FIFOs
                        if e.errno not in (errno.ENXIO, errno.ENOENT):
                            raise
                    else:
                        if pending:  # a fresh FIFO starts on a word boundary
                            b, o = pending[0]
                            o += (-o) % 4
                            if o >= len(b):
                                pending.popleft()
                            else:
                                pending[0] = [b, o]
                        self._write_rtc(rendered - sum((len(b) - o) // 4 for b, o in pending))
                        if clock0 is None:
                            clock0 = time.monotonic()
                            self.scene_clock0 = clock0
                if not self.paced:
                    if fd is None:
                        stopping.wait(WAIT_S)
                        continue
                    if not pending:
                        pending.append([render(), 0])
                    timeout = 0.1
                else:
                    if clock0 is None:
                        stopping.wait(WAIT_S)
                        continue
                    now = time.monotonic()
                    due = int((now - clock0) * self.speed * self.rate)
                    if due - rendered > MAX_BEHIND_S * self.rate:  # rendering cannot keep up: slip
                        slip = due - rendered - chunk_n
                        clock0 += slip / (self.speed * self.rate)
                        self.scene_clock0 = clock0
                        self.clock_slips_s += slip / self.rate
                        due = rendered + chunk_n
                    while rendered + chunk_n <= due and not stopping.is_set():
                        data = render()
                        if fd is None:
                            self.audio_lost_s += len(data) / 4 / self.rate  # nobody listening: it is gone
                            continue
                        pending.append([data, 0])
                        while len(pending) > MAX_PENDING_CHUNKS:
                            drop_oldest()
                    next_due = clock0 + (rendered + chunk_n) / (self.speed * self.rate)
                    timeout = max(0.0, min(0.1, next_due - time.monotonic()))
                    if fd is None or not pending:
                        stopping.wait(timeout)
                        continue
                # write what is pending, waiting at most `timeout` for room in the FIFO
                if not fifo_poll.poll(fd, timeout):
                    continue
                try:
                    while pending:
                        b, o = pending[0]
                        n = os.write(fd, memoryview(b)[o:])
                        self.audio_fed_s += n / 4 / self.rate
                        if o + n >= len(b):
                            pending.popleft()
                        else:
                            pending[0][1] = o + n
                except BlockingIOError:
                    pass
                except BrokenPipeError:  # the reader is gone (the process ended): a new FIFO comes with the next
                    close_fd()
        finally:
            close_fd()

    def _write_rtc(self, first_sample: int) -> None:
        """rtc.json for the FIFO just opened: the scenario clock (UTC) at scene sample ``first_sample``."""
        if self.rtc_path is None or self.clock_start is None:
            return
        utc = self.clock_start.astimezone(dt.timezone.utc) + dt.timedelta(seconds=first_sample / self.rate)
        text = json.dumps({"utc": utc.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (utc.microsecond // 1000),
                           "source": "scenario", "follows_audio": True})
        tmp = Path(str(self.rtc_path) + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.rtc_path)
