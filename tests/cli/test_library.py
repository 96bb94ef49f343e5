"""The library commands end to end, as a user runs them (subprocess, fake embedder)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.library import Library
from engine.testing import FakeEmbedder
from tests.conftest import shared_data

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO.parent / "shared" / "data" / "photos_sample" / "images"


def _entry() -> list[str]:
    return [sys.executable, str(REPO / "main.py")]


def run(*args, env_extra=None):
    env = {**os.environ, "PHOTOSEARCH_EMBEDDER": "fake", **(env_extra or {})}
    return subprocess.run(
        [*_entry(), *map(str, args)], cwd=REPO, capture_output=True, text=True, env=env,
        timeout=120,
    )


def _one_line_error(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("photosearch: error:"), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def sample_library(tmp_path_factory):
    shared_data("photos_sample")
    lib = tmp_path_factory.mktemp("cli") / "lib"
    proc = run("index", "--library", lib, SAMPLE, "--json")
    assert proc.returncode == 0, proc.stderr
    return lib, json.loads(proc.stdout)


@pytest.mark.slow
def test_index_json_shape(sample_library):
    lib, report = sample_library
    assert set(report) == {"indexed", "unchanged", "moved", "removed", "offline", "failed"}
    assert report["indexed"] + len(report["failed"]) == 200
    again = json.loads(run("index", "--library", lib, SAMPLE, "--json").stdout)
    assert again["unchanged"] == report["indexed"] and again["indexed"] == 0


@pytest.mark.slow
def test_search_similar_captions_status(sample_library):
    lib, _ = sample_library
    proc = run("search", "--library", lib, "a dog running on grass", "--top-k", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert len(hits) == 5 and set(hits[0]) == {"path", "score", "strength", "status"}
    assert all(Path(h["path"]).is_absolute() and Path(h["path"]).exists() for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]

    human = run("search", "--library", lib, "red", "--top-k", "3")
    assert human.returncode == 0 and "score" in human.stdout and hits[0]["path"][:5] in human.stdout

    photo = hits[0]["path"]
    sim = json.loads(run("similar", "--library", lib, photo, "--json", "--top-k", "4").stdout)
    assert len(sim) == 4 and photo not in [h["path"] for h in sim]
    caps = json.loads(run("captions", "--library", lib, photo, "--json").stdout)
    assert caps and set(caps[0]) == {"caption", "score", "strength"}
    assert "a dog running on grass" in [c["caption"] for c in caps]  # past queries join the bank

    status = json.loads(run("status", "--library", lib, "--json").stdout)
    assert status["photo_count"] == 200 and status["model_id"] == FakeEmbedder().model_id
    assert run("status", "--library", lib).stdout.count("photos") >= 1


def test_weak_notice_in_human_output(tmp_path, make_image):
    make_image("r.jpg", "red")
    lib = tmp_path / "lib"
    assert run("index", "--library", lib, tmp_path / "photos").returncode == 0
    out = run("search", "--library", lib, "zebra quantum").stdout
    assert "no good match" in out


def test_error_cases_are_one_line(tmp_path, make_image):
    lib = tmp_path / "lib"
    assert "folder not found" in _one_line_error(run("index", "--library", lib, tmp_path / "nope"))
    make_image("r.jpg", "red")
    assert run("index", "--library", lib, tmp_path / "photos").returncode == 0
    assert "empty" in _one_line_error(run("search", "--library", lib, "   "))
    assert "no library" in _one_line_error(run("search", "--library", tmp_path / "none", "dog"))
    assert "not in the library" in _one_line_error(
        run("similar", "--library", lib, tmp_path / "other.jpg")
    )
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "catalog.db").write_bytes(b"not a database at all" * 50)
    assert "cannot open" in _one_line_error(run("status", "--library", garbage))


def test_model_mismatch_tells_how_to_reindex(tmp_path, make_image):
    make_image("r.jpg", "red")
    lib = tmp_path / "lib"
    with Library.open(lib, FakeEmbedder(dim=16, model_id="older-model")) as library:
        library.add_folder(tmp_path / "photos")
        library.index()
    line = _one_line_error(run("search", "--library", lib, "red"))
    assert "older-model" in line and "photosearch index --library" in line and "--reembed" in line
    assert run("index", "--library", lib, "--reembed", "--json").returncode == 0
    assert run("search", "--library", lib, "red").returncode == 0


def test_locked_library(tmp_path, make_image):
    make_image("r.jpg", "red")
    lib = tmp_path / "lib"
    assert run("index", "--library", lib, tmp_path / "photos").returncode == 0
    with Library.open(lib, FakeEmbedder()):
        assert "in use by another photosearch" in _one_line_error(
            run("index", "--library", lib, tmp_path / "photos")
        )
        proc = run("search", "--library", lib, "red", "--json")  # reads beside the writer
        assert proc.returncode == 0 and len(json.loads(proc.stdout)) == 1
