"""File names that are not valid UTF-8 print safely from every command (issue 11 #2, output
side): plain output shows each such byte as a \\xff escape, --json keeps the exact bytes as
\\udcXX escapes, and no locale makes a command die with UnicodeEncodeError."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cli import main

REPO = Path(__file__).resolve().parents[2]

ODD = b"\xff\xfe.png"  # not UTF-8 at all
LATIN1_DIR = b"d\xe9j\xe0"  # 'déjà' written by a Latin-1 system
BROKEN = b"bad\xff.jpg"  # lands in the failure list


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


def _shown(path: object) -> str:
    """How plain output must show a name: each byte that is not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@pytest.fixture
def odd_library(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSEARCH_EMBEDDER", "fake")
    root = tmp_path / _name(b"photos\xff")  # the folder itself is not UTF-8 either
    try:
        root.mkdir()
        (root / _name(LATIN1_DIR)).mkdir()
    except (OSError, UnicodeEncodeError) as exc:  # e.g. a file system that refuses them
        pytest.skip(f"cannot create a file name that is not UTF-8 here: {exc}")
    Image.new("RGB", (64, 48), "red").save(root / _name(ODD), format="PNG")
    Image.new("RGB", (64, 48), "green").save(root / _name(LATIN1_DIR) / "g.png")
    Image.new("RGB", (64, 48), "blue").save(root / "blue.png")
    (root / _name(BROKEN)).write_bytes(b"not a jpeg")
    return root, tmp_path / "lib"


def _run(capsys, *args):
    # capsys writes through a strict UTF-8 encoder, as a UTF-8 terminal locale does.
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_every_command_prints_names_that_are_not_utf8(capsys, odd_library):
    root, lib = odd_library
    odd_photo = root / _name(ODD)
    shown_root = _shown(root)
    assert shown_root.endswith("photos\\xff")

    rc, out, _ = _run(capsys, "index", "--library", lib, root)
    assert rc == 0 and "indexed 3," in out and "failed 1" in out
    assert f"failed: {shown_root}/bad\\xff.jpg: " in out

    rc, out, _ = _run(capsys, "search", "--library", lib, "red")
    assert rc == 0 and f"{shown_root}/\\xff\\xfe.png" in out
    assert f"{shown_root}/d\\xe9j\\xe0/g.png" in out

    rc, out, _ = _run(capsys, "search", "--library", lib, "red", "--json")
    hits = json.loads(out)
    assert rc == 0 and "\\udcff\\udcfe.png" in out  # escaped in the JSON text itself
    by_bytes = {os.fsencode(h["path"]) for h in hits}  # and the exact bytes come back
    assert os.fsencode(odd_photo) in by_bytes
    assert os.fsencode(root / _name(LATIN1_DIR) / "g.png") in by_bytes

    rc, out, _ = _run(capsys, "similar", "--library", lib, odd_photo)
    assert rc == 0 and f"{shown_root}/d\\xe9j\\xe0/g.png" in out
    rc, out, _ = _run(capsys, "similar", "--library", lib, odd_photo, "--json")
    assert rc == 0 and len(json.loads(out)) == 2
    rc, out, _ = _run(capsys, "captions", "--library", lib, odd_photo, "--json")
    assert rc == 0 and isinstance(json.loads(out), list)

    rc, out, _ = _run(capsys, "status", "--library", lib)
    assert rc == 0 and f"folder:   {shown_root} [online] 3 photos" in out
    assert f"  {shown_root}/bad\\xff.jpg: " in out
    rc, out, _ = _run(capsys, "status", "--library", lib, "--json")
    status = json.loads(out)
    assert [os.fsencode(f["path"]) for f in status["failed"]] == [os.fsencode(root / _name(BROKEN))]

    rc, out, _ = _run(capsys, "folders", "--library", lib)
    assert rc == 0 and out.startswith(f"{shown_root} [online] 3 photos")
    rc, out, _ = _run(capsys, "folders", "--library", lib, "--json")
    assert [os.fsencode(f["path"]) for f in json.loads(out)] == [os.fsencode(root)]

    rc, _, err = _run(capsys, "similar", "--library", lib, root / _name(b"gone\xff.png"))
    assert rc == 2 and err.strip().endswith(f"{shown_root}/gone\\xff.png")

    rc, out, _ = _run(capsys, "remove-folder", "--library", lib, root)
    assert rc == 0 and out.startswith(f"removed {shown_root} from the library (3 photos")


def _photosearch(*args: bytes | str, encoding: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ, "PHOTOSEARCH_EMBEDDER": "fake", "LC_ALL": "C", "LANG": "C",
        "PYTHONIOENCODING": encoding,
    }
    env.pop("PYTHONUTF8", None)
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args], cwd=REPO, capture_output=True,
        env=env, timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["ascii", "utf-8:strict"])
def test_a_strict_locale_never_aborts_a_command(odd_library, encoding):
    root, lib = odd_library
    assert _photosearch("index", "--library", str(lib), str(root), encoding=encoding).returncode == 0
    for args in (
        ("search", "red"), ("search", "red", "--json"), ("status",), ("status", "--json"),
        ("folders",), ("folders", "--json"),
        # raw bytes on the command line, as a shell passes $'\xff red'
        (b"search", b"\xff red", b"--json"),
        (b"similar", os.fsencode(root / _name(ODD))),
    ):
        proc = _photosearch(args[0], "--library", str(lib), *args[1:], encoding=encoding)
        assert proc.returncode == 0, proc.stderr.decode("ascii", "replace")
        assert b"Traceback" not in proc.stderr
        proc.stdout.decode("ascii")  # every byte it printed is plain ASCII here
        if b"--json" in args or "--json" in args:
            assert json.loads(proc.stdout) is not None
    proc = _photosearch(b"search", "--library", str(lib), b"\xff\xfe", encoding=encoding)
    assert proc.returncode == 2
    assert proc.stderr.decode("ascii").strip().splitlines()[-1] == (
        "photosearch: error: the search query is empty; describe what the photo shows"
    )
