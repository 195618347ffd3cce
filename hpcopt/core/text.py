"""Numbers as people read them in tables, titles and messages."""

from __future__ import annotations

# (unit, seconds in it, the shortest duration written in it)
_UNITS = (("d", 86400.0, 172800.0), ("h", 3600.0, 7200.0), ("min", 60.0, 120.0), ("s", 1.0, 0.0))


def duration(seconds: float, significant: int | None = None) -> str:
    """``seconds`` in the largest unit that leaves at least two of it (``"90 s"``,
    ``"5 min"``, ``"3.0 h"``, ``"2.5 d"``; negative reads as 0). ``significant`` digits if
    given (``duration(450, 3)`` is ``"7.5 min"``); else whole seconds and minutes, and
    hours and days to one decimal."""
    seconds = max(0.0, seconds)
    for unit, size, above in _UNITS:
        if seconds >= above:
            value = seconds / size
            if significant is not None:
                return f"{value:.{significant}g} {unit}"
            return f"{value:.0f} {unit}" if unit in ("s", "min") else f"{value:.1f} {unit}"
    raise AssertionError("unreachable: the last unit takes every duration")
