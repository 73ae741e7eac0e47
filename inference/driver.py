"""One driver for every lens family: positions → batches → rows, with the rows budget, cancellation, resuming
and progress done once. A family (a Consistency Lens, an NLA) brings only what differs: its explanation
length, its rows budget, its batch step and its metadata, registered under its `kind` (inference.families).

Deterministic: a row depends only on (lens, input, options, seed, position), never on the batch it ran in.
Incremental: rows are handed out per finished batch. Cancellation is checked between decode steps.
"""

from __future__ import annotations

import time

import torch

from .batching import OnProgress
from .errors import InputError, OptionError
from .families import family_of
from .inputs import activation_vectors, prepare_input, vector_options, vector_token_ids
from .limits import DEFAULT_LIMITS, Limits
from .metrics import OrigPass, norm_range, orig_forward
from .models import hidden_size, text_config
from .options import short
from .rows import Row
from .sharing import Task, run_alone
from .types import AnalysisInput, AnalysisOptions, AnalysisResult, OnBatch, PreparedInput, ShouldCancel


def analyze(
    lens,
    inp: AnalysisInput,
    options: AnalysisOptions,
    *,
    rows_budget: int | None = None,
    **task,
) -> AnalysisResult:
    """Rows for every analysed position (or, resuming, the `remaining` ones), handed out per batch through
    `on_batch` (returning False stops); the batches start at `first_batch` positions (inference.batching) and
    grow to the rows budget, and `on_progress` hears every decode step and phase in between. The other
    keywords are begin()'s. One text alone: inference.sharing runs several in shared batches."""
    return run_alone(begin(lens, inp, options, **task), lens, rows_budget)


def begin(
    lens,
    inp: AnalysisInput,
    options: AnalysisOptions,
    *,
    remaining: list[int] | None = None,
    on_batch: OnBatch | None = None,
    should_cancel: ShouldCancel | None = None,
    limits: Limits = DEFAULT_LIMITS,
    on_progress: OnProgress | None = None,
    first_batch: int | None = None,
    max_new_tokens: int | None = None,
    prepared=None,
    owner=None,
) -> Task:
    """One text's analysis, ready to run alone (analyze) or in batches shared with other texts
    (inference.sharing.SharedBatches): its options checked, its text tokenised (unless the caller did:
    `prepared`) and run once through the orig model. `max_new_tokens`: an NLA's explanation bound (its
    setting by default); `owner`: whom shared batches take turns between."""
    family = family_of(lens)
    started = time.perf_counter()
    options.validate(limits)
    steps = family.steps(lens, max_new_tokens, limits)
    prepared = prepared or prepare_input(lens.tokenizer, inp, options, limits)
    todo = positions_to_run(prepared.positions, remaining)
    with torch.inference_mode():
        ids = torch.tensor(prepared.token_ids, device=lens.device)
        t0 = time.perf_counter()
        orig = orig_forward(lens, ids, full=options.kl)  # once per text
        norm_range(lens)  # once per loaded lens: one forward of a short text, with the activations' time
        spent = time.perf_counter() - t0
    task = Task(
        prepared=prepared,
        orig=orig,
        options=options,
        steps=steps,
        todo=todo,
        owner=owner,
        on_batch=on_batch,
        on_progress=on_progress,
        should_cancel=should_cancel,
        first_batch=first_batch,
        metadata={**family.metadata(lens, prepared, options, steps), **prepared.glyph_metadata()},
        started=started,
    )
    task.timings["activations"] += spent
    return task


def describe(
    lens,
    vectors,
    options: AnalysisOptions,
    *,
    token_ids: list[int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    rows_budget: int | None = None,
    max_new_tokens: int | None = None,
    on_batch: OnBatch | None = None,
    should_cancel: ShouldCancel | None = None,
) -> AnalysisResult:
    """Explain each vector as if it were the lens' layer activation at a position (an SAE feature's
    direction, the difference of two activations): decoder and encoder as for a row, row i for vector i. KL is
    refused (it needs a text). `token_ids`: the token each vector's position held, where the lens' encoder
    reads it; without them a Consistency Lens that reads it gets its null token (metadata says so)."""
    family = family_of(lens)
    t_start = time.perf_counter()
    options.validate(limits)
    vector_options(options)
    steps = family.steps(lens, max_new_tokens, limits)
    width = hidden_size(lens.orig)
    acts = activation_vectors(vectors, width, limits.max_chosen_positions)
    null = getattr(lens, "null_token_id", None)
    given = token_ids is not None
    if given:
        token_ids = vector_token_ids(token_ids, len(acts), text_config(lens.orig).vocab_size)
    ids = list(token_ids) if given else [null if null is not None else 0] * len(acts)
    prepared = PreparedInput(
        token_ids=ids,
        tokens=[lens.tokenizer.decode([i]) for i in ids] if given else [""] * len(acts),
        positions=list(range(len(acts))),
        rendered_text="",
    )
    with torch.inference_mode():
        orig = OrigPass(
            ids=torch.tensor(ids, device=lens.device),
            acts=torch.tensor(acts, dtype=torch.float32, device=lens.device),
        )
        norm_range(lens)
    metadata = {
        **family.metadata(lens, prepared, options, steps),
        "described": "vectors: row i explains vector i as the activation at a position",
        "token_ids_given": given,
    }
    task = Task(
        prepared=prepared,
        orig=orig,
        options=options,
        steps=steps,
        todo=list(prepared.positions),
        on_batch=on_batch,
        should_cancel=should_cancel,
        metadata=metadata,
        started=t_start,
    )
    return run_alone(task, lens, rows_budget)


def activations(
    lens, inp: AnalysisInput, positions: list[int], *, limits: Limits = DEFAULT_LIMITS
) -> list[list[float]]:
    """The lens' layer activations (float32, as rows are computed from) at `positions` of the input; negative
    positions count from the end."""
    prepared = prepare_input(lens.tokenizer, inp, AnalysisOptions(), limits)
    n = len(prepared.token_ids)
    if not isinstance(positions, list | tuple) or not 1 <= len(positions) <= limits.max_chosen_positions:
        raise OptionError(f"positions: give 1 to {limits.max_chosen_positions} of them")
    bad = [p for p in positions if not isinstance(p, int) or isinstance(p, bool) or not -n <= p < n]
    if bad:
        raise OptionError(f"position {short(bad[0])} is outside the input's {n} tokens")
    with torch.inference_mode():
        orig = orig_forward(lens, torch.tensor(prepared.token_ids, device=lens.device), full=False)
        return orig.acts[torch.tensor([p % n for p in positions], device=lens.device)].tolist()


def score(
    lens,
    inp: AnalysisInput,
    options: AnalysisOptions,
    position: int,
    *,
    explanation: str | None = None,
    explanation_token_ids: list[int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    prepared=None,
) -> Row:
    """The caller's own explanation (a text, or token ids) at `position` of the input, through the lens'
    encoder: a Row with the numbers an analysed row has (mse, relative RMSE, cos, salience with
    options.salience, KL with options.kl), for words the decoder did not choose. Scoring a row's own
    explanation_token_ids gives that row's numbers again: the same computation. Negative positions count
    from the end."""
    family = family_of(lens)
    options.validate(limits)
    if (explanation is None) == (explanation_token_ids is None):
        raise InputError("give either an explanation or its explanation_token_ids, not both or neither")
    prepared = prepared or prepare_input(lens.tokenizer, inp, options, limits)
    n = len(prepared.token_ids)
    if not isinstance(position, int) or isinstance(position, bool) or not -n <= position < n:
        raise OptionError(f"position {short(position)} is outside the input's {n} tokens")
    with torch.inference_mode():
        orig = orig_forward(lens, torch.tensor(prepared.token_ids, device=lens.device), full=options.kl)
        norm_range(lens)  # the ‖A‖ flag's range, as for a row
        return family.score(
            lens, prepared, orig, position % n, explanation, explanation_token_ids, options, limits
        )


def positions_to_run(all_positions: list[int], requested: list[int] | None) -> list[int]:
    """The positions still to compute: all of them, or those of `requested` (a resume), which must be some."""
    if requested is None:
        return list(all_positions)
    allowed = set(all_positions)
    bad = sorted(set(requested) - allowed)
    if bad:
        raise OptionError(f"positions {bad[:5]} are outside the analysed range of this input")
    return sorted(set(requested))
