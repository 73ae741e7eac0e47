"""`manage.py serve` as `make run` starts it: daphne with the worker embedded (SQLite, in-memory layer), on
the tiny test lens (the session's registry, inherited). A restart loses nothing: SIGTERM finishes the batch
and re-queues the job; the next start resumes it."""

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

from .conftest import REPO, SLOW_TEXT, free_port, scaled, token_ids, wait_http

# One of SLOW_TEXT's three repeats (~45 tokens): with one position per batch, enough batches to stop the job
# in the middle, and few enough that the test stays short on a busy machine.
JOB_TEXT = SLOW_TEXT[: len(SLOW_TEXT) // 3]


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
        # A file, not a pipe: nobody reads a pipe while the server runs, and a full one would stall it.
        log = tmp_path / f"serve-{len(procs) + 1}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "serve"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc.log = log
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


def wait(predicate, timeout: float, what: str, log) -> None:
    """Until predicate() holds, within scaled(timeout) seconds; a failure says what and shows the server log."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, (
            f"timed out after {limit:.0f} s waiting for {what}; serve log ends:\n{log.read_text()[-3000:]}"
        )
        time.sleep(0.1)


def test_serve_runs_the_worker_inside_and_a_restart_loses_nothing(site):
    start, job, positions, port = site
    server = start()
    wait_http(f"http://127.0.0.1:{port}/readyz")  # a live embedded worker
    wait(lambda: job()[1] >= 5, 60, "the embedded worker to store 5 positions", server.log)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=scaled(20)) == 0, "serve did not exit on SIGTERM"
    assert "worker embedded in this process" in server.log.read_text()
    status, done, total, _ = job()
    assert status == "queued" and 5 <= done < total, (status, done, total)
    assert positions() == list(range(done))
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
    again = start()
    wait(
        lambda: job()[0] == "done",
        120,
        f"the restarted server to finish the job ({total} positions)",
        again.log,
    )
    assert total == len(token_ids(JOB_TEXT))
    # one claim per start; the graceful hand-back on SIGTERM gave its attempt back
    assert job()[3] == 1 and positions() == list(range(total))
