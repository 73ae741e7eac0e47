"""`manage.py warm_cache`: a mixed file (text, JSONL, a malformed line) computed in-process with --local,
resumed by a second run, and once through the queue with a worker in this process."""

from __future__ import annotations

import io
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from lensweb.analyses import services
from lensweb.analyses.models import Analysis
from lensweb.analyses.worker import LensWorker
from lensweb.cache.models import CachedResult
from lensweb.cache.warming import Progress, read_items
from tests.web.conftest import wait_for

from .conftest import TEXT

pytestmark = [pytest.mark.django_db(transaction=True)]

MIXED = "\n".join(
    [
        TEXT,
        json.dumps({"text": "Hello world", "options": {"seed": 5}}),
        '{"text": "broken',
        "",
        json.dumps({"messages": [{"role": "user", "content": "Hi"}], "options": {"kl": True}}),
        json.dumps({"text": "x", "colour": "red"}),
    ]
)


def warm(path, *args):
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("warm_cache", str(path), *args, stdout=out, stderr=err)
        failure = None
    except CommandError as exc:
        failure = str(exc)
    return out.getvalue(), err.getvalue(), failure


def test_reading_a_mixed_file():
    items, bad = read_items(MIXED)
    assert [i.where for i in items] == ["line 1", "line 2", "line 5"]
    assert items[1].options == {"seed": 5} and "messages" in items[2].input
    assert [where for where, _ in bad] == ["line 3", "line 6"]
    assert "not valid JSON" in bad[0][1] and "colour" in bad[1][1]
    items, bad = read_items(json.dumps(["a text", {"text": "b"}, 7]))
    assert [i.input for i in items] == [{"text": "a text"}, {"text": "b"}] and bad[0][0] == "item 3"


def test_local_warming_reports_bad_lines_computes_the_rest_and_resumes(alice, cache_on, tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_text(MIXED)
    out, err, failure = warm(path, "--local", "--options", '{"best_of_k": 2}')
    assert "malformed line 3: not valid JSON" in err and "malformed line 6" in err
    assert "3 computed, 0 skipped (cached), 2 failed" in out
    assert failure and "line 3" in failure
    assert "[" + "#" * 30 + "] 3/3 100%" in err  # the bar, one line per step off a terminal
    assert CachedResult.objects.count() == 3
    assert not Analysis.objects.exists()  # no owner, no history rows

    # the cached results answer users' identical requests
    job = services.do_submit(alice, None, {"text": "Hello world"}, {"seed": 5, "best_of_k": 2})
    assert job.status == "done" and job.metadata["cached"] is True and job.metadata["summary"]["rows"]

    out, err, _ = warm(path, "--local", "--options", '{"best_of_k": 2}')
    assert "0 computed, 3 skipped (cached), 2 failed" in out


def test_an_interrupted_local_run_stores_what_it_finished(cache_on, tmp_path, monkeypatch):
    from lensweb.analyses.engine import InferenceEngine

    path = tmp_path / "inputs.txt"
    path.write_text("first text\nsecond text\nthird text\n")
    real, calls = InferenceEngine.analyze, []

    def analyze(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(InferenceEngine, "analyze", analyze)
    out, _, failure = warm(path, "--local")
    assert "interrupted: 1 computed" in out and "run again to resume" in out and failure is None
    monkeypatch.setattr(InferenceEngine, "analyze", real)
    out, _, _ = warm(path, "--local")
    assert "2 computed, 1 skipped" in out


def test_an_unknown_lens_or_bad_options_fail_clearly(cache_on, tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_text("a text\n")
    with pytest.raises(CommandError, match="--options is not valid JSON"):
        call_command("warm_cache", str(path), "--options", "{nope", stdout=io.StringIO())
    _, err, failure = warm(path, "--local", "--lens", "nope")
    assert "line 1: no lens 'nope'" in err or "line 1" in (failure or "")
    _, _, failure = warm(path)  # through the queue, with no worker running
    assert failure and "no worker is running" in failure


def test_the_progress_bar_redraws_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = Progress(stream, 4)
    bar.computed = 1
    bar.draw()
    bar.say("failed line 2: boom")
    assert stream.getvalue().startswith("\r[" + "#" * 7) and "1/4  25%" in stream.getvalue()
    assert "ETA" in stream.getvalue() and "\r\033[Kfailed line 2: boom\n" in stream.getvalue()


async def test_warming_through_the_queue_with_a_worker(cache_on, fast_worker, tmp_path):
    path = tmp_path / "inputs.jsonl"
    path.write_text("\n".join([TEXT, "Another text to warm", "not {json", json.dumps({"text": "Third one"})]))
    worker = LensWorker(cache_on)
    worker.start()
    try:
        await wait_for(lambda: services.live_workers().exists())
        out, err, failure = await database_sync_to_async(warm, thread_sensitive=False)(
            path, "--workers", "2", "--poll", "0.05"
        )
    finally:
        worker.request_stop()
        await wait_for(worker.finished.is_set)
    assert failure is None, err
    assert "4 computed, 0 skipped (cached), 0 failed" in out

    def owners():
        return set(Analysis.objects.values_list("owner__username", flat=True)), CachedResult.objects.count()

    assert await database_sync_to_async(owners)() == ({"cache-warmer"}, 4)
    warmer = await database_sync_to_async(get_user_model().objects.get)(username="cache-warmer")
    assert not warmer.has_usable_password()


def test_warming_chosen_positions_answers_exactly_that_selection(alice, cache_on, tmp_path):
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"text": "The capital of France is Paris", "options": {"positions": [1, -1]}}\n')
    out, _, failure = warm(path, "--local")
    assert failure is None and "1 computed" in out
    (entry,) = CachedResult.objects.all()
    assert [row["position"] for row in entry.rows] == [1, entry.n_tokens - 1]
    hit = services.do_submit(alice, None, {"text": "The capital of France is Paris"}, {"positions": [1, -1]})
    assert hit.status == "done" and hit.metadata["cached"] is True
    other = services.do_submit(alice, None, {"text": "The capital of France is Paris"}, {"positions": [1]})
    assert other.status == "queued"  # another selection, another key
