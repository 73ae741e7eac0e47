"""A web process never builds a model: it reads tokenizers (in the background, as it starts) and queues.

Run in a fresh interpreter, as a web process is, so that nothing another test loaded is in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import tiny_lens

from .conftest import REPO, scaled

WEB_PROCESS = textwrap.dedent(
    """
    import gc, json, sys, time
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model
    from django.test import Client
    from lensweb.accounts.keys import create_key
    from lensweb.analyses import services, warmup

    user = get_user_model().objects.create_user("ada", password="pw")
    _, key = create_key(user, "notebook")
    services.register_worker(device="cpu")  # a live worker elsewhere: the submission is accepted

    started = time.perf_counter()
    import lensweb.asgi  # what daphne imports: starts the tokenizer read
    warm = warmup.wait_until_warm(timeout=120)
    warmed = time.perf_counter() - started

    text = "Alice gave Bob a red apple because he was hungry."
    t0 = time.perf_counter()
    api = Client().post(
        "/api/v1/analyses", {"text": text}, content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    t1 = time.perf_counter()
    browser = Client()
    browser.force_login(user)
    form = {"text": text, "input_format": "text", "best_of_k": 1, "temperature": 1.0, "seed": 1, "lens": "tiny"}
    page = browser.post("/analyses/", form, headers={"HX-Request": "true"})
    t2 = time.perf_counter()

    from transformers import PreTrainedModel
    import torch
    from lensweb.analyses import engine
    # a model is a module with weights (transformers builds weightless activation modules on import)
    models = [
        o for o in gc.get_objects()
        if isinstance(o, PreTrainedModel) or (isinstance(o, torch.nn.Module) and next(o.parameters(), None) is not None)
    ]
    print("RESULT " + json.dumps({
        "warm": warm, "warm_s": warmed, "api": api.status_code, "form": page.status_code,
        "queued": services.Analysis.objects.filter(status="queued").count(),
        "first_post_s": t1 - t0, "form_post_s": t2 - t1,
        "modules": len(models), "types": sorted({type(o).__module__ + "." + type(o).__name__ for o in models}), "engine_loaded": engine._cache is not None and engine._cache.on_device is not None,
    }))
    """
)


def test_the_first_submission_after_a_start_builds_no_model_in_the_web_process(tmp_path):
    tiny_lens()  # the session's registry, which the process inherits
    environ = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="lensweb.settings.base",
        DATABASE_URL=f"sqlite:///{tmp_path / 'web.sqlite3'}",
        SECRET_KEY="cold-start-test",
        ALLOWED_HOSTS="testserver",
        LENSWEB_EMBEDDED_WORKER="false",
    )
    environ.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=scaled(180),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["warm"], "the tokenizer read did not finish"
    assert result["api"] == 202 and result["form"] == 200 and result["queued"] == 2, result
    # tokenizers only: no model nor any module with weights was built, and the engine holds no lens
    assert result["modules"] == 0 and not result["engine_loaded"], result["types"]
