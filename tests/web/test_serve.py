"""`manage.py serve` as `make run` starts it: daphne with the worker embedded (SQLite, in-memory layer).
A restart loses nothing: SIGTERM finishes the batch and re-queues the job; the next start resumes it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from .conftest import REPO, SLOW_TEXT, free_port, token_ids, wait_http

JOB_TEXT = SLOW_TEXT


@pytest.fixture
def site(tmp_path):
    db = tmp_path / "serve.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="lensweb.settings.base",
        DATABASE_URL=f"sqlite:///{db}",
        LENSWEB_ROWS_BUDGET="1",  # one position per batch: a job of many batches
        LENSWEB_POLL_INTERVAL="0.5",
        LENSWEB_HEARTBEAT_INTERVAL="0.5",
        PORT=str(free_port()),
    )
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True, capture_output=True, text=True
    )
    run("migrate", "--noinput", "-v0")
    run(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; from lensweb.analyses import services; "
        f"services.do_submit(get_user_model().objects.create_user('x'), None, {{'text': {JOB_TEXT!r}}}, {{}})",
    )
    procs = []

    def start():
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        wait_http(f"http://127.0.0.1:{env['PORT']}/healthz")
        return proc

    def job():
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "SELECT status, progress_done, progress_total, attempts FROM analyses_analysis"
            ).fetchone()

    def positions():
        with sqlite3.connect(db) as conn:
            return [r[0] for r in conn.execute("SELECT position FROM analyses_analysisrow ORDER BY position")]

    yield start, job, positions, env["PORT"]
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_serve_runs_the_worker_inside_and_a_restart_loses_nothing(site):
    start, job, positions, port = site
    server = start()
    wait_http(f"http://127.0.0.1:{port}/readyz")  # a live embedded worker
    wait(lambda: job()[1] >= 5, timeout=60)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    assert b"worker embedded in this process" in server.stdout.read()
    status, done, total, _ = job()
    assert status == "queued" and 5 <= done < total
    assert positions() == list(range(done))
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
    start()
    wait(lambda: job()[0] == "done", timeout=120)
    assert total == len(token_ids(JOB_TEXT))
    assert job()[3] == 2 and positions() == list(range(total))
