"""Results stored before metadata named models by their public names carried the server's paths (and
reached anonymous share-link exports): the migrations rewrite them, and leave names and hub ids alone."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from inference.types import public_metadata

pytestmark = pytest.mark.django_db

OLD = {
    "checkpoint": "/srv/lenses/secret-project/lens_step_9000.pt",
    "base_model": "/home/ops/models/SmolLM2-135M",
    "donor_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "av": "C:\\models\\av",
    "ar": "~/nla/ar/",
    "layer": 5,
    "summary": {"mean_mse": 0.5},
}
PUBLIC = {
    **OLD,
    "checkpoint": "lens_step_9000.pt",
    "base_model": "SmolLM2-135M",
    "av": "av",
    "ar": "ar",
}


def test_public_metadata_keeps_names_and_everything_else():
    assert public_metadata(OLD) == PUBLIC
    assert public_metadata(PUBLIC) == PUBLIC  # running twice changes nothing


def test_the_migrations_rewrite_stored_jobs_and_cache_entries(django_user_model):
    from lensweb.analyses.models import Analysis, Generation
    from lensweb.cache.models import CachedResult

    owner = django_user_model.objects.create_user("old-results")
    job = Analysis.objects.create(owner=owner, lens_id="tiny", input={"text": "x"}, options={}, metadata=OLD)
    gen = Generation.objects.create(
        owner=owner, lens_id="tiny", input={"text": "x"}, options={}, metadata=OLD
    )
    entry = CachedResult.objects.create(
        key="k" * 64, lens_id="tiny", lens_identity="i", engine_version="1", options={}, n_tokens=1,
        blob=CachedResult.pack([]), metadata=OLD, computed_seconds=1.0, size_bytes=1,
    )  # fmt: skip
    importlib.import_module("lensweb.analyses.migrations.0006_public_names").public_names(apps, None)
    importlib.import_module("lensweb.cache.migrations.0003_shared_by_link").public_names(apps, None)
    for obj in (job, gen, entry):
        obj.refresh_from_db()
        assert obj.metadata == PUBLIC, type(obj).__name__
