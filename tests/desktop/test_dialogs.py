"""The dialogs, driven through a real window on a real library (FakeEmbedder)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QMessageBox

from tests.desktop.conftest import wait_indexed


def test_folders_dialog_adds_and_removes(make_window, qtbot, photos, monkeypatch):
    win = make_window()
    dlg = win.open_folders_dialog()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(photos)))
    dlg.add_btn.click()
    wait_indexed(qtbot, win, 8)
    qtbot.waitUntil(lambda: dlg.folder_paths() == [str(photos.resolve())], timeout=5000)
    win.set_query("red")
    qtbot.waitUntil(lambda: win.model.mode == "search" and len(win.model.paths()) == 8, timeout=5000)

    dlg.select_path(str(photos.resolve()))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    dlg.remove_btn.click()
    qtbot.waitUntil(lambda: dlg.folder_paths() == [], timeout=5000)
    qtbot.waitUntil(lambda: win.model.rowCount() == 0, timeout=5000)
    assert Path(photos / "red_0.jpg").exists()  # files are never deleted


def test_thumbnail_size_setting_persists(make_window, tmp_path):
    win = make_window()
    win.set_thumb_size(200)
    assert win.results.delegate.thumb_size == 200
    win.shutdown()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert int(settings.value("view/thumb_size")) == 200


def test_rerank_setting_applies_from_the_next_start(make_window, tmp_path, monkeypatch):
    from desktop.dialogs import settings as prefs

    win = make_window()
    assert win.session.library.rerank is False  # the engine's default: off

    def accept_with_rerank(dlg):
        assert not dlg.rerank_check.isChecked()
        dlg.rerank_check.setChecked(True)
        return prefs.SettingsDialog.DialogCode.Accepted

    monkeypatch.setattr(prefs.SettingsDialog, "exec", accept_with_rerank)
    win.open_settings_dialog()
    assert "next start" in win.status.label.text()
    assert win.session.library.rerank is False  # this session keeps its library as opened
    win.shutdown()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert prefs.rerank(settings) is True

    again = make_window()
    assert again.session.library.rerank is True

    def accept_unchanged(dlg):
        assert dlg.rerank_check.isChecked()
        return prefs.SettingsDialog.DialogCode.Accepted

    monkeypatch.setattr(prefs.SettingsDialog, "exec", accept_unchanged)
    again.open_settings_dialog()
    assert prefs.rerank(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)) is True
