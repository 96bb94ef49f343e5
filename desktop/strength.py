"""How strong a match is, in words and dots people can read instead of raw scores."""

from __future__ import annotations

LEVELS = {3: "strong match", 2: "good match", 1: "weak match"}
FILLED, EMPTY = "\u25cf", "\u25cb"  # ● ○


def strength_dots(level: int | None) -> str:
    """Three dots, `level` of them filled: "●●○"; "" when there is no level (0: not a
    search result, e.g. browsing)."""
    if not level:
        return ""
    level = max(0, min(3, int(level)))
    return FILLED * level + EMPTY * (3 - level)


def strength_text(level: int | None) -> str:
    """ "●●○ good match", or "" when there is no level."""
    if not level:
        return ""
    return f"{strength_dots(level)} {LEVELS[max(1, min(3, int(level)))]}"
