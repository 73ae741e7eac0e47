"""Batches filled across requests: the positions of several texts analysed with one lens and one set of
options go through the family's batch step together, so that concurrent users share the device instead of
waiting in line. The seed may differ (sampling draws per position from each text's own seed); every other
option that changes the work must match (`batch_key`).

A row depends only on (lens, input, options, seed, position), never on the batch it ran in, so each text's
rows equal its rows run alone. A Task is one text's analysis: its positions to do, where its rows and progress
go, its cancel check. SharedBatches fills each batch round-robin between the tasks' owners, each task's share
growing as a lone job's batches do (inference.batching: a small first batch, then doubling), hands each task
its own rows, and lets a task that is cancelled, stopped, done or failed leave without disturbing the others.
The driver's analyze() is one task alone.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from .batching import BatchTicker, OnProgress, Share, first_batch_size, next_size
from .errors import LensError
from .families import family_of
from .metrics import OrigPass, kl_divergences
from .rows import Row
from .sampling import uniforms_for_rows
from .types import AnalysisOptions, AnalysisResult, BatchUpdate, OnBatch, PreparedInput, ShouldCancel

PHASES = ("activations", "decode", "encode", "salience", "kl")
# Options that may differ between texts sharing a batch: each item samples from its own text's seed; the
# others choose a text's positions, which its task holds.
PER_TEXT = ("seed", "positions", "last_n_messages")


def batch_key(options: AnalysisOptions, steps: int) -> tuple:
    """What texts sharing a batch must agree on: every option but PER_TEXT, and the explanation length."""
    return (steps, *sorted((k, v) for k, v in options.to_dict().items() if k not in PER_TEXT))


@dataclass(frozen=True)
class Work:
    """What a batch step is given besides the lens, its items and the options."""

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
    """Every task of a running batch was cancelled: the batch stops between decode steps."""


@dataclass(eq=False)
class Task:
    """One text's analysis in shared batches. `todo`: its positions still to compute, in order; `owner`: whom
    the round-robin turns are between (a user); `status`: running, then done, stopped (on_batch said so),
    cancelled or failed (`error`: the engine's, for this text alone)."""

    prepared: PreparedInput
    orig: OrigPass
    options: AnalysisOptions
    steps: int
    todo: list[int]
    owner: Hashable = None
    on_batch: OnBatch | None = None
    on_progress: OnProgress | None = None
    should_cancel: ShouldCancel | None = None
    first_batch: int | None = None
    metadata: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    status: str = "running"
    error: LensError | None = None
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    started: float = field(default_factory=time.perf_counter)
    size: int = 0  # its share of the next batch it joins (0: not yet in one)
    partners: set = field(default_factory=set)  # the other tasks' ids it shared a batch with

    def __post_init__(self):
        self.done_before = len(self.prepared.positions) - len(self.todo)

    @property
    def total(self) -> int:
        return len(self.prepared.positions)

    @property
    def running(self) -> bool:
        return self.status == "running"

    def cancelled_now(self) -> bool:
        if self.running and self.should_cancel is not None and self.should_cancel():
            self.status = "cancelled"
        return self.status == "cancelled"

    def result(self) -> AnalysisResult:
        """The rows it got and how it ended (running counts as done: an unfinished task is never asked)."""
        timings = {**self.timings, "total": time.perf_counter() - self.started}
        status = "done" if self.running else self.status
        return AnalysisResult(status=status, rows=self.rows, metadata=self.metadata, timings=timings)


@dataclass
class Items:
    """A batch's positions, item i being positions[i] of tasks[i]'s text, grouped by task (`groups`: each
    task with its slice of the items), with their activations and tokens gathered for the family's step."""

    tasks: list[Task]
    positions: list[int]
    groups: list[tuple[Task, slice]]
    acts: torch.Tensor  # (B, d) float32
    ids: torch.Tensor  # (B,) the token at each position

    @classmethod
    def gather(cls, picks: dict[Task, list[int]]) -> Items:
        tasks, positions, groups, acts, ids = [], [], [], [], []
        for task, taken in picks.items():
            groups.append((task, slice(len(positions), len(positions) + len(taken))))
            tasks += [task] * len(taken)
            positions += taken
            at = torch.tensor(taken, device=task.orig.acts.device)
            acts.append(task.orig.acts[at])
            ids.append(task.orig.ids[at])
        return cls(tasks, positions, groups, torch.cat(acts), torch.cat(ids))

    def __len__(self) -> int:
        return len(self.positions)

    def token(self, i: int) -> str:
        return self.tasks[i].prepared.tokens[self.positions[i]]

    def token_id(self, i: int) -> int:
        return self.tasks[i].prepared.token_ids[self.positions[i]]

    def uniforms(self, k: int, steps: int) -> torch.Tensor:
        """The sampler's uniforms, rows item-major (row = i·k + j), each item's from its own text's seed."""
        return torch.cat(
            [uniforms_for_rows(t.options.seed, self.positions[s], k, steps) for t, s in self.groups]
        )

    def kl(self, lens, recon: torch.Tensor) -> torch.Tensor:
        """KL per item, each against its own text's original pass (recon: one reconstruction per item)."""
        return torch.cat([kl_divergences(lens, t.orig, self.positions[s], recon[s]) for t, s in self.groups])


class SharedBatches:
    """Tasks of one lens and one batch_key, run batch by batch; tasks may join between batches (add)."""

    def __init__(self, lens, options: AnalysisOptions, steps: int, rows_budget: int | None = None):
        self.lens, self.options, self.steps = lens, options, steps
        self.family = family_of(lens)
        self.key = batch_key(options, steps)
        self.budget = rows_budget or self.family.rows_budget(lens, steps)
        self.per_batch = max(1, self.budget // options.best_of_k)  # positions per batch
        self.tasks: list[Task] = []
        self._turns: list[Hashable] = []  # owners, the next one to be served first
        self.batches: list[dict[Task, list[int]]] = []  # what each batch held (read by tests and benchmarks)

    def fits(self, options: AnalysisOptions, steps: int) -> bool:
        return batch_key(options, steps) == self.key

    def add(self, task: Task) -> None:
        if not self.fits(task.options, task.steps):
            raise ValueError("a task joins only batches of its own options and explanation length")
        self.tasks.append(task)
        if task.owner not in self._turns:
            self._turns.append(task.owner)
        if not task.todo:
            task.status = "done"

    @property
    def running(self) -> list[Task]:
        return [t for t in self.tasks if t.running]

    def step(self) -> list[Task]:
        """One batch over the running tasks' next positions; returns the tasks that ended (and leave)."""
        for task in self.running:
            task.cancelled_now()
        picks = self._fill()
        if picks:
            self._run(picks)
        ended = [t for t in self.tasks if not t.running]
        self.tasks = [t for t in self.tasks if t.running]
        live = {t.owner for t in self.tasks}
        self._turns = [o for o in self._turns if o in live]
        return ended

    def _fill(self) -> dict[Task, list[int]]:
        """The next batch: owners take turns, one position each, from their tasks' shares (a task's first
        share is small, each next one twice the last), until the batch is full or every share is taken."""
        tasks = self.running
        for task in tasks:
            task.size = max(1, min(self.per_batch, task.size or task.first_batch or first_batch_size()))
        picks: dict[Task, list[int]] = {}
        room, last = self.per_batch, None
        while room:
            served = False
            for owner in self._turns:
                mine = [
                    t for t in tasks if t.owner == owner and len(picks.get(t, ())) < min(t.size, len(t.todo))
                ]
                if not mine:
                    continue
                task = min(mine, key=lambda t: len(picks.get(t, ())))  # an owner's tasks take turns too
                picks.setdefault(task, []).append(task.todo[len(picks.get(task, ()))])
                room, served, last = room - 1, True, owner
                if not room:
                    break
            if not served:
                break
        if last is not None:  # the next batch starts with the owner after the last one served
            at = self._turns.index(last) + 1
            self._turns = self._turns[at:] + self._turns[:at]
        for task, taken in picks.items():
            del task.todo[: len(taken)]
            task.size = next_size(task.size, self.per_batch)
            task.partners |= {id(other) for other in picks if other is not task}
        self.batches.append({t: list(p) for t, p in picks.items()})
        return picks

    def _run(self, picks: dict[Task, list[int]]) -> None:
        try:
            rows = self._batch(picks)
        except LensError as exc:
            if len(picks) == 1:
                task = next(iter(picks))
                task.status, task.error = "failed", exc
                return
            rows = self._each_alone(picks)  # one text's fault (an overflow) fails that text only
        except Cancelled:
            return
        for task, (group_rows, seconds) in rows.items():
            self._hand(task, group_rows, seconds)

    def _batch(self, picks: dict[Task, list[int]]) -> dict[Task, tuple[list[Row], dict]]:
        items = Items.gather(picks)
        timings = dict.fromkeys(PHASES, 0.0)
        shares = [
            Share(t.on_progress, t.done_before + len(t.rows), len(s), t.total) for t, s in picks.items()
        ]

        def check_cancel():
            if all([t.cancelled_now() for t in picks]):  # each asked (a list, not all()'s short cut)
                raise Cancelled

        ticker = BatchTicker(check_cancel, shares, steps=self.steps)
        with torch.inference_mode():
            rows = self.family.batch(
                self.lens, items, self.options, Work(self.steps, self.budget, timings, ticker)
            )
        # each text is charged its items' share of the batch's time (its rate per position: lensweb.rates)
        return {
            t: (rows[s], {k: v * (s.stop - s.start) / len(items) for k, v in timings.items()})
            for t, s in items.groups
        }

    def _each_alone(self, picks: dict[Task, list[int]]) -> dict[Task, tuple[list[Row], dict]]:
        out = {}
        for task, taken in picks.items():
            try:
                out.update(self._batch({task: taken}))
            except LensError as exc:
                task.status, task.error = "failed", exc
            except Cancelled:
                pass
        return out

    def _hand(self, task: Task, rows: list[Row], seconds: dict) -> None:
        for phase, value in seconds.items():
            task.timings[phase] += value
        if not task.running:  # cancelled while its rows were computed: the others keep theirs
            return
        task.rows.extend(rows)
        update = BatchUpdate(rows=rows, done=task.done_before + len(task.rows), total=task.total)
        if task.on_batch is not None and task.on_batch(update) is False:
            task.status = "stopped" if task.todo else "done"
        elif not task.todo:
            task.status = "done"


def run_alone(task: Task, lens, rows_budget: int | None = None) -> AnalysisResult:
    """A task's batches with no one else's: the driver's analyze() and describe()."""
    shared = SharedBatches(lens, task.options, task.steps, rows_budget)
    shared.add(task)
    while shared.running:
        shared.step()
    if task.error is not None:
        raise task.error
    return task.result()
