"""django-ratelimit counts in fixed windows (a "3/m" window ends on a minute edge plus a per-key offset):
a test's few requests that straddle an edge start a fresh count, and the 429 the test expects never comes
(CI saw it once). Within a test the windows' clock stands still, so a test's requests share one window."""

from __future__ import annotations

import time
import types

import django_ratelimit.core


def still_clock() -> types.SimpleNamespace:
    """A stand-in for django-ratelimit's `time` module whose time() is the moment it was made."""
    now = time.time()
    return types.SimpleNamespace(time=lambda: now)


def hold_rate_windows() -> None:
    """From now on, in this process, django-ratelimit's clock stands still (a subprocess' script calls this;
    the suite's fixture sets still_clock() through monkeypatch, which puts the real one back)."""
    django_ratelimit.core.time = still_clock()
