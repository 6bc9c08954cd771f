"""Virtual boards: the unmodified firmware on the MicroPython unix port behind a serial port, hearing a simulated
square (``slm virtual``). ``VirtualBoard`` is in ``board``; see its module for the parts."""

from slm.virtual.board import VirtualBoard
from slm.virtual.errors import VirtualBoardError

__all__ = ["VirtualBoard", "VirtualBoardError"]
