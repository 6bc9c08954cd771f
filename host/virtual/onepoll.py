"""poll() on one file descriptor at a time, for the virtual board's threads (select.select cannot take fds >= 1024)."""

from __future__ import annotations

import math
import select


class OnePoll:
    """poll() on one file descriptor (any number, unlike select): the returned events, 0 on timeout."""

    def __init__(self, mask: int):
        self.mask = mask
        self.p = select.poll()
        self.fd: int | None = None

    def poll(self, fd: int, timeout_s: float) -> int:
        if fd != self.fd:
            if self.fd is not None:
                self.p.unregister(self.fd)
            self.p.register(fd, self.mask)
            self.fd = fd
        ev = self.p.poll(int(math.ceil(timeout_s * 1000)))
        return ev[0][1] if ev else 0
