"""PostgreSQL + Redis with worker processes (`manage.py runworker lens-inference`), as deployed at scale.

Each test module run gets its own database (created and dropped here) and its own Redis key prefix.
Outside CI the tests skip when the services are unreachable; with CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import scaled, tiny_registry_path

from .conftest import PG_URL, REDIS_URL, REPO, SLOW_TEXT, reachable, require, token_ids

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _pg_connect(url):
    import psycopg

    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A fresh database + Redis prefix, migrated; yields the environment for subprocesses."""
    pg, rd = urlsplit(PG_URL), urlsplit(REDIS_URL)
    require(
        reachable(pg.hostname, pg.port or 5432), f"PostgreSQL is not reachable at {pg.hostname}:{pg.port}"
    )
    require(reachable(rd.hostname, rd.port or 6379), f"Redis is not reachable at {rd.hostname}:{rd.port}")
    name = f"lensweb_test_{uuid.uuid4().hex[:10]}"
    with _pg_connect(PG_URL) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(pg._replace(path=f"/{name}"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "lensweb.settings.test",
        "DATABASE_URL": url,
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": f"lensweb-test-{name}",
        "LENSWEB_POLL_INTERVAL": "0.5",
        "LENSWEB_HEARTBEAT_INTERVAL": "0.5",
        "LENSWEB_STALE_AFTER": "3",
        "LENSWEB_ROWS_BUDGET": "1",  # one position per batch: a long text makes a job of many batches
        # Two workers on one machine: one thread each, or their spinning threads starve each other.
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "LENSWEB_LENS_REGISTRY": str(tiny_registry_path()),  # a module's fixture: before the autouse one
    }
    manage(env, "migrate", "--noinput", "-v0")
    logs = tmp_path_factory.mktemp("worker-logs")
    yield {"env": env, "url": url, "logs": logs}
    with _pg_connect(PG_URL) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(env, *args, timeout=None) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(120) if timeout is None else timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def shell(env, code: str):
    """Run code in a Django shell against the stack; it prints one JSON line, returned parsed."""
    out = manage(env, "shell", "-c", code)
    return json.loads(out.strip().splitlines()[-1])


SUBMIT = """
import json
from django.contrib.auth import get_user_model
from lensweb.analyses import services
users = {n: get_user_model().objects.get_or_create(username=n)[0] for n in %(names)r}
ids = [services.do_submit(users[n], None, {"text": t}, {}).pk for n, t in %(jobs)r]
print(json.dumps(ids))
"""


def submit(env, jobs: list[tuple[str, str]]) -> list[int]:
    names = sorted({n for n, _ in jobs})
    return shell(env, SUBMIT % {"names": names, "jobs": jobs})


def start_worker(stack, label: str, **extra_env) -> subprocess.Popen:
    log = open(stack["logs"] / f"{label}.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runworker", "lens-inference"],
        cwd=REPO,
        env={**stack["env"], **extra_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log = log
    return proc


def stop_workers(procs, sig=signal.SIGTERM, timeout=None) -> list[int]:
    codes = []
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=scaled(30) if timeout is None else timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        proc.log.close()
    return codes


def query(url, sql, *params):
    with _pg_connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def wait_until(predicate, timeout=90, interval=0.2, what="condition"):
    """Until predicate() is truthy, within scaled(timeout) seconds."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def jobs_by_id(url, ids):
    rows = query(
        url,
        "SELECT id, owner_id, status, attempts, progress_done, progress_total, started_at, finished_at, worker_id "
        "FROM analyses_analysis WHERE id = ANY(%s)",
        list(ids),
    )
    keys = ("id", "owner", "status", "attempts", "done", "total", "started_at", "finished_at", "worker")
    return {row[0]: dict(zip(keys, row, strict=True)) for row in rows}


def positions_of(url, job_id):
    return [
        r[0]
        for r in query(
            url, "SELECT position FROM analyses_analysisrow WHERE analysis_id = %s ORDER BY position", job_id
        )
    ]


def test_twenty_jobs_from_three_users_complete_exactly_once_in_fair_order(stack):
    url = stack["url"]
    # Worst case for plain FIFO: all of alice's, then bob's, then carol's, queued before any worker runs.
    plan = [("alice", f"alice job {i}") for i in range(10)]
    plan += [("bob", f"bob job {i}") for i in range(6)] + [("carol", f"carol job {i}") for i in range(4)]
    ids = submit(stack["env"], plan)
    owner_of = dict(zip(ids, [n for n, _ in plan], strict=True))
    # The claim order, one job per worker: jobs that share a worker's batches take turns inside them instead
    # (tests/web/test_shared_batches.py).
    workers = [start_worker(stack, f"fair-{i}", LENSWEB_SHARED_JOBS="1") for i in (1, 2)]
    try:
        wait_until(
            lambda: all(j["status"] == "done" for j in jobs_by_id(url, ids).values()), what="all 20 jobs done"
        )
    finally:
        codes = stop_workers(workers)
    assert codes == [0, 0]  # SIGTERM while idle: a clean exit
    jobs = jobs_by_id(url, ids)
    assert all(j["attempts"] == 1 for j in jobs.values()), "a job was claimed twice"
    for job_id, job in jobs.items():
        assert positions_of(url, job_id) == list(range(job["total"])), f"rows of job {job_id}"
        assert job["done"] == job["total"]
    assert len({j["worker"] for j in jobs.values()}) == 2, "both workers should have served"
    started = [owner_of[j] for j in sorted(ids, key=lambda j: jobs[j]["started_at"])]
    for name in ("alice", "bob", "carol"):  # FIFO within a user
        mine = [j for j in sorted(ids, key=lambda j: jobs[j]["started_at"]) if owner_of[j] == name]
        assert mine == sorted(mine)
    assert set(started[:3]) == {"alice", "bob", "carol"}, started
    # Round robin as the rule states it (rank = the owner's running jobs + those ahead): a job never starts
    # beside another of its owner's while another user still waits. Start counts alone can't show it: one
    # slow job (a worker's first, on a busy machine) rightly lets the others' next jobs go first.
    assert not _started_beside_own_job_while_others_waited(jobs, owner_of), started
    # carol's four jobs all started long before FIFO would have reached them (positions 17-20)
    assert max(i for i, n in enumerate(started) if n == "carol") < 14, started


def test_kill_9_mid_job_the_other_worker_completes_it_with_every_row_once(stack):
    """Slow (about 30 s here) by what it proves: two real `runworker` processes start (Django, torch, the
    lens: seconds each), one is killed half-way through a 140-batch job, and the other must notice its silence
    (LENSWEB_STALE_AFTER) before it resumes; no cheaper fixture kills a process."""
    url = stack["url"]
    [job_id] = submit(stack["env"], [("dave", SLOW_TEXT)])
    workers = [start_worker(stack, "kill-1"), start_worker(stack, "kill-2")]
    try:
        job = wait_until(
            lambda: (j := jobs_by_id(url, [job_id])[job_id])["status"] == "running" and j["done"] >= 5 and j,
            what="the job to be half-way",
        )
        [(pid,)] = query(url, "SELECT pid FROM analyses_workerrecord WHERE id = %s", job["worker"])
        victim = next(p for p in workers if p.pid == pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=scaled(10))
        rows_at_kill = len(positions_of(url, job_id))
        assert rows_at_kill < job["total"], "the job finished before the kill; make it longer"
        wait_until(lambda: jobs_by_id(url, [job_id])[job_id]["status"] == "done", what="the job to be done")
    finally:
        stop_workers(workers)
    final = jobs_by_id(url, [job_id])[job_id]
    assert final["attempts"] == 2 and final["worker"] != job["worker"]
    assert positions_of(url, job_id) == list(range(len(token_ids(SLOW_TEXT))))
    [(duplicates,)] = query(
        url,
        "SELECT count(*) FROM (SELECT position FROM analyses_analysisrow WHERE analysis_id = %s "
        "GROUP BY position HAVING count(*) > 1) d",
        job_id,
    )
    assert duplicates == 0


def test_sigterm_finishes_the_batch_requeues_the_rest_and_exits(stack):
    """Slow (about 30 s here) by what it proves: a real worker process exits on SIGTERM and a second real one,
    started afterwards (Django, torch, the lens), resumes the job to its last row."""
    url = stack["url"]
    [job_id] = submit(stack["env"], [("erin", SLOW_TEXT)])
    worker = start_worker(stack, "term-1")
    try:
        wait_until(lambda: jobs_by_id(url, [job_id])[job_id]["done"] >= 3, what="some rows")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=scaled(20)) == 0
    finally:
        stop_workers([worker])
    job = jobs_by_id(url, [job_id])[job_id]
    assert job["status"] == "queued" and 3 <= job["done"] < job["total"]
    assert job["attempts"] == 0, "a graceful hand-back (SIGTERM) used up an attempt"
    assert positions_of(url, job_id) == list(range(job["done"]))
    [(state,)] = query(url, "SELECT state FROM analyses_workerrecord WHERE pid = %s", worker.pid)
    assert state == "stopped"
    resumer = start_worker(stack, "term-2")
    try:
        wait_until(lambda: jobs_by_id(url, [job_id])[job_id]["status"] == "done", what="the resumed job")
    finally:
        stop_workers([resumer])
    assert positions_of(url, job_id) == list(range(len(token_ids(SLOW_TEXT))))
    assert jobs_by_id(url, [job_id])[job_id]["attempts"] == 1


def test_killed_database_connections_mid_job_hand_it_back_and_the_worker_resumes_it(stack):
    """A PostgreSQL restart, as the worker sees it: every connection it holds is terminated mid-job."""
    url = stack["url"]
    [job_id] = submit(stack["env"], [("frank", SLOW_TEXT)])
    worker = start_worker(stack, "pg-kill")
    try:
        job = wait_until(
            lambda: (j := jobs_by_id(url, [job_id])[job_id])["status"] == "running" and j["done"] >= 5 and j,
            what="the job to be under way",
        )
        killed = query(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert killed and all(ok for (ok,) in killed), "the worker held no connection to terminate"
        final = wait_until(
            lambda: (
                (j := jobs_by_id(url, [job_id])[job_id])["status"] in ("done", "failed", "cancelled") and j
            ),
            what="the job to end",
        )
        assert worker.poll() is None, "the worker exited when its connections were killed"
    finally:
        stop_workers([worker])
    log = (stack["logs"] / "pg-kill.log").read_text()
    assert final["status"] == "done", f"the job ended {final['status']}; worker log:\n{log[-3000:]}"
    assert job["done"] < final["total"], "the job finished before the kill; make it longer"
    assert "handing it back to the queue" in log, log[-3000:]
    assert final["attempts"] == 2  # the error counts; the same worker claimed it again
    assert positions_of(url, job_id) == list(range(len(token_ids(SLOW_TEXT))))


def _started_beside_own_job_while_others_waited(jobs, owner_of, margin=0.25):
    """(job, its owner's job running beside it) pairs that broke the rule. `margin` seconds at either end of
    the running job absorb a claim made from a queue read just before that job started or ended."""
    broken = []
    for job_id, job in jobs.items():
        t = job["started_at"]
        others_waiting = any(
            owner_of[k] != owner_of[job_id] and other["started_at"] > t for k, other in jobs.items()
        )
        for k, other in jobs.items():
            if k == job_id or owner_of[k] != owner_of[job_id] or not others_waiting:
                continue
            if (t - other["started_at"]).total_seconds() > margin and (
                other["finished_at"] - t
            ).total_seconds() > margin:
                broken.append((job_id, k))
    return broken


def _nth(started: list[str], name: str, n: int) -> int | None:
    """Where `name`'s n-th job started in `started` (1-based n), or None if it has fewer."""
    seen = [i for i, who in enumerate(started) if who == name]
    return seen[n - 1] if len(seen) >= n else None
