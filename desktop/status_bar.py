"""The window's status bar: a message, a progress bar, and the clickable failure count."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar, QWidget

from engine.library import IndexProgress, IndexReport

# A watcher pass over fewer files than this shows no progress bar.
QUIET_TOTAL = 20


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' if n != 1 else ''}"


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 45:
        return "less than a minute left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {max(1, minutes)} min left"
    h, m = divmod(minutes, 60)
    return f"about {h} h {m} min left" if m else f"about {h} h left"


def format_progress(done: int, total: int, eta_s: float | None) -> str:
    text = f"{done:,} / {total:,} photos"
    eta = format_eta(eta_s)
    return f"{text}, {eta}" if eta else text


class StatusBar(QStatusBar):
    failures_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(False)
        self.progress.setVisible(False)
        self.failures_btn = QPushButton()
        self.failures_btn.setFlat(True)
        self.failures_btn.setCursor(Qt.CursorShape.PointingHandCursor)
        self.failures_btn.setToolTip("Show the photos that could not be read, and why")
        self.failures_btn.clicked.connect(self.failures_clicked.emit)
        self.failures_btn.setVisible(False)
        self.failure_count = 0
        self._bank_busy = False  # the progress bar shows the caption-bank preparation
        self.addWidget(self.label, 1)
        self.addPermanentWidget(self.failures_btn)
        self.addPermanentWidget(self.progress)

    def set_text(self, text: str, timeout_ms: int = 0) -> None:
        """A lasting message, or (with a timeout) a passing one shown over it."""
        if timeout_ms:
            self.showMessage(text, timeout_ms)
        else:
            self.clearMessage()
            self.label.setText(text)

    def text(self) -> str:
        return self.currentMessage() or self.label.text()

    def show_busy(self, text: str | None = None) -> None:
        """Work of unknown length: the progress bar bounces."""
        self._bank_busy = False
        if text is not None:
            self.set_text(text)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)

    def show_done(self, text: str) -> None:
        """The work ended (well or not): `text` says how."""
        self.hide_progress()
        self.set_text(text)

    def show_progress(self, what: str, p: IndexProgress) -> None:
        self._bank_busy = False
        self.progress.setVisible(True)
        self.progress.setRange(0, max(1, p.total))
        self.progress.setValue(p.done)
        self.set_text(f"{what}: " + format_progress(p.done, p.total, p.eta_s))

    def hide_progress(self) -> None:
        self.progress.setVisible(False)
        self.progress.setRange(0, 100)

    def show_index_started(self, quiet: bool) -> None:
        if not quiet:
            self.show_busy("Looking for photos\u2026")

    def show_index_progress(self, p: IndexProgress, quiet: bool) -> None:
        if not quiet or p.total > QUIET_TOTAL:
            self.show_progress("Indexing", p)
        self.set_failures(max(self.failure_count, p.failed))

    def show_index_report(self, report: IndexReport, full: bool) -> None:
        """The end of a pass: totals after a full one, new photos (if any) after the watcher's."""
        self.hide_progress()
        if full:
            parts = [f"{report.indexed + report.unchanged + report.moved:,} photos indexed"]
            if report.indexed:
                parts.append(f"{report.indexed:,} new")
            if report.failed:
                parts.append(f"{len(report.failed):,} could not be read")
            self.set_text(", ".join(parts))
        elif report.indexed:
            self.set_text(f"Added {plural(report.indexed, 'new photo')}")

    def show_bank_progress(self, percent: int) -> None:
        """Background preparation of the caption suggestions (a model without them)."""
        if self.progress.isVisible() and not self._bank_busy:
            return  # indexing or a model switch owns the bar; they come first
        self.progress.setVisible(True)
        self.progress.setValue(percent)
        self.set_text(f"Preparing caption suggestions\u2026 {percent}%")
        self._bank_busy = True

    def show_bank_done(self, worked: bool) -> None:
        if self._bank_busy:
            self._bank_busy = False
            self.hide_progress()
            if worked:
                self.set_text("Caption suggestions ready")

    def set_failures(self, count: int) -> None:
        self.failure_count = count
        self.failures_btn.setText(f"\u26a0 {count:,} could not be read")
        self.failures_btn.setVisible(count > 0)
