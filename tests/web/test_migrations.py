"""Generations moved from the api app into the core: the rows a server already holds are copied over, with
their ids (URLs already given out stay valid) and their state."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [
    ("analyses", "0002_alter_analysis_options_analysis_analysis_created_idx_and_more"),
    ("api", "0001_initial"),
]
AFTER = [("analyses", "0003_generation"), ("api", "0002_delete_generation")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_existing_generations_are_copied_into_the_core():
    old_apps = migrate(BEFORE)
    user = old_apps.get_model("auth", "User").objects.create(username="alice")
    old = old_apps.get_model("api", "Generation").objects.create(
        owner_id=user.pk,
        lens_id="tiny",
        input={"text": "Hello"},
        options={"n": 1, "max_new_tokens": 7},
        status="done",
        result={"prompt": "Hello", "samples": [{"text": " there", "token_ids": [5], "finished": True}]},
    )
    try:
        new_apps = migrate(AFTER)
        copied = new_apps.get_model("analyses", "Generation").objects.get(pk=old.pk)
        assert copied.owner_id == user.pk and copied.status == "done" and copied.input == {"text": "Hello"}
        assert copied.result["samples"][0]["text"] == " there" and copied.progress_total == 7
        assert "api_generation" not in connection.introspection.table_names()
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
