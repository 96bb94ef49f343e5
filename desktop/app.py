"""Application start-up: theme, library location, the main window."""

from __future__ import annotations

import logging
import os
import signal
import sys

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from desktop.icon import app_icon
from desktop.main_window import MainWindow
from engine import settings
from engine.settings import default_library_dir

log = logging.getLogger(__name__)


def dark_palette() -> QPalette:
    p = QPalette()
    # Window and base are kept apart enough that checkboxes and inputs (drawn in Base)
    # stand out from the background; too close and an unchecked box disappears.
    window, base, text = QColor(45, 45, 49), QColor(26, 26, 28), QColor(230, 230, 232)
    roles = {
        QPalette.ColorRole.Window: window,
        QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base,
        QPalette.ColorRole.AlternateBase: QColor(44, 44, 48),
        QPalette.ColorRole.ToolTipBase: QColor(50, 50, 54),
        QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: QColor(62, 62, 67),
        QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor(255, 90, 90),
        QPalette.ColorRole.Highlight: QColor(64, 128, 220),
        QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.Link: QColor(110, 170, 255),
        QPalette.ColorRole.PlaceholderText: QColor(140, 140, 146),
        QPalette.ColorRole.Mid: QColor(110, 110, 116),
        QPalette.ColorRole.Dark: QColor(20, 20, 22),
        QPalette.ColorRole.Light: QColor(70, 70, 76),
    }
    for role, colour in roles.items():
        p.setColor(role, colour)
    disabled = QColor(130, 130, 136)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return p


def apply_theme(app: QApplication) -> None:
    """Fusion everywhere (consistent look), light or dark palette following the system."""
    app.setStyle("Fusion")
    scheme = QGuiApplication.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        app.setPalette(dark_palette())
    else:
        app.setPalette(app.style().standardPalette())


def create_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("photosearch")
    app.setOrganizationName("photosearch")
    # Matches the installed photosearch.desktop (make desktop-entry): on Wayland the
    # compositor takes the window's icon and name from it.
    app.setDesktopFileName("photosearch")
    app.setWindowIcon(app_icon())
    apply_theme(app)
    QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _s: apply_theme(app))
    return app


def missing_display_message(env: dict[str, str] | None = None) -> str | None:
    """Why the window cannot open here, or None.

    Without this check Qt aborts the process with a core dump on a machine with no
    display (an SSH session, a server), which reads like a crash rather than advice.
    """
    env = dict(os.environ) if env is None else env
    if not sys.platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return (
        "photosearch: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set), so the "
        "window cannot open. Run it from a desktop session, or use the command line: "
        "photosearch --help"
    )


def run_app(argv: list[str] | None = None) -> int:
    """Open the main window; returns the process exit code."""
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get(settings.DEBUG_ENV) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    problem = missing_display_message()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    app = create_app(argv)
    window = MainWindow(default_library_dir())
    window.show()
    # aboutToQuit covers quitting without closing the window (e.g. a session logout).
    app.aboutToQuit.connect(window.shutdown)
    # Ctrl+C in the terminal: close like the window's close button (jobs cancelled, library
    # closed). Python only runs signal handlers between bytecodes, so a timer wakes it.
    signal.signal(signal.SIGINT, lambda *_: window.close())
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(250)
    return int(app.exec())
