"""The PySide6 emit reference leak (desktop/qt_workarounds.py) stays fixed."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Qt, Signal

import desktop  # noqa: F401 - installs the work-around
from desktop import qt_workarounds


class _Sender(QObject):
    one = Signal(object)
    two = Signal(object, object)


def test_emitting_thousands_of_signals_keeps_every_reference_to_true(qtbot) -> None:
    sender = _Sender()
    got: list[object] = []
    sender.one.connect(got.append, Qt.ConnectionType.QueuedConnection)
    sender.two.connect(lambda a, b: got.append(b))
    before = sys.getrefcount(True)
    # Without the work-around 2,000 emits take 2,000 references from True (599 to start
    # with in a bare interpreter): the process would abort here.
    for i in range(1000):
        sender.one.emit(i)
        sender.two.emit(None, i)
    qtbot.waitUntil(lambda: len(got) == 2000, timeout=5000)
    assert abs(sys.getrefcount(True) - before) < 50
    assert not qt_workarounds.emit_drops_a_reference()
