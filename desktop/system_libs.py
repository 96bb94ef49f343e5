"""Before Qt loads: are the system libraries that Qt's X11 (xcb) platform plugin needs present?

PySide6's wheels bundle Qt itself but not these; without one of them Qt prints a plugin error
and aborts the process with a core dump. Checking first turns that into one apt line.
No Qt import here, on purpose: this runs before Qt is loaded.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

# soname -> the Debian/Ubuntu package that ships it (what the xcb plugin links against).
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
}


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def uses_xcb(env: dict[str, str] | None = None, platform: str = sys.platform) -> bool:
    """True when Qt will pick the xcb plugin: Linux, an X display, no other platform requested."""
    env = dict(os.environ) if env is None else env
    requested = env.get("QT_QPA_PLATFORM", "").strip().lower()
    return platform.startswith("linux") and bool(env.get("DISPLAY")) and requested in ("", "xcb")


def missing_packages(loads: Callable[[str], bool] | None = None) -> list[str]:
    """Debian packages to install for the libraries that cannot be loaded, in a stable order."""
    loads = loads or _loads
    return [package for soname, package in XCB_LIBRARIES.items() if not loads(soname)]


def missing_libraries_message(
    env: dict[str, str] | None = None,
    platform: str = sys.platform,
    loads: Callable[[str], bool] | None = None,
) -> str | None:
    """One line telling the user what to install, or None when the window can start."""
    if not uses_xcb(env, platform):
        return None
    packages = missing_packages(loads)
    if not packages:
        return None
    return (
        "photosearch: the window needs system libraries that are missing; install them with: "
        f"sudo apt install {' '.join(packages)}"
    )
