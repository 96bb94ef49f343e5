"""Application start-up."""

from __future__ import annotations

import sys

import pytest

from desktop.app import missing_display_message


def test_no_display_gives_advice_instead_of_a_qt_abort():
    if not sys.platform.startswith("linux"):
        pytest.skip("the display check applies to Linux only")
    assert "no display found" in missing_display_message({})
    assert missing_display_message({"DISPLAY": ":0"}) is None
    assert missing_display_message({"QT_QPA_PLATFORM": "offscreen"}) is None
