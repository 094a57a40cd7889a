"""Ctrl-C in a test: SIGINT delivered to the main thread, as a terminal delivers it, at a chosen moment."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

from icegate import pipeline


def ctrl_c() -> None:
    """SIGINT to the main thread, from any thread: Python raises KeyboardInterrupt there, wherever it waits."""
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


def ctrl_c_as_the_first_load_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C once, while the first file to load is loading (on a worker thread, which then goes on)."""
    real_load = pipeline.run_load
    first = threading.Lock()

    def load(*args: Any, **kwargs: Any) -> Any:
        if first.acquire(blocking=False):  # never released: only the first load sends it
            ctrl_c()
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_load", load)
