"""How a job's positions are cut into batches, and the progress a batch reports while it runs; shared by both
lens families' drivers.

The first batch is small and each next one doubles up to the rows budget: a big first batch would keep the
first row back for the whole batch's work, a small one costs little since the batches after it grow fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DEFAULT_FIRST_BATCH = 2  # positions; LENSWEB_FIRST_BATCH overrides it
# Where a batch's phases start, as shares of its work: decoding is most of it (measured on the demo lens:
# 70-85 % of a batch's time at k = 8, salience off).
PHASE_STARTS = {"decoding": 0.0, "encoding": 0.8, "salience": 0.9, "kl": 0.95}


def first_batch_size() -> int:
    return max(1, int(os.environ.get("LENSWEB_FIRST_BATCH") or DEFAULT_FIRST_BATCH))


def batches(todo: list[int], largest: int, first: int | None = None) -> Iterator[list[int]]:
    """`todo` in order, cut into batches of `first` positions, then twice as many each time, up to `largest`."""
    size = max(1, min(largest, first or first_batch_size()))
    start = 0
    while start < len(todo):
        yield todo[start : start + size]
        start += size
        size = next_size(size, largest)


@dataclass(frozen=True)
class Progress:
    """Handed to `on_progress` while a batch runs: the phase it is in and how many of the job's positions
    are done, counting the running batch's finished share (so `done` moves between two batches' rows)."""

    phase: str  # one of PHASE_STARTS
    done: float
    total: int


OnProgress = Callable[[Progress], None]


def next_size(size: int, largest: int) -> int:
    """The size after a batch of `size`: twice it, up to `largest` (the rule `batches` follows)."""
    return min(largest, size * 2)


@dataclass(frozen=True)
class Share:
    """One job's part of a running batch, for its progress: `size` of its positions, after `done_before`
    of its `total` were done."""

    on_progress: OnProgress | None
    done_before: int
    size: int
    total: int


class BatchTicker:
    """Check for a cancel and report progress at every decode step and phase of one batch, to each job whose
    positions it holds (inference.sharing): the families call `step` before each decode step and `phase`
    between phases."""

    def __init__(self, check_cancel: Callable[[], None], shares: list[Share], *, steps: int):
        self._check_cancel, self._shares, self._steps = check_cancel, shares, max(1, steps)
        self._step = 0

    def step(self) -> None:
        """One decode step (called before each, as the cancel check was)."""
        self._check_cancel()
        share = PHASE_STARTS["encoding"] * min(self._step, self._steps) / self._steps
        self._step += 1
        self._report("decoding", share)

    def phase(self, name: str) -> None:
        self._check_cancel()
        self._report(name, PHASE_STARTS[name])

    def _report(self, phase: str, share: float) -> None:
        for part in self._shares:
            if part.on_progress is not None:
                part.on_progress(Progress(phase, part.done_before + share * part.size, part.total))
