"""Bad arguments get one clear line (exit 2) before anything expensive is loaded, and
filters that match nothing say so instead of a bare [] (issue 11: #2 query side, #6, #7)."""

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

import cli.library
from cli import main
from engine.library import Library
from engine.testing import FakeEmbedder

NOON = datetime(2024, 3, 15, 12, 0).timestamp()


class TextCountingEmbedder(FakeEmbedder):
    """FakeEmbedder with a caption bank, counting the texts it embeds."""

    def __init__(self, bank: Path | None = None) -> None:
        super().__init__()
        self.caption_bank_path = bank
        self.texts_embedded = 0

    def embed_texts(self, texts):
        self.texts_embedded += len(texts)
        return super().embed_texts(texts)


@pytest.fixture
def library(tmp_path, make_image):
    for colour in ("red", "green", "blue"):
        path = make_image(f"{colour}.png", colour)
        os.utime(path, (NOON, NOON))  # no EXIF: the file date is the photo's date
    lib = tmp_path / "lib"
    with Library.open(lib, FakeEmbedder()) as library:
        library.add_folder(tmp_path / "photos")
        library.index()
    return lib


@pytest.fixture
def embedder_loads(monkeypatch):
    """Counts model loads; each returns a fresh TextCountingEmbedder (last one kept)."""
    state = {"loads": 0, "bank": None, "embedder": None}

    def load(spec=None, device=None):
        state["loads"] += 1
        state["embedder"] = TextCountingEmbedder(state["bank"])
        return state["embedder"]

    monkeypatch.setattr(cli.library, "load_embedder", load)
    return state


def _run(capsys, *args):
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own refusals
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def _error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("photosearch: error:"), err
    return lines[0]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--top-k", "0"], "--top-k must be at least 1, got 0"),
        (["--top-k", "-1"], "--top-k must be at least 1, got -1"),
        (["--from", "0001-01-01", "--to", "9999-12-31"], "--from 0001-01-01 is before 1800-01-01"),
        (["--to", "1200-05-01"], "--to 1200-05-01 is before 1800-01-01"),
        (["--from", "2024-03-16", "--to", "2024-03-15"], "--from 2024-03-16 00:00 is after --to"),
    ],
)
def test_bad_values_are_refused_before_the_model_loads(
    capsys, library, embedder_loads, extra, message
):
    rc, out, err = _run(capsys, "search", "--library", library, "red", "--json", *extra)
    assert rc == 2 and out == ""
    assert message in _error_line(err)
    assert embedder_loads["loads"] == 0


@pytest.mark.parametrize("command", ["similar", "captions"])
def test_top_k_is_checked_for_every_command(capsys, library, embedder_loads, command):
    photo = library.parent / "photos" / "red.png"
    rc, _, err = _run(capsys, command, "--library", library, photo, "--top-k", "0")
    assert rc == 2 and "--top-k must be at least 1" in _error_line(err)
    assert embedder_loads["loads"] == 0


def test_full_date_range_and_one_whole_day(capsys, library, embedder_loads):
    rc, out, _ = _run(
        capsys, "search", "--library", library, "red", "--json",
        "--from", "1800-01-01", "--to", "9999-12-31",
    )
    assert rc == 0 and len(json.loads(out)) == 3
    # --to with a bare date includes that day: photos taken at noon on it are found.
    rc, out, _ = _run(
        capsys, "search", "--library", library, "red", "--json",
        "--from", "2024-03-15", "--to", "2024-03-15",
    )
    assert rc == 0 and len(json.loads(out)) == 3


def test_filters_that_match_nothing_say_so(capsys, library, embedder_loads):
    rc, out, err = _run(capsys, "search", "--library", library, "red", "--json",
                        "--from", "2030-01-01")
    assert rc == 0 and json.loads(out) == []
    assert "no photos match the filters (--from 2030-01-01)" in err
    rc, out, _ = _run(capsys, "search", "--library", library, "red", "--to", "2000-01-01")
    assert rc == 0 and "no photos match the filters (--to 2000-01-01)" in out


def test_folder_filter_must_be_in_the_library(capsys, library, embedder_loads, tmp_path):
    rc, _, err = _run(capsys, "search", "--library", library, "red", "--folder", "/nonexistent")
    assert rc == 2 and "folder not found: /nonexistent" in _error_line(err)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rc, _, err = _run(capsys, "search", "--library", library, "red", "--folder", elsewhere)
    line = _error_line(err)
    assert rc == 2 and "folder is not in the library" in line and str(elsewhere) in line
    # The library folder itself, a link to it, and a folder above it all filter fine.
    photos = tmp_path / "photos"
    (tmp_path / "link").symlink_to(photos)
    for folder in (photos, tmp_path / "link", tmp_path):
        rc, out, _ = _run(capsys, "search", "--library", library, "red", "--json",
                          "--folder", folder)
        assert rc == 0 and len(json.loads(out)) == 3, folder


def test_folder_filter_accepts_an_offline_folder(capsys, library, embedder_loads, tmp_path):
    photos = tmp_path / "photos"
    photos.rename(tmp_path / "unplugged")  # the drive is gone, its photos stay offline
    with Library.open(library, FakeEmbedder()) as lib:
        lib.index()
    rc, out, _ = _run(capsys, "search", "--library", library, "red", "--json",
                      "--folder", photos)
    hits = json.loads(out)
    assert rc == 0 and len(hits) == 3 and {h["status"] for h in hits} == {"offline"}


def test_query_with_bytes_that_are_not_utf8(capsys, library, embedder_loads):
    # What Python makes of `photosearch search $'\xff red'`: a lone surrogate escape.
    rc, out, err = _run(capsys, "search", "--library", library, "\udcff red", "--json")
    assert rc == 0, err
    hits = json.loads(out)
    assert Path(hits[0]["path"]).name == "red.png"
    assert "not UTF-8" in err and "Traceback" not in err
    rc, _, err = _run(capsys, "search", "--library", library, "\udcff\udcfe")
    assert rc == 2 and "the search query is empty" in err.strip().splitlines()[-1]


def test_search_json_has_each_hits_status(capsys, library, embedder_loads):
    rc, out, _ = _run(capsys, "search", "--library", library, "red", "--json")
    hits = json.loads(out)
    assert rc == 0 and [set(h) for h in hits] == [{"path", "score", "strength", "status"}] * 3
    assert {h["status"] for h in hits} == {"ok"}


def test_captions_on_an_unknown_photo_embeds_no_caption(capsys, library, embedder_loads, tmp_path):
    bank = tmp_path / "bank.txt"
    bank.write_text("\n".join(f"a photo of thing number {i}" for i in range(600)))
    embedder_loads["bank"] = bank
    rc, _, err = _run(capsys, "captions", "--library", library, tmp_path / "not-indexed.jpg")
    assert rc == 2 and "photo is not in the library" in _error_line(err)
    assert embedder_loads["embedder"].texts_embedded == 0
    # A photo that is in the library still gets its captions (the bank is embedded then).
    rc, out, _ = _run(capsys, "captions", "--library", library, "--json", "--top-k", "3",
                      tmp_path / "photos" / "red.png")
    assert rc == 0 and len(json.loads(out)) == 3
    assert embedder_loads["embedder"].texts_embedded >= 600
