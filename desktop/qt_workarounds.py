"""Work-arounds for bugs in the Qt bindings, installed when `desktop` is imported.

PySide6 6.12.0 on CPython 3.11: `SignalInstance.emit()` returns `True` without taking a
reference to it, so every emit from Python drops one reference to `True`. `True` starts
with a few hundred (599 in a bare interpreter here); once they are gone the process
aborts with "Fatal Python error: bool_dealloc: deallocating True or False", at some later
emit or at exit (seen at the end of `make screenshot`). The app emits signals for every
thumbnail and task, so a session of any length got there. (CPython 3.12+ makes True
immortal, which hides the bug.)

The fix is probed, not assumed: a few emits on a throw-away object tell whether this
binding drops the reference; only then is `emit` wrapped to give each result its missing
reference back. A fixed binding is left alone.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance

log = logging.getLogger(__name__)

_PROBE_EMITS = 20


class _Probe(QObject):
    ping = Signal()


def emit_drops_a_reference() -> bool:
    """True when `emit()` on this binding loses a reference to its result."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBE_EMITS):
        probe.ping.emit()
    # Other threads may touch True meanwhile; a leak is one reference per emit.
    return before - sys.getrefcount(True) >= _PROBE_EMITS // 2


def install() -> bool:
    """Wrap `SignalInstance.emit` if the binding needs it; True if it did (idempotent)."""
    if getattr(SignalInstance.emit, "_photosearch_fixed", False):
        return True
    if not emit_drops_a_reference():
        return False
    original = SignalInstance.emit
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    incref.restype = None

    def emit(self: SignalInstance, *args: Any) -> Any:
        result = original(self, *args)
        incref(result)  # the reference the binding did not take
        return result

    emit._photosearch_fixed = True  # type: ignore[attr-defined]
    SignalInstance.emit = emit  # type: ignore[method-assign]
    log.debug("SignalInstance.emit wrapped: this PySide6 drops a reference per emit")
    return True
