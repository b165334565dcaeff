"""The one wall clock: aware UTC time."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, as an aware UTC datetime (never a naive local one)."""
    return dt.datetime.now(dt.timezone.utc)
