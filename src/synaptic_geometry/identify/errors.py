"""The identify tool's error type and the helper that lists offending items in its messages."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MeasurementError", "show"]


class MeasurementError(ValueError):
    """Input the tool cannot use; the message says what was wrong and what is accepted."""


def show(items: Sequence, limit: int = 8) -> str:
    """``items`` as a comma-separated list, the first ``limit`` of them and how many in all."""
    items = list(items)
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
