"""Fixtures for the results tests: users (owner, outsider, staff), and analyses whose rows come from the
real engine over the tiny test lens (computed once per session), or are built by hand."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import golden_dir, tiny_registry_path  # noqa: F401  (golden_dir: for the test modules)

TEXT = "The capital of France is Paris, famous for the Eiffel Tower."


def run_tiny(text: str = TEXT, **options):
    """(rows, metadata, timings, options) of a real analysis by the tiny test lens (the session's
    registry lens, which the engine loads once per process and keeps)."""
    from inference.types import AnalysisInput, AnalysisOptions
    from lensweb.analyses.engine import get_engine

    tiny_registry_path()  # builds the tiny lens if no test has yet
    engine = get_engine()
    lens = engine.load(engine.get_spec("tiny"))
    opts = AnalysisOptions(**options)
    result = engine.analyze(lens, AnalysisInput(text=text), opts)
    return result.to_dict()["rows"], result.metadata, result.timings, opts.to_dict()  # as stored


@pytest.fixture(scope="session")
def tiny_result():
    """Best of 2, salience, KL, logit lens and candidates kept: every field a row can have."""
    return run_tiny(best_of_k=2, salience=True, kl=True, logit_lens=True, keep_candidates=True)


@pytest.fixture(scope="session")
def tiny_result_k1():
    """The same text, best of 1 and no KL: for compare."""
    return run_tiny(best_of_k=1, salience=True)


def create_analysis(owner, result, *, text: str = TEXT, status: str = "done", **metadata_changes):
    from lensweb.analyses.models import Analysis, AnalysisRow
    from lensweb.analyses.services import summarize_rows

    rows, metadata, timings, options = copy.deepcopy(result)
    metadata.update(metadata_changes)
    metadata["summary"] = summarize_rows(rows)  # as a worker stores it
    analysis = Analysis.objects.create(
        owner=owner,
        lens_id=metadata.get("lens_id", "tiny"),
        input={"text": text},
        options=options,
        status=status,
        metadata=metadata,
        timings=timings,
        progress_done=len(rows),
        progress_total=len(rows),
    )
    AnalysisRow.objects.bulk_create(
        [AnalysisRow(analysis=analysis, position=r["position"], data=r) for r in rows]
    )
    return analysis


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("sam", password="pw-sam", is_staff=True)


@pytest.fixture
def analysis(alice, tiny_result):
    return create_analysis(alice, tiny_result)
