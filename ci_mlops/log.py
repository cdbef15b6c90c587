"""Progress output. Messages go to stderr so that stdout stays clean for results."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def info(message: str) -> None:
    """One line of progress."""
    print(f"ci-mlops: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Something the user should know about that does not stop the step."""
    print(f"ci-mlops: warning: {message}", file=sys.stderr, flush=True)


@contextmanager
def timed(what: str) -> Iterator[None]:
    """Log ``what`` when it starts and how long it took when it ends."""
    info(f"{what} ...")
    start = time.perf_counter()
    yield
    info(f"{what}: done in {time.perf_counter() - start:.1f}s")
