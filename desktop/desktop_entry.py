"""`make desktop-entry`: put photosearch in the desktop's application menu.

Writes a freedesktop `.desktop` file to $XDG_DATA_HOME/applications (default
~/.local/share/applications) and the icon into the hicolor theme under
$XDG_DATA_HOME/icons, so menus find it by name. The entry starts this checkout's
interpreter on its main.py, i.e. what `make run` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from desktop.icon import ICON_NAME, ICON_PNG, ICON_SVG

ROOT = Path(__file__).resolve().parent.parent
ENTRY_NAME = "photosearch.desktop"


def data_home(env: dict[str, str] | None = None) -> Path:
    """$XDG_DATA_HOME if set to an absolute path (the spec ignores relative ones), else
    ~/.local/share."""
    env = dict(os.environ) if env is None else env
    value = env.get("XDG_DATA_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share"


def _quote(arg: str) -> str:
    """An Exec argument per the Desktop Entry spec: quoted when it has reserved characters."""
    if arg and not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`'):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'


def entry_text(python: str, main_py: str) -> str:
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Version=1.5",
            "Name=photosearch",
            "GenericName=Photo search",
            "Comment=Find your photos by describing them",
            f"Exec={_quote(python)} {_quote(main_py)}",
            f"Icon={ICON_NAME}",
            "Terminal=false",
            "Categories=Graphics;Photography;Viewer;",
            "Keywords=photo;picture;image;search;find;",
            # Matches QGuiApplication.desktopFileName, so the window gets this icon.
            "StartupWMClass=photosearch",
            "",
        ]
    )


def install(target: Path, python: str, main_py: str) -> list[Path]:
    """Write the entry and icons under the data directory `target`; returns what was
    written."""
    apps = target / "applications"
    apps.mkdir(parents=True, exist_ok=True)
    entry = apps / ENTRY_NAME
    entry.write_text(entry_text(python, main_py), encoding="utf-8")
    written = [entry]
    for src, sub in ((ICON_SVG, "scalable"), (ICON_PNG, "256x256")):
        dest = target / "icons" / "hicolor" / sub / "apps" / f"{ICON_NAME}{src.suffix}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        written.append(dest)
    return written


def _refresh_menus(target: Path) -> None:
    """Tell the desktop now rather than at next login, where the tool exists."""
    tool = shutil.which("update-desktop-database")
    if tool:
        subprocess.run([tool, str(target / "applications")], check=False, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter the entry runs")
    args = ap.parse_args(argv)
    target = data_home()
    for path in install(target, str(Path(args.python).absolute()), str(ROOT / "main.py")):
        print(f"installed {path}")
    _refresh_menus(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
