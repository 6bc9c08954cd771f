"""The virtual board's old import path: ``from slm.virtual_board import VirtualBoard, VirtualBoardError`` (the code is
in the ``slm.virtual`` package)."""

from slm.virtual import VirtualBoard, VirtualBoardError
from slm.virtual.device_dir import FIFO_NAME

__all__ = ["VirtualBoard", "VirtualBoardError", "FIFO_NAME"]
