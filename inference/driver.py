"""One driver for every lens family: positions → batches → rows, with the rows budget, cancellation, resuming
and progress done once. A family (a Consistency Lens, an NLA) brings only what differs: its explanation
length, its rows budget, its batch step and its metadata, registered under its `kind` (inference.families).

Deterministic: a row depends only on (lens, input, options, seed, position), never on the batch it ran in.
Incremental: rows are handed out per finished batch. Cancellation is checked between decode steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from .batching import BatchTicker, OnProgress, ticked_batches
from .errors import OptionError
from .families import family_of
from .inputs import prepare_input
from .limits import DEFAULT_LIMITS, Limits
from .metrics import norm_range, orig_forward
from .types import AnalysisInput, AnalysisOptions, AnalysisResult, BatchUpdate, OnBatch, ShouldCancel


@dataclass(frozen=True)
class Work:
    """What a batch step is given besides the lens, the input and its positions."""

    steps: int  # explanation tokens decoded per row
    budget: int  # rows (positions × k) per batch: also the chunk of the encoder's passes
    timings: dict[str, float]  # seconds per phase, added to by each step
    ticker: BatchTicker  # the batch's progress: ticker.step() per decode step, ticker.phase(name)

    def spent(self, t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
        """A batch's clock readings at the start and after decoding, encoding, salience and KL."""
        for phase, start, end in (
            ("decode", t0, t1),
            ("encode", t1, t2),
            ("salience", t2, t3),
            ("kl", t3, t4),
        ):
            self.timings[phase] += end - start


class Cancelled(Exception):
    """should_cancel() said so: the driver ends with the rows so far."""


def analyze(
    lens,
    inp: AnalysisInput,
    options: AnalysisOptions,
    *,
    remaining: list[int] | None = None,
    on_batch: OnBatch | None = None,
    should_cancel: ShouldCancel | None = None,
    rows_budget: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    on_progress: OnProgress | None = None,
    first_batch: int | None = None,
    max_new_tokens: int | None = None,
    prepared=None,
) -> AnalysisResult:
    """Rows for every analysed position (or, resuming, the `remaining` ones), handed out per batch through
    `on_batch` (returning False stops); the batches start at `first_batch` positions (inference.batching) and
    grow to the rows budget, and `on_progress` hears every decode step and phase in between. `prepared`: the
    input already tokenised by the caller (else it is, here). `max_new_tokens`: an NLA's explanation bound
    (its setting by default)."""
    family = family_of(lens)
    t_start = time.perf_counter()
    options.validate(limits)
    steps = family.steps(lens, max_new_tokens, limits)
    prepared = prepared or prepare_input(lens.tokenizer, inp, options, limits)
    todo = positions_to_run(prepared.positions, remaining)
    already = len(prepared.positions) - len(todo)
    budget = rows_budget or family.rows_budget(lens, steps)
    per_batch = max(1, budget // options.best_of_k)
    timings = {"activations": 0.0, "decode": 0.0, "encode": 0.0, "salience": 0.0, "kl": 0.0}

    def check_cancel():
        if should_cancel is not None and should_cancel():
            raise Cancelled

    rows: list[dict[str, Any]] = []
    status = "done"
    with torch.inference_mode():
        ids = torch.tensor(prepared.token_ids, device=lens.device)
        t0 = time.perf_counter()
        orig = orig_forward(lens, ids, full=options.kl)  # once per text
        norm_range(lens)  # once per loaded lens: one forward of a short text, with the activations' time
        timings["activations"] += time.perf_counter() - t0
        try:
            for batch, ticker in ticked_batches(
                todo,
                per_batch,
                first_batch,
                check_cancel,
                on_progress,
                done_before=already,
                total=len(prepared.positions),
                steps=steps,
            ):
                new_rows = family.batch(
                    lens, prepared, orig, batch, options, Work(steps, budget, timings, ticker)
                )
                rows.extend(new_rows)
                update = BatchUpdate(rows=new_rows, done=already + len(rows), total=len(prepared.positions))
                if on_batch is not None and on_batch(update) is False:
                    status = "stopped" if len(rows) < len(todo) else "done"
                    break
        except Cancelled:
            status = "cancelled"
    timings["total"] = time.perf_counter() - t_start
    metadata = family.metadata(lens, prepared, options, steps)
    return AnalysisResult(status=status, rows=rows, metadata=metadata, timings=timings)


def positions_to_run(all_positions: list[int], requested: list[int] | None) -> list[int]:
    """The positions still to compute: all of them, or those of `requested` (a resume), which must be some."""
    if requested is None:
        return list(all_positions)
    allowed = set(all_positions)
    bad = sorted(set(requested) - allowed)
    if bad:
        raise OptionError(f"positions {bad[:5]} are outside the analysed range of this input")
    return sorted(set(requested))
