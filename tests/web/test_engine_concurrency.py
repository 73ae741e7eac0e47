"""Reading a lens in the web process: safe when the first submissions arrive together, done once per
process, and a lens that cannot be read is the server's fault (503 / a notice above the form), never the
input's, with no server path or torch text shown."""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest
import torch
from django.db import connection
from django.test import Client
from django.urls import reverse

import inference.lens
from inference.checkpoints import resolve_checkpoint_path
from lensweb.accounts import keys
from lensweb.analyses import engine as engine_module
from lensweb.analyses.models import Analysis
from lensweb.analyses.services import register_worker
from lensweb.cache import services as cache_services
from tests.api.conftest import Api, error_of
from tests.inference.test_checkpoint_safety import RunString

URL = "/api/v1/analyses"
USERS, PER_USER, ROUNDS = 3, 4, 3
HTMX = {"HTTP_HX_REQUEST": "true"}


def write_registry(directory, lenses: dict[str, str], base: str):
    """lenses.toml with {id: checkpoint path} on the suite's base model; the first lens is the default."""
    tables = [
        f'[[lens]]\nid = "{lens_id}"\nname = "{lens_id}"\ncheckpoint = "{checkpoint}"\nbase_model = "{base}"\n'
        + ("default = true\n" if i == 0 else "")
        for i, (lens_id, checkpoint) in enumerate(lenses.items())
    ]
    path = directory / "lenses.toml"
    path.write_text("\n".join(tables))
    return path


@pytest.fixture
def suite_lens(tiny_engine):
    """(the suite's tiny lens as the research writer saves it, with numpy RNG state, its base model)."""
    spec = tiny_engine.default_lens()
    raw = torch.load(resolve_checkpoint_path(spec.checkpoint), weights_only=False)  # the suite's own file
    raw["rng_states"] = {**raw.get("rng_states", {}), "numpy": np.random.get_state()}
    return raw, spec.base_model


@pytest.fixture
def lenses(tmp_path, monkeypatch, suite_lens):
    """A registry: "rng" (the default, readable, with numpy RNG state) and "broken", whose file a test
    replaces. Returns the broken lens' checkpoint path."""
    raw, base = suite_lens
    torch.save(raw, tmp_path / "rng.pt")
    torch.save(raw, tmp_path / "broken.pt")
    registry = write_registry(tmp_path, {"rng": tmp_path / "rng.pt", "broken": tmp_path / "broken.pt"}, base)
    monkeypatch.setenv("LENSWEB_LENS_REGISTRY", str(registry))
    return tmp_path / "broken.pt"


def forget_lens_reads(monkeypatch):
    """A freshly started process: a new engine (no tokenizers), no identities, no checkpoint facts."""
    monkeypatch.setattr(engine_module, "_engines", {})
    monkeypatch.setattr(cache_services, "_identities", {})
    monkeypatch.setattr(inference.lens, "_facts", {}, raising=False)


def counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)
    lock = threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_submissions_all_succeed_and_read_the_lens_once(
    lenses, monkeypatch, settings, alice, bob, carol
):
    """Reported: of 12 API submissions from 3 users on a freshly started server, 1-2 got `400 invalid_input`
    with torch's "Unsupported global numpy._core.multiarray._reconstruct" and the checkpoint's path: each
    request read the checkpoint, and concurrent reads undid each other's allow-list."""
    settings.LENSWEB_RESULT_CACHE = True  # the cache identity is read on submission too
    settings.LENSWEB_MAX_QUEUED_PER_USER = USERS * PER_USER * ROUNDS
    register_worker(channel_name="", device="cpu")
    api_keys = [keys.create_key(user, "laptop")[1] for user in (alice, bob, carol)]
    reads = counting(monkeypatch, inference.lens, "read_checkpoint")
    tokenizer_loads = counting(monkeypatch, inference.lens, "load_tokenizer_from")
    answers: list[tuple[int, str]] = []

    def submit(barrier, key, text):
        client = Client(headers={"Authorization": f"Bearer {key}"})
        try:
            barrier.wait()
            response = client.post(URL, json.dumps({"text": text}), content_type="application/json")
            answers.append((response.status_code, response.content.decode()[:300]))
        finally:
            connection.close()

    for round_no in range(ROUNDS):
        forget_lens_reads(monkeypatch)
        barrier = threading.Barrier(USERS * PER_USER)
        threads = [
            threading.Thread(target=submit, args=(barrier, key, f"Round {round_no}, request {i} of user {u}"))
            for u, key in enumerate(api_keys)
            for i in range(PER_USER)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    refused = [answer for answer in answers if answer[0] not in (200, 202)]
    assert len(answers) == USERS * PER_USER * ROUNDS
    assert not refused, f"{len(refused)} of {len(answers)} concurrent submissions refused, e.g. {refused[0]}"
    assert Analysis.objects.count() == len(answers)
    assert len(reads) == ROUNDS, "each fresh process should read the checkpoint once, not once per request"
    assert len(tokenizer_loads) == ROUNDS, "each fresh process should load the tokenizer once"


BREAKAGES = {
    "garbage": lambda path: path.write_bytes(b"half a checkpoint"),
    "pickled code": lambda path: torch.save({"extra": RunString(path.parent / "ran")}, path),
    "missing": lambda path: path.unlink(),
}


@pytest.mark.django_db
@pytest.mark.parametrize("breakage", BREAKAGES)
def test_an_unreadable_lens_is_503_lens_unavailable_without_details(
    lenses, breakage, client, alice, monkeypatch, caplog
):
    forget_lens_reads(monkeypatch)
    BREAKAGES[breakage](lenses)
    register_worker(channel_name="", device="cpu")
    key = keys.create_key(alice, "laptop")[1]
    with caplog.at_level(logging.ERROR, logger="lensweb.analyses.services"):
        response = Api(client).post(URL, {"text": "The Eiffel Tower", "lens": "broken"}, key=key)
    body = response.content.decode()
    assert response.status_code == 503, body
    assert error_of(response)["code"] == "lens_unavailable"
    assert error_of(response)["message"] == (
        "the lens broken is unavailable right now; the operator has been told"
    )
    assert int(response["Retry-After"]) > 0
    assert str(lenses.parent) not in body and "torch" not in body.lower() and "pickle" not in body
    assert not Analysis.objects.exists()
    assert not (lenses.parent / "ran").exists()
    assert str(lenses) in caplog.text, "the operator's log should say which file failed"
    # The other lens is unaffected.
    assert Api(client).post(URL, {"text": "The Eiffel Tower"}, key=key).status_code == 202


@pytest.mark.django_db
def test_a_generation_on_an_unreadable_lens_is_503_lens_unavailable(lenses, client, alice, monkeypatch):
    forget_lens_reads(monkeypatch)
    BREAKAGES["garbage"](lenses)
    register_worker(channel_name="", device="cpu")
    key = keys.create_key(alice, "laptop")[1]
    response = Api(client).post("/api/v1/generations", {"text": "Hello", "lens": "broken"}, key=key)
    body = response.content.decode()
    assert response.status_code == 503, body
    assert error_of(response)["code"] == "lens_unavailable"
    assert str(lenses.parent) not in body


@pytest.mark.django_db
def test_the_form_says_the_lens_is_unavailable_not_that_the_input_is_wrong(
    lenses, client, alice, monkeypatch
):
    forget_lens_reads(monkeypatch)
    BREAKAGES["garbage"](lenses)
    client.force_login(alice)
    form = {
        "text": "The capital of France",
        "input_format": "text",
        "best_of_k": 1,
        "temperature": 1.0,
        "seed": 42,
        "lens": "broken",
    }
    html = client.post(reverse("analyses:submit"), form, **HTMX).content.decode()
    assert "the lens broken is unavailable right now; the operator has been told" in html
    assert str(lenses.parent) not in html and "cannot read" not in html
    assert not Analysis.objects.exists()
