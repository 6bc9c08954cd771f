"""The error a virtual board raises when it cannot be started or controlled."""

from __future__ import annotations

from slm.firmware_engine import EngineError


class VirtualBoardError(EngineError):
    """The virtual board could not be started or controlled; the message is one line."""
