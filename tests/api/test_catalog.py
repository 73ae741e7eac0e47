"""The lens catalog (issue 29): the registry seeds one LensEntry per lens; staff rename, reserve for staff, hide,
choose the default and order them in admin, and the lists (API, form, status strip), the default a submission
takes and who may submit follow; a worker's load fills in base model, layer and T."""

from __future__ import annotations

import pytest
from django.urls import reverse

from lensweb.analyses import catalog, services
from lensweb.analyses.models import LensEntry
from lensweb.analyses.status import fleet_status

from .test_routing import write_two_lenses

pytestmark = pytest.mark.django_db(transaction=True)  # the worker closes its connections after each job
URL = "/api/v1/analyses"
ENTRIES = "admin:analyses_lensentry_changelist"


@pytest.fixture(autouse=True)
def two_lenses(tmp_path, monkeypatch, db):
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(write_two_lenses(tmp_path)))


def listed(api, key) -> dict[str, dict]:
    return {lens["id"]: lens for lens in api.get("/api/v1/lenses", key=key).json_body["lenses"]}


def test_the_registry_seeds_the_entries_and_staff_renames_and_reorders_them(api, alice_key, admin_client):
    assert not LensEntry.objects.exists()
    assert set(listed(api, alice_key)) == {"tiny", "tiny-b"}  # the first read seeds them
    entry = LensEntry.objects.get(lens_id="tiny-b")
    assert entry.name == "Tiny B" and entry.visibility == "everyone" and not entry.is_default
    LensEntry.objects.filter(lens_id="tiny-b").update(name="Layer 2, second run", order=-1)
    lenses = api.get("/api/v1/lenses", key=alice_key).json_body["lenses"]
    assert [lens["id"] for lens in lenses] == ["tiny-b", "tiny"]  # staff's order
    assert lenses[0]["name"] == "Layer 2, second run" and lenses[1]["default"] is True
    page = admin_client.get(reverse(ENTRIES)).content.decode()
    assert "Layer 2, second run" in page and "tiny-b" in page


def test_a_staff_lens_is_listed_and_usable_by_staff_only(api, alice, alice_key, staff_key, client):
    catalog.entries()
    LensEntry.objects.filter(lens_id="tiny-b").update(visibility=LensEntry.Visibility.STAFF)
    services.register_worker()
    assert set(listed(api, alice_key)) == {"tiny"} and set(listed(api, staff_key)) == {"tiny", "tiny-b"}
    refused = api.post(URL, {"text": "a b c", "lens": "tiny-b"}, key=alice_key)
    assert refused.status_code == 400
    message = refused.json_body["error"]["message"]
    assert "unknown lens 'tiny-b'" in message and message.endswith("this server has: tiny")  # no hint of it
    assert api.post(URL, {"text": "a b c", "lens": "tiny-b"}, key=staff_key).status_code == 202
    client.force_login(alice)
    form = client.get(reverse("analyses:index")).content.decode()
    assert 'value="tiny"' in form and 'value="tiny-b"' not in form
    assert [lens.id for lens in fleet_status().lenses] == ["tiny"]  # the strip every page shows


def test_a_hidden_lens_is_listed_to_no_one_and_staff_may_still_use_it(api, alice_key, staff_key):
    catalog.entries()
    LensEntry.objects.filter(lens_id="tiny-b").update(visibility=LensEntry.Visibility.HIDDEN)
    services.register_worker()
    assert set(listed(api, alice_key)) == set(listed(api, staff_key)) == {"tiny"}
    assert api.post(URL, {"text": "a b c", "lens": "tiny-b"}, key=alice_key).status_code == 400
    assert api.post(URL, {"text": "a b c", "lens": "tiny-b"}, key=staff_key).status_code == 202


def test_the_default_staff_choose_is_what_a_submission_without_a_lens_takes(
    api, alice, alice_key, admin_client
):
    services.register_worker()
    catalog.entries()
    entry = LensEntry.objects.get(lens_id="tiny-b")
    change = reverse("admin:analyses_lensentry_change", args=[entry.pk])
    form = {"name": entry.name, "description": "", "visibility": "everyone", "is_default": "on", "order": 0}
    assert admin_client.post(change, form).status_code == 302
    assert list(LensEntry.objects.filter(is_default=True).values_list("lens_id", flat=True)) == ["tiny-b"]
    assert listed(api, alice_key)["tiny-b"]["default"] is True
    submitted = api.post(URL, {"text": "a b c"}, key=alice_key).json_body
    assert api.get(f"{URL}/{submitted['id']}", key=alice_key).json_body["lens"] == "tiny-b"


def test_a_workers_load_fills_in_base_model_layer_and_t(api, alice_key, run_jobs, no_lens_held):
    assert listed(api, alice_key)["tiny"]["layer"] is None
    record = services.register_worker()
    api.post(URL, {"text": "a b c"}, key=alice_key)
    assert run_jobs(record)
    tiny = listed(api, alice_key)["tiny"]
    assert tiny["base_model"] and isinstance(tiny["layer"], int) and isinstance(tiny["t_text"], int)


def test_the_rows_budget_staff_set_is_what_the_worker_batches_by(api, alice_key, run_jobs, monkeypatch):
    catalog.entries()
    LensEntry.objects.filter(lens_id="tiny").update(rows_budget=1)
    record = services.register_worker()
    submitted = api.post(URL, {"text": "a b c d"}, key=alice_key).json_body
    batches = []
    engine = run_jobs.worker.engine
    begin = engine.begin

    def counting(lens, inp, options, **kwargs):
        on_batch = kwargs["on_batch"]
        kwargs["on_batch"] = lambda update: batches.append(len(update.rows)) or on_batch(update)
        return begin(lens, inp, options, **kwargs)

    monkeypatch.setattr(engine, "begin", counting)
    assert run_jobs(record) == [("analysis", submitted["id"])]
    assert batches == [
        1,
        1,
        1,
        1,
    ]  # one position a batch (unset, the first batch takes two: LENSWEB_FIRST_BATCH)
