"""Waiting for something to happen, with a deadline, instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

T = TypeVar("T")


async def wait_for(check: Callable[[], T], *, what: str, timeout: float = 30.0, every: float = 0.05) -> T:
    """Poll `check` until it returns something truthy, and return that; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        await asyncio.sleep(every)


def wait_until(check: Callable[[], T], *, what: str, timeout: float = 30.0, every: float = 0.05) -> T:
    """The blocking form of :func:`wait_for`, for tests that are not coroutines."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)
