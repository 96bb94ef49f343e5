"""The pre-Qt check for the xcb libraries, with the library lookup faked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from desktop.system_libs import XCB_LIBRARIES, missing_libraries_message, missing_packages

X11 = {"DISPLAY": ":0"}


def test_names_exactly_the_packages_whose_libraries_fail_to_load() -> None:
    absent = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    message = missing_libraries_message(X11, "linux", loads=lambda so: so not in absent)
    assert message is not None and "\n" not in message
    assert message.endswith("sudo apt install libxcb-icccm4 libxcb-keysyms1")


def test_no_message_when_everything_loads_or_qt_will_not_use_xcb() -> None:
    assert missing_libraries_message(X11, "linux", loads=lambda so: True) is None
    never = lambda so: False  # noqa: E731 - every library missing
    assert missing_libraries_message({**X11, "QT_QPA_PLATFORM": "offscreen"}, "linux", never) is None
    assert missing_libraries_message({}, "linux", never) is None  # no X display: another check
    assert missing_libraries_message(X11, "darwin", never) is None
    assert missing_packages(never) == list(XCB_LIBRARIES.values())


def test_app_start_exits_2_with_the_apt_line_before_qt_loads(tmp_path: Path) -> None:
    """The real entry point with the lookup faked to fail: one line on stderr, exit 2, no Qt."""
    script = (
        "import sys, desktop.system_libs as s\n"
        "s._loads = lambda so: so != 'libxcb-cursor.so.0'\n"
        "from cli import main\n"
        "rc = main([])\n"
        "assert 'PySide6.QtWidgets' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DISPLAY": ":0", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "photosearch: the window needs system libraries that are missing; install them with: "
        "sudo apt install libxcb-cursor0"
    ]
