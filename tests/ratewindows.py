"""django-ratelimit counts in fixed windows (a "3/m" window ends on a minute edge plus a per-key offset):
a test's few requests that straddle an edge start a fresh count, and the 429 the test expects never comes
(CI saw it once). Within a test the windows' clock stands still, so a test's requests share one window."""

from __future__ import annotations

import time
import types

import django_ratelimit.core


def hold_rate_windows() -> None:
    """From now on (in this process) django-ratelimit reads the time it was called at."""
    now = time.time()
    django_ratelimit.core.time = types.SimpleNamespace(time=lambda: now)
