"""`make desktop-entry` and the application icon."""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
from pathlib import Path

from desktop import desktop_entry
from desktop.icon import ICON_PNG, ICON_SVG, app_icon

ROOT = Path(__file__).resolve().parents[2]


def _entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def test_make_desktop_entry_installs_under_xdg_data_home(tmp_path: Path) -> None:
    data = tmp_path / "xdg data"  # a space: Exec must quote
    env = {**os.environ, "XDG_DATA_HOME": str(data), "HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-m", "desktop.desktop_entry"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    entry_file = data / "applications" / "photosearch.desktop"
    assert f"installed {entry_file}" in out.stdout
    entry = _entry(entry_file)
    assert entry["Type"] == "Application" and entry["Name"] == "photosearch"
    assert entry["Icon"] == "photosearch" and entry["Terminal"] == "false"
    assert "Photography;" in entry["Categories"]
    # Exec runs this interpreter on this checkout's main.py.
    argv = shlex.split(entry["Exec"])
    assert argv == [str(Path(sys.executable).absolute()), str(ROOT / "main.py")]
    for sub, src in (("scalable", ICON_SVG), ("256x256", ICON_PNG)):
        icon = data / "icons" / "hicolor" / sub / "apps" / f"photosearch{src.suffix}"
        assert icon.read_bytes() == src.read_bytes()
    assert not (tmp_path / "home" / ".local").exists()  # XDG_DATA_HOME respected


def test_data_home_defaults_to_local_share_and_ignores_a_relative_value(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert desktop_entry.data_home({"HOME": home}) == tmp_path / ".local" / "share"
    assert desktop_entry.data_home({"HOME": home, "XDG_DATA_HOME": "rel/dir"}) == (
        tmp_path / ".local" / "share"
    )
    assert desktop_entry.data_home({"HOME": home, "XDG_DATA_HOME": "/x/y"}) == Path("/x/y")


def test_exec_quoting_follows_the_desktop_entry_spec() -> None:
    assert desktop_entry._quote("/usr/bin/python") == "/usr/bin/python"
    assert desktop_entry._quote('/a b/"q"$x') == '"/a b/\\"q\\"\\$x"'


def test_the_window_and_the_application_carry_the_icon(make_window, qapp) -> None:  # type: ignore[no-untyped-def]
    assert not app_icon().isNull()
    assert not app_icon().pixmap(64, 64).isNull()
    win = make_window()
    assert not win.windowIcon().isNull()
    from desktop.app import create_app

    app = create_app([])
    assert not app.windowIcon().isNull() and app.desktopFileName() == "photosearch"
