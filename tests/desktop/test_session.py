"""LibrarySession's scheduling, on a real Library with FakeEmbedder and no window."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from desktop.session import IndexRun, LibrarySession, SearchRequest
from engine.errors import ModelLoadError
from engine.library import Library
from engine.testing import FakeEmbedder
from tests.desktop.conftest import fake_factory, write_photo

SIGNALS = (
    "opened", "open_failed", "status_changed", "folders_changed", "folders_needed",
    "folder_failed", "files_changed", "index_started", "index_progress", "index_finished",
    "index_failed", "results_ready", "search_failed", "captions_progress", "captions_ready",
    "captions_failed", "failures_ready", "model_switch_started", "model_switch_progress",
    "model_switched", "model_switch_failed", "browse_ready", "browse_page_ready",
    "duplicates_ready", "caption_bank_progress", "caption_bank_done",
)


class GatedEmbedder(FakeEmbedder):
    """Embeds images only once `gate` is set, so a test can act while a pass is running."""

    def __init__(self, gate: threading.Event, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.gate = gate

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        assert self.gate.wait(20), "the test never opened the gate"
        return super().embed_prepared(batch)


class SlowQueryEmbedder(FakeEmbedder):
    """Answers a text containing "slow" only once `gate` is set."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if any("slow" in t for t in texts):
            assert self.gate.wait(20), "the test never opened the gate"
        return super().embed_texts(texts)


class Events(list):
    """(signal name, args) for every signal the session emitted, in order."""

    def named(self, name: str) -> list[tuple]:
        return [args for n, args in self if n == name]

    def order(self, *names: str) -> list[str]:
        return [n for n, _ in self if n in names]


def record(session: LibrarySession) -> Events:
    events = Events()
    for name in SIGNALS:
        getattr(session, name).connect(lambda *args, n=name: events.append((n, args)))
    return events


@pytest.fixture
def make_session(qtbot, tmp_path: Path):  # type: ignore[no-untyped-def]
    sessions: list[LibrarySession] = []

    def make(
        factory: Callable[[str], FakeEmbedder] = fake_factory, library: Path | None = None
    ) -> tuple[LibrarySession, Events]:
        session = LibrarySession(library or tmp_path / "library", factory, watch=False)
        sessions.append(session)
        events = record(session)
        session.open("")
        qtbot.waitUntil(lambda: session.library is not None, timeout=15000)
        return session, events

    yield make
    for session in sessions:
        session.shutdown()


def colour_folder(root: Path, n_per_colour: int = 2) -> Path:
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    seed = 0
    for name, rgb in colours.items():
        for i in range(n_per_colour):
            write_photo(root / f"{name}_{i}.jpg", rgb, seed)
            seed += 1
    return root


def wait_idle(qtbot, session: LibrarySession, timeout: int = 20000) -> None:  # type: ignore[no-untyped-def]
    qtbot.waitUntil(
        lambda: not session.is_indexing() and not session.is_switching_model(), timeout=timeout
    )


def test_first_status_without_folders_asks_for_them_and_with_folders_indexes(
    make_session, qtbot, tmp_path
):
    session, events = make_session(library=tmp_path / "empty")
    qtbot.waitUntil(lambda: bool(events.named("folders_needed")), timeout=5000)
    assert events.named("opened") == [(False,)]
    assert events.named("index_started") == []

    photos = colour_folder(tmp_path / "photos")
    with Library.open(tmp_path / "has-folder", FakeEmbedder()) as lib:
        lib.add_folder(photos)
    session2, events2 = make_session(library=tmp_path / "has-folder")
    wait_idle(qtbot, session2)
    qtbot.waitUntil(lambda: session2.photo_count == 6, timeout=10000)
    (run,), = events2.named("index_started")
    assert run.full
    assert events2.named("folders_needed") == []


def test_watcher_paths_wait_for_the_running_pass_then_go_in_one_more_pass(
    make_session, qtbot, tmp_path
):
    gate = threading.Event()
    folder = colour_folder(tmp_path / "photos")
    session, events = make_session(factory=lambda _c: GatedEmbedder(gate))
    session.add_folder(str(folder))
    qtbot.waitUntil(session.is_indexing, timeout=5000)
    new = [write_photo(folder / f"new_{i}.jpg", (200, 200, 20), seed=50 + i) for i in range(2)]
    session.index_changed_paths([str(new[1])])
    session.index_changed_paths([str(new[0])])
    assert len(events.named("index_started")) == 1  # queued behind the running pass
    gate.set()
    wait_idle(qtbot, session)
    qtbot.waitUntil(lambda: session.photo_count == 8, timeout=10000)

    full, paths = (args[0] for args in events.named("index_started"))
    assert full.full and paths.paths == tuple(sorted(str(p) for p in new))
    assert paths.quiet  # two files: no progress bar
    assert events.named("files_changed") == [(sorted(str(p) for p in new),)]
    # One pass at a time: the second starts only after the first finished.
    assert events.order("index_started", "index_finished") == [
        "index_started", "index_finished", "index_started", "index_finished"
    ]


def test_a_wanted_full_reconcile_supersedes_queued_paths(make_session, qtbot, tmp_path):
    gate = threading.Event()
    folder = colour_folder(tmp_path / "photos")
    session, events = make_session(factory=lambda _c: GatedEmbedder(gate))
    session.add_folder(str(folder))
    qtbot.waitUntil(session.is_indexing, timeout=5000)
    session.index_changed_paths([str(folder / "red_0.jpg")])
    session.start_index()
    gate.set()
    wait_idle(qtbot, session)
    runs: list[IndexRun] = [args[0] for args in events.named("index_started")]
    assert [r.full for r in runs] == [True, True]
    assert events.named("files_changed") == []


def test_switching_model_mid_pass_pauses_indexing_and_resumes_after(
    make_session, qtbot, tmp_path
):
    gate = threading.Event()
    folder = tmp_path / "many"
    for i in range(70):  # the engine embeds in batches of 32: the pass spans three
        write_photo(folder / f"p{i:02d}.jpg", (200, 3 * i, 40), seed=i, size=32)

    def factory(checkpoint: str) -> FakeEmbedder:
        return FakeEmbedder(seed=7, model_id="fake-other") if checkpoint == "other" else GatedEmbedder(gate)

    session, events = make_session(factory=factory)
    session.add_folder(str(folder))
    qtbot.waitUntil(session.is_indexing, timeout=5000)
    session.switch_model("other")
    assert session.is_switching_model()
    gate.set()
    wait_idle(qtbot, session, timeout=30000)
    qtbot.waitUntil(lambda: session.photo_count == 70, timeout=10000)

    assert session.model_id == "fake-other" == session.library.embedder.model_id
    assert events.named("model_switched") == [("other", "fake-other")]
    order = events.order("index_started", "index_finished", "model_switch_started", "model_switched")
    # The running pass stops, nothing indexes during the switch, a full pass follows it.
    assert order == [
        "index_started", "model_switch_started", "index_finished", "model_switched",
        "index_started", "index_finished",
    ]
    assert events.named("index_started")[-1][0].full


def test_a_late_answer_to_an_older_search_is_dropped(make_session, qtbot, tmp_path):
    gate = threading.Event()
    session, events = make_session(factory=lambda _c: SlowQueryEmbedder(gate))
    session.add_folder(str(colour_folder(tmp_path / "photos")))
    qtbot.waitUntil(lambda: session.photo_count == 6 and not session.is_indexing(), timeout=10000)
    session.search(SearchRequest("text", "slow red"))
    session.search(SearchRequest("text", "blue"))
    qtbot.waitUntil(lambda: bool(events.named("results_ready")), timeout=5000)
    gate.set()
    qtbot.waitUntil(lambda: not session.runner.active("search"), timeout=5000)
    qtbot.wait(50)  # a late answer, were it passed on, would be delivered by now

    # (A re-query after indexing may repeat the current search, never the old one.)
    assert {request.query for request, _, _ in events.named("results_ready")} == {"blue"}
    (request, result, _), = [e for e in events.named("results_ready") if not e[2]]
    assert {Path(h.path).name for h in result.hits[:2]} == {"blue_0.jpg", "blue_1.jpg"}
    assert session.last_result is result and session.last_request == request


def test_captions_report_bank_progress_and_stop_at_the_next_chunk_on_cancel(qtbot, tmp_path):
    class Lib:
        """Stands in for Library: the caption bank embeds in 8 chunks."""

        def __init__(self, on_first_chunk: Callable[[], None] = lambda: None) -> None:
            self.chunks = 0
            self.on_first_chunk = on_first_chunk
            self.lookups = 0

        def caption_bank_ready(self) -> bool:
            return self.chunks >= 8

        def prepare_caption_bank(self, progress: Callable[[float], None]) -> None:
            for done in range(1, 9):
                self.chunks += 1
                if self.chunks == 1:
                    self.on_first_chunk()
                progress(done / 8)

        def similar_captions(self, path: str, top_k: int) -> list[str]:
            self.lookups += 1
            return ["a caption"]

        def close(self) -> None:
            pass

    session = LibrarySession(tmp_path / "unused", fake_factory, watch=False)
    events = record(session)
    lib = Lib()
    session.library = lib  # type: ignore[assignment]
    session.find_captions("/p.jpg")
    qtbot.waitUntil(lambda: bool(events.named("captions_ready")), timeout=3000)
    assert events.named("captions_ready") == [("/p.jpg", ["a caption"])]
    # The panel and the status bar see the same one preparation's progress.
    assert ("/p.jpg", 100) in events.named("captions_progress")
    assert (100,) in events.named("caption_bank_progress")
    assert events.named("caption_bank_done") == [(True,)]
    # Prepared once: the next photo is one lookup, no second preparation.
    events.clear()
    session.find_captions("/p2.jpg")
    qtbot.waitUntil(lambda: bool(events.named("captions_ready")), timeout=3000)
    assert lib.chunks == 8 and lib.lookups == 2 and not events.named("captions_progress")

    session2 = LibrarySession(tmp_path / "unused2", fake_factory, watch=False)
    events2 = record(session2)
    quitting = Lib(on_first_chunk=session2.runner.cancel_all)  # quit during the first chunk
    session2.library = quitting  # type: ignore[assignment]
    session2.find_captions("/q.jpg")
    qtbot.waitUntil(lambda: not session2.runner.active("prepare-captions"), timeout=3000)
    qtbot.wait(50)
    assert quitting.chunks == 1  # stopped at the next chunk boundary
    assert events2.named("captions_ready") == [] and events2.named("captions_failed") == []
    session.shutdown()
    session2.shutdown()


def test_a_panel_request_during_the_background_preparation_waits_for_it_not_behind_it(
    qtbot, tmp_path
):
    """Issue 14 #1: the panel's request queued behind the warm-up and showed nothing."""
    import threading

    gate = threading.Event()

    class Lib:
        def __init__(self) -> None:
            self.prepared = 0

        def caption_bank_ready(self) -> bool:
            return self.prepared > 0

        def prepare_caption_bank(self, progress: Callable[[float], None]) -> None:
            progress(0.25)
            gate.wait(5)
            progress(1.0)
            self.prepared += 1

        def similar_captions(self, path: str, top_k: int) -> list[str]:
            return ["a caption"]

        def close(self) -> None:
            pass

    session = LibrarySession(tmp_path / "unused", fake_factory, watch=False)
    events = record(session)
    lib = Lib()
    session.library = lib  # type: ignore[assignment]
    session._prepare_captions()  # the background warm-up after the first full pass
    qtbot.waitUntil(lambda: (25,) in events.named("caption_bank_progress"), timeout=3000)
    session.find_captions("/p.jpg")
    gate.set()
    qtbot.waitUntil(lambda: bool(events.named("captions_ready")), timeout=3000)
    assert lib.prepared == 1  # one preparation served both
    assert ("/p.jpg", 100) in events.named("captions_progress")
    session.shutdown()


def test_a_model_that_cannot_load_is_reported_once(qtbot, tmp_path):
    def broken(_checkpoint: str) -> FakeEmbedder:
        raise ModelLoadError("the default model /x/default_model.pt is missing")

    session = LibrarySession(tmp_path / "library", broken, watch=False)
    events = record(session)
    session.open("")
    qtbot.waitUntil(lambda: bool(events.named("open_failed")), timeout=5000)
    assert events.named("open_failed") == [("the default model /x/default_model.pt is missing",)]
    assert session.library is None and events.named("opened") == []
    session.shutdown()


def test_quitting_while_the_model_loads_closes_the_library_it_then_opens(qtbot, tmp_path):
    gate = threading.Event()

    def slow(_checkpoint: str) -> FakeEmbedder:
        assert gate.wait(20)
        return FakeEmbedder()

    session = LibrarySession(tmp_path / "library", slow, watch=False)
    events = record(session)
    session.open("")
    threading.Timer(0.3, gate.set).start()
    session.shutdown()  # waits for the open task, then must close what it opened
    qtbot.wait(50)
    assert events.named("opened") == []
    with Library.open(tmp_path / "library", FakeEmbedder()):  # the lock was released
        pass


def test_with_the_bank_shipped_captions_are_one_lookup_and_no_preparation(qtbot, tmp_path):
    class Lib:
        prepared = 0

        def caption_bank_ready(self) -> bool:
            return True  # the model ships its caption vectors

        def prepare_caption_bank(self, progress: Callable[[float], None]) -> None:
            self.prepared += 1

        def similar_captions(self, path: str, top_k: int) -> list[str]:
            return ["a caption"]

        def close(self) -> None:
            pass

    session = LibrarySession(tmp_path / "unused", fake_factory, watch=False)
    events = record(session)
    lib = Lib()
    session.library = lib  # type: ignore[assignment]
    session._check_bank()  # what opening the library does
    qtbot.waitUntil(lambda: session._bank_ready, timeout=3000)
    session.find_captions("/p.jpg")
    qtbot.waitUntil(lambda: bool(events.named("captions_ready")), timeout=3000)
    session._prepare_captions()  # the after-first-pass warm-up finds nothing to do
    qtbot.wait(100)
    assert lib.prepared == 0
    assert not events.named("captions_progress") and not events.named("caption_bank_progress")
    session.shutdown()


def test_a_query_entered_just_before_captions_is_among_them(qtbot, tmp_path):
    """Enter stores the query on a worker; a caption lookup right after must not overtake it
    (it did under load: the panel then missed the query the user had just typed)."""
    stored: list[str] = []
    order: list[str] = []

    class Lib:
        def caption_bank_ready(self) -> bool:
            return True

        def remember_query(self, query: str) -> None:
            threading.Event().wait(0.3)  # a slow write, as on a busy disk
            stored.append(query)
            order.append("stored")

        def similar_captions(self, path: str, top_k: int) -> list[str]:
            order.append("looked up")
            return list(reversed(stored))

        def close(self) -> None:
            pass

    session = LibrarySession(tmp_path / "unused", fake_factory, watch=False)
    events = record(session)
    session.library = Lib()  # type: ignore[assignment]
    session._check_bank()
    qtbot.waitUntil(lambda: session._bank_ready, timeout=3000)
    session.remember_query("red")
    session.remember_query("green")
    session.find_captions("/p.jpg")
    qtbot.waitUntil(lambda: bool(events.named("captions_ready")), timeout=5000)
    assert events.named("captions_ready")[0][1] == ["green", "red"]
    assert order.index("looked up") > order.index("stored") and stored == ["red", "green"]
    session.shutdown()
