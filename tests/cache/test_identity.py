"""A result's identity includes where it was computed: the device type and dtype (bf16 on CUDA and float32
on CPU give different rows). The web process keys by the placement the workers will use; a result whose
rows came from another placement, or from two attempts, is not stored."""

from __future__ import annotations

import io
import logging

import pytest

from inference import cachekey
from lensweb.analyses import engine as engine_module
from lensweb.analyses import services
from lensweb.analyses.models import Analysis
from lensweb.cache import services as result_cache
from lensweb.cache.models import CachedResult, CacheLink

from .conftest import TEXT, fresh, rows_of

pytestmark = [pytest.mark.django_db(transaction=True)]


def submit(user, text=TEXT):
    return services.do_submit(user, None, {"text": text}, {"seed": 3})


def test_the_web_process_predicts_what_a_worker_loads(alice, run_queue, settings):
    """With the default settings the key names the placement load_lens really picks on this machine."""
    settings.LENSWEB_DEVICE = settings.LENSWEB_DTYPE = ""
    job = submit(alice)
    link = CacheLink.objects.get(pk=job.pk)
    run_queue()
    metadata = fresh(job).metadata
    assert (link.device, link.dtype) == (cachekey.device_type(metadata["device"]), metadata["dtype"])
    entry = CachedResult.objects.get()
    assert (entry.device, entry.dtype) == (link.device, link.dtype) == cachekey.placement()


def test_placement_follows_the_settings_without_touching_cuda(monkeypatch):
    import torch

    assert cachekey.placement("cuda:1") == ("cuda", "bfloat16")  # the index does not change results
    assert cachekey.placement("cuda", "float16") == ("cuda", "float16")
    assert cachekey.placement("cpu") == ("cpu", "float32")
    assert cachekey.placement("cpu", "bfloat16") == ("cpu", "bfloat16")
    monkeypatch.setattr(cachekey, "_cuda_available", lambda: True)
    assert cachekey.placement() == ("cuda", "bfloat16")  # "cuda if available", as pick_device
    monkeypatch.setattr(cachekey, "_cuda_available", lambda: False)
    assert cachekey.placement() == ("cpu", "float32")
    assert not torch.cuda.is_initialized()


def test_another_device_or_dtype_is_another_key(alice, run_queue, settings):
    settings.LENSWEB_DEVICE, settings.LENSWEB_DTYPE = "cpu", ""
    submit(alice)
    run_queue()
    assert submit(alice).status == "done"  # the same placement: a hit
    settings.LENSWEB_DEVICE = "cuda"  # workers on GPUs now (bf16): the CPU's float32 rows do not answer
    on_gpu = submit(alice)
    assert on_gpu.status == "queued" and "cached" not in on_gpu.metadata
    settings.LENSWEB_DEVICE, settings.LENSWEB_DTYPE = "cpu", "bfloat16"
    assert submit(alice, text=TEXT).status == "queued"


def test_a_result_computed_elsewhere_than_keyed_is_not_stored(alice, run_queue, settings, caplog):
    """The web process was told the workers use CUDA; this one ran on the CPU: its rows are not the
    result the key names, so they are not stored under it (they would answer GPU requests)."""
    settings.LENSWEB_DEVICE = "cuda"
    job = submit(alice)
    caplog.set_level(logging.WARNING, logger="lensweb.cache.services")
    assert run_queue() == [job.pk]
    job = fresh(job)
    assert job.status == "done" and job.metadata["device"] == "cpu" and len(rows_of(job.pk)) > 0
    assert not CachedResult.objects.exists()
    assert "LENSWEB_DEVICE" in caplog.text and "not cached" in caplog.text


def _first_attempt_elsewhere(job, rows: list[dict], device="cuda:0", dtype="bfloat16") -> None:
    """A worker (by default on a GPU, bf16) claims `job`, persists `rows` and hands it back (SIGTERM)."""
    gpu = services.register_worker(device=device)
    assert services.claim_next_job(gpu).pk == job.pk
    link = CacheLink.objects.get(pk=job.pk)
    metadata = {
        "identity": link.lens_identity,
        "engine_version": link.engine_version,
        "device": device,
        "dtype": dtype,
    }
    services.do_record_metadata(job.pk, gpu.pk, metadata, total=job.progress_total)
    if rows:
        assert services.do_record_batch(job.pk, gpu.pk, rows)
    assert services.do_requeue_job(job.pk, gpu.pk)


def test_a_job_resumed_on_another_placement_is_not_stored(alice, run_queue, settings):
    """Rows from a bf16 attempt and a float32 one: the final metadata names the last attempt only, so
    the job must not become the cached result (before: stored, and served to everyone)."""
    settings.LENSWEB_DEVICE = settings.LENSWEB_DTYPE = ""
    job = submit(alice)
    first = {"position": 0, "mse": 123.0, "explanation": "computed in bf16 on a GPU"}
    _first_attempt_elsewhere(job, [first])
    assert run_queue() == [job.pk]  # a CPU worker resumes after position 0
    job = fresh(job)
    assert job.status == "done" and job.progress_done == job.progress_total
    assert rows_of(job.pk)[0] == first and job.metadata["device"] == "cpu"  # the key's placement
    assert not CachedResult.objects.exists()
    assert submit(alice).status == "queued"  # computed afresh, not served from a mixed result


def test_a_job_resumed_on_the_same_placement_is_stored(alice, run_queue, settings):
    """Two attempts on CPUs in float32 (a SIGTERM between them): one result, cached like any other."""
    settings.LENSWEB_DEVICE = settings.LENSWEB_DTYPE = ""
    job = submit(alice)
    _first_attempt_elsewhere(job, [], device="cpu", dtype="float32")  # learn what position 0 computes to
    run_queue()
    first = rows_of(job.pk)[0]
    CachedResult.objects.all().delete()
    again = submit(alice, text=TEXT)
    _first_attempt_elsewhere(again, [first], device="cpu", dtype="float32")
    assert run_queue() == [again.pk]
    again = fresh(again)
    assert again.status == "done" and again.attempt_base == 1
    assert len(again.metadata["attempt_placements"]) == 1
    assert CachedResult.objects.get().dtype == "float32"


def test_an_attempt_that_persisted_nothing_does_not_stop_the_store(alice, run_queue, settings):
    settings.LENSWEB_DEVICE = settings.LENSWEB_DTYPE = ""
    job = submit(alice)
    _first_attempt_elsewhere(job, [])
    assert run_queue() == [job.pk]
    assert fresh(job).attempt_base == 0
    assert CachedResult.objects.get().dtype == "float32"


def test_warm_cache_local_stores_under_the_placement_it_computed_in(alice, cache_on, settings, tmp_path):
    from django.core.management import call_command

    settings.LENSWEB_DEVICE = "cuda"  # what the web processes were told; this process has no GPU
    inputs = tmp_path / "inputs.txt"
    inputs.write_text(TEXT + "\n")
    call_command("warm_cache", str(inputs), "--local", stdout=io.StringIO(), stderr=io.StringIO())
    entry = CachedResult.objects.get()
    assert (entry.device, entry.dtype) == ("cpu", "float32")


def test_bf16_and_float32_rows_differ_and_are_stored_apart(alice, run_queue, settings, monkeypatch):
    """The premise, on the tiny lens: the same request in bf16 gives other numbers than in float32."""
    settings.LENSWEB_DEVICE = settings.LENSWEB_DTYPE = ""
    f32 = submit(alice)
    run_queue()
    settings.LENSWEB_DTYPE = "bfloat16"  # web and workers told alike: the workers read it from the env
    monkeypatch.setenv("LENSWEB_DTYPE", "bfloat16")
    monkeypatch.setattr(engine_module, "_cache", None)  # this process' lens was loaded in float32
    bf16 = submit(alice)
    assert bf16.status == "queued"
    assert run_queue(new_worker=True) == [bf16.pk]
    monkeypatch.setattr(engine_module, "_cache", None)  # the next test loads float32 again
    assert fresh(bf16).metadata["dtype"] == "bfloat16"
    mse = [[row["mse"] for row in rows_of(job.pk)] for job in (f32, bf16)]
    assert mse[0] != mse[1]
    assert sorted(CachedResult.objects.values_list("dtype", flat=True)) == ["bfloat16", "float32"]
    assert Analysis.objects.filter(status="done").count() == 2
    assert result_cache.lookup(result_cache.key_for(*_prepared(bf16))) is not None


def _prepared(job):
    spec, _inp, options, prepared = services.check_prepared_submission(None, job.input, job.options)
    return spec, prepared, options
