"""The core's port to a result cache: what the submit path asks before computing (lensweb.cache plugs
itself in from its AppConfig.ready(); without it every submission is computed), and the marks a copied result
carries.
"""

from __future__ import annotations


class NoResultStore:
    """What the core asks a result cache at submit. lensweb.cache plugs itself in (its AppConfig.ready());
    without it every submission is computed."""

    @staticmethod
    def key_for(spec, prepared, options, owner=None):
        return None

    @staticmethod
    def lookup(key):
        return None

    @staticmethod
    def check_daily_cached_positions(user, adding: int) -> None:
        return None

    @staticmethod
    def attach(job, key, hit) -> None:
        return None

    @staticmethod
    def warm(spec) -> None:
        """Compute what key_for needs of a lens ahead of the first submission (web start-up)."""
        return None

    @staticmethod
    def prefix_sources(owner, lens_id: str, placement: dict, keyed: dict, limit: int) -> list:
        """Cached results `owner` may reuse a prefix of: (label, token ids, rows loader) each."""
        return []

    @staticmethod
    def detach(job) -> None:
        """`job` no longer computes the result its key names (it grew): store nothing under that key."""
        return None


result_store = NoResultStore()


# What a result copied from the cache, or waiting for another job's, says of itself (lensweb.cache writes
# them): not so once it grows (analyses.growth), never stored with a cached result.
COPY_MARKS = ("cached", "computed_seconds", "followed")


def use_result_store(store) -> None:
    global result_store
    result_store = store
