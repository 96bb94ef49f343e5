"""photosearch search: query syntax, match count and divider, --sort, --like; duplicates
(issue 14). In-process with the fake embedder."""

import json
import os
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

import cli.library
from cli import main
from engine.library import Library
from engine.testing import FakeEmbedder


@pytest.fixture
def library(tmp_path, make_image, monkeypatch):
    monkeypatch.setattr(cli.library, "load_embedder", lambda spec=None, device=None: FakeEmbedder())
    for year, i in zip((2016, 2020, 2018), range(3), strict=True):
        path = make_image(f"red{year}.png", (230, 20, 20), seed=i)
        os.utime(path, (datetime(year, 5, 1).timestamp(),) * 2)
    for i, colour in enumerate(("blue", "green", "white", "yellow") * 6):
        make_image(f"{colour}{i}.png", colour, seed=10 + i)
    lib = tmp_path / "lib"
    with Library.open(lib, FakeEmbedder()) as library:
        library.add_folder(tmp_path / "photos")
        library.index()
    return lib


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_match_count_divider_and_stars(capsys, library):
    rc, out, _ = _run(capsys, "search", "--library", library, "red", "--top-k", "10")
    lines = out.splitlines()
    assert rc == 0 and lines[0] == "3 matches"
    divider = lines.index("--- Less likely ---")
    assert divider == 5  # count, header, three matches
    assert all("red" in line and "**" in line for line in lines[2:5])
    assert all("**" not in line for line in lines[6:])


def test_sort_by_date(capsys, library):
    rc, out, _ = _run(capsys, "search", "--library", library, "red", "--sort", "date", "--json")
    hits = json.loads(out)
    assert rc == 0 and [os.path.basename(h["path"]) for h in hits[:3]] == [
        "red2020.png", "red2018.png", "red2016.png"
    ]
    assert [h["strength"] >= 2 for h in hits[:4]] == [True, True, True, False]
    rc, out, _ = _run(capsys, "search", "--library", library, "red", "--sort", "date")
    assert "2020-05-01" in out.splitlines()[2]


def test_negative_term_and_like_on_the_command_line(capsys, library, tmp_path):
    _, out, _ = _run(capsys, "search", "--library", library, "white", "--json", "--top-k", "30")
    plain = [os.path.basename(h["path"]) for h in json.loads(out)]
    _, out, _ = _run(capsys, "search", "--library", library, "white -yellow", "--json", "--top-k", "30")
    minus = [os.path.basename(h["path"]) for h in json.loads(out)]
    first_yellow = lambda names: min(i for i, n in enumerate(names) if n.startswith("yellow"))  # noqa: E731
    assert first_yellow(minus) > first_yellow(plain)
    photo = tmp_path / "photos" / "blue0.png"
    rc, out, _ = _run(capsys, "search", "--library", library, "--like", photo, "red", "--json")
    assert rc == 0 and str(photo) not in [h["path"] for h in json.loads(out)]
    rc, out, _ = _run(capsys, "search", "--library", library, "--like", photo, "--json")
    assert rc == 0 and json.loads(out)[0]["path"].endswith(".png")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--", "-red"], "not only terms to leave out"),  # a query that starts with a sign
        (["--like", "/nowhere/x.jpg", "red"], "photo is not in the library"),
        (["--", "  "], "the search query is empty"),
    ],
)
def test_bad_search_arguments_are_one_line(capsys, library, args, message):
    rc, _, err = _run(capsys, "search", "--library", library, *args)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_unknown_sort_is_refused_by_argparse(capsys, library):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--library", str(library), "red", "--sort", "colour"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def _fake_with_duplicate_threshold(spec=None, device=None):
    emb = FakeEmbedder()
    emb.duplicate_threshold = 0.96  # the fake's scale (tests/engine/test_duplicates.py)
    return emb


def test_duplicates_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli.library, "load_embedder", _fake_with_duplicate_threshold)
    folder = tmp_path / "dups"
    folder.mkdir()
    for seed in range(5):  # distinct photos; the first one with a resized copy
        rng = np.random.default_rng(seed)
        img = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((160, 120))
        img.save(folder / f"p{seed}.png")
    Image.open(folder / "p0.png").resize((96, 72)).save(folder / "p0_small.png")
    lib = tmp_path / "duplib"
    with Library.open(lib, _fake_with_duplicate_threshold()) as library:
        library.add_folder(folder)
        library.index()
    rc, out, _ = _run(capsys, "duplicates", "--library", lib, "--json")
    assert rc == 0 and json.loads(out) == [{
        "count": 2,
        "representative": str(folder / "p0.png"),
        "paths": [str(folder / "p0.png"), str(folder / "p0_small.png")],
    }]
    rc, out, _ = _run(capsys, "duplicates", "--library", lib)
    assert rc == 0 and out.splitlines()[0] == "1 group(s) of near-identical photos (2 photos)"
    assert out.splitlines()[2].endswith("p0.png  (representative)")
