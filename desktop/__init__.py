"""The desktop app (PySide6)."""

from desktop import qt_workarounds

# Before any signal is emitted: see qt_workarounds (PySide6 6.12 loses a reference to
# True on every emit, which ends the process after a few hundred).
qt_workarounds.install()
