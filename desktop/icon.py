"""The application icon: desktop/assets/photosearch.svg (with a 256 px PNG beside it for
menus and platforms without the SVG image plugin)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QIcon

ASSETS = Path(__file__).resolve().parent / "assets"
ICON_SVG = ASSETS / "photosearch.svg"
ICON_PNG = ASSETS / "photosearch.png"
ICON_NAME = "photosearch"  # the freedesktop icon name (desktop_entry.py installs it)


def app_icon() -> QIcon:
    """Needs a QGuiApplication; the PNG serves the sizes the SVG plugin cannot."""
    icon = QIcon()
    for path in (ICON_SVG, ICON_PNG):
        if path.is_file():
            icon.addFile(str(path))
    return icon
