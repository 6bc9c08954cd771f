"""Lets the unmodified firmware run under CPython (the slow fallback engine and the unit tests).

It installs a stand-in ``micropython`` module (``const``, and ``viper``/``native`` decorators that leave the
function as it is) and the viper pointer casts ``ptr8``/``ptr16``/``ptr32`` as builtins. Because every value
in the kernel provably fits in 32 bits, Python's unbounded ints give the same results as viper's machine words.
The stand-in is put into ``sys.modules`` directly, so a CPython package that happens to be called
``micropython`` cannot shadow it.
"""

from __future__ import annotations

import builtins
import sys
import types
from array import array

from slm.resources import firmware_dir


def _identity(f):
    return f


def _ptr(code: str):
    def cast(obj):
        if isinstance(obj, array) and obj.typecode in ("i", "l") and code == "i":
            return obj
        return memoryview(obj).cast("B").cast(code)

    return cast


def install() -> None:
    """Make ``import micropython`` and the viper builtins work for firmware modules in this process."""
    mod = types.ModuleType("micropython")
    mod.const = lambda v: v
    mod.viper = _identity
    mod.native = _identity
    mod.alloc_emergency_exception_buf = lambda n: None
    mod.mem_info = lambda *a: None
    mod.__doc__ = "CPython stand-in for MicroPython's micropython module (slm.cpython_shim)"
    sys.modules["micropython"] = mod
    builtins.ptr8 = _ptr("B")  # type: ignore[attr-defined]
    builtins.ptr16 = _ptr("H")  # type: ignore[attr-defined]
    builtins.ptr32 = _ptr("i")  # type: ignore[attr-defined]


def import_firmware(name: str):
    """Import a firmware module under CPython (the firmware folder goes on sys.path for this process)."""
    install()
    d = str(firmware_dir())
    if d not in sys.path:
        sys.path.insert(0, d)
    __import__(name)
    return sys.modules[name]
