"""`TaskRunner.run_task`: work on the pool, callbacks on the GUI thread."""

from __future__ import annotations

import logging
import threading

from desktop.tasks import TaskCancelled, TaskRunner
from engine.errors import FolderNotFoundError


def test_result_arrives_on_the_gui_thread_and_the_work_ran_elsewhere(qtbot):
    runner = TaskRunner()
    gui = threading.get_ident()
    worker_ident: list[int] = []
    got: list[tuple[int, int]] = []

    def work(_task):
        worker_ident.append(threading.get_ident())
        return 6 * 7

    runner.run_task("answer", work, on_result=lambda r: got.append((r, threading.get_ident())))
    qtbot.waitUntil(lambda: bool(got), timeout=3000)
    assert got == [(42, gui)]
    assert worker_ident and worker_ident[0] != gui
    qtbot.waitUntil(lambda: not runner.active(), timeout=3000)  # forgotten once done
    assert runner.shutdown(3000)


def test_errors_arrive_as_text_and_only_unexpected_ones_log_a_traceback(qtbot, caplog):
    runner = TaskRunner()
    errors: list[str] = []
    results: list[object] = []

    def user_error(_task):
        raise FolderNotFoundError("folder not found: /nowhere")

    def bug(_task):
        raise KeyError("x")

    def nameless(_task):
        raise RuntimeError()

    with caplog.at_level(logging.ERROR, logger="desktop.tasks"):
        for fn in (user_error, bug, nameless):
            runner.run_task(fn.__name__, fn, on_result=results.append, on_error=errors.append)
        qtbot.waitUntil(lambda: len(errors) == 3, timeout=3000)
    assert sorted(errors) == sorted(["folder not found: /nowhere", "'x'", "RuntimeError"])
    assert results == []
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "bug failed" in logged and "nameless failed" in logged
    assert "user_error" not in logged  # the user's mistake is not a traceback in the log
    runner.shutdown(3000)


def test_cancelled_task_calls_back_nothing_and_shutdown_waits_for_it(qtbot):
    runner = TaskRunner()
    started = threading.Event()
    stopped = threading.Event()
    calls: list[object] = []

    def loop(task):
        started.set()
        while True:
            try:
                task.raise_if_cancelled()
            except TaskCancelled:
                stopped.set()
                raise
            task.cancel.wait(0.01)

    runner.run_task("loop", loop, on_result=calls.append, on_error=calls.append)
    assert started.wait(3)
    assert [t.name for t in runner.active()] == ["loop"]
    assert runner.shutdown(5000)  # sets cancel, then waits for the worker
    assert stopped.is_set()
    qtbot.wait(50)  # anything queued would be delivered now
    assert calls == []


def test_progress_is_throttled_but_the_final_report_always_arrives(qtbot):
    runner = TaskRunner()
    seen: list[int] = []
    done: list[object] = []

    def busy(task):
        for i in range(1, 2001):
            task.report(i, force=i == 2000)
        return "ok"

    runner.run_task("busy", busy, on_result=done.append, on_progress=seen.append)
    qtbot.waitUntil(lambda: done == ["ok"], timeout=5000)
    assert seen[-1] == 2000
    assert len(seen) < 100  # 2,000 reports in well under a second: a handful get through
    assert seen == sorted(seen)
    runner.shutdown(3000)
