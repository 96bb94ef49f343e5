"""Read commands (search, similar, captions, status, folders, duplicates) never take the writer lock
(issue 11 #8, CLI side): an `index` or `watch` started while one runs is never refused,
and a writer holding the lock neither fails nor delays them."""

import json
import time

import pytest

import cli.library
from cli import main
from engine.errors import LibraryLockedError
from engine.library import Library, _drop_writer_lock, _take_writer_lock
from engine.testing import FakeEmbedder


@pytest.fixture
def library(tmp_path, make_image):
    make_image("red.png", "red")
    make_image("blue.png", "blue")
    lib = tmp_path / "lib"
    with Library.open(lib, FakeEmbedder()) as library:
        library.add_folder(tmp_path / "photos")
        library.index()
    return lib


class LockProbe(FakeEmbedder):
    """Tries to take the writer lock, as an `index` started now would, whenever the
    command embeds something (so while its library is open)."""

    def __init__(self, lib):
        super().__init__()
        self.lib = lib
        self.refused = []

    def _probe(self):
        try:
            fd = _take_writer_lock(self.lib)
        except LibraryLockedError as exc:
            self.refused.append(str(exc))
        else:
            _drop_writer_lock(fd)

    def embed_texts(self, texts):
        self._probe()
        return super().embed_texts(texts)

    def embed_prepared(self, batch):
        self._probe()
        return super().embed_prepared(batch)


def _run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


READ_COMMANDS = [
    ("search", "red"),
    ("similar", "{photos}/red.png"),
    ("captions", "{photos}/red.png"),
    ("status",),
    ("folders",),
    ("duplicates",),
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_a_read_command_leaves_the_writer_lock_free(
    capsys, library, tmp_path, monkeypatch, command
):
    probe = LockProbe(library)
    opened = []
    real_open = Library.open.__func__

    def spy_open(cls, *args, **kwargs):
        lib = real_open(cls, *args, **kwargs)
        probe._probe()  # the lock as an index started right after the open would find it
        opened.append(kwargs.get("read_only", False))
        return lib

    monkeypatch.setattr(cli.library, "load_embedder", lambda spec=None, device=None: probe)
    monkeypatch.setattr(Library, "open", classmethod(spy_open))
    name, *rest = command
    rest = [r.format(photos=tmp_path / "photos") for r in rest]
    rc, _, err = _run(capsys, name, "--library", library, *rest)
    assert rc == 0, err
    assert opened == [True]
    assert probe.refused == []


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_a_held_writer_lock_neither_fails_nor_delays_a_read(
    capsys, library, tmp_path, monkeypatch, command
):
    monkeypatch.setattr(
        cli.library, "load_embedder", lambda spec=None, device=None: FakeEmbedder()
    )
    name, *rest = command
    rest = [r.format(photos=tmp_path / "photos") for r in rest]
    with Library.open(library, FakeEmbedder()):  # a writer (index, watch, the app) holds it
        start = time.monotonic()
        rc, out, err = _run(capsys, name, "--library", library, "--json", *rest)
        elapsed = time.monotonic() - start
    assert rc == 0, err
    assert json.loads(out) is not None
    assert elapsed < 2.0  # no wait on the lock (SQLite's busy timeout is 5 s)
