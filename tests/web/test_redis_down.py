"""Redis stopped or black-holed under a real `manage.py serve` + `manage.py runworker lens-inference`.

Login, the form and the API answer (never a 500, never a hang); the worker keeps claiming jobs from the
database instead of exiting; when Redis comes back the jobs queued meanwhile have run and new ones ring
the worker's doorbell again. Each test runs its own redis-server (or a socket that accepts and never
answers) on a free loopback port, and a SQLite file both processes share.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import scaled

from .conftest import REPO, free_port, require, wait_http

pytestmark = [pytest.mark.redis]

REDIS_SERVER = shutil.which("redis-server")
USER, PASSWORD = "rita", "pw-rita-redis"
FORM = {"text": "", "input_format": "text", "best_of_k": 1, "temperature": 1.0, "seed": 42, "lens": "tiny"}
OK_STATUSES = (200, 202, 302, 429, 503)


# --- a Redis of the test's own -------------------------------------------------------------------------


class RedisServer:
    """redis-server on `port`, stopped and started again on the same port."""

    def __init__(self, port: int, logs: Path):
        self.port, self.logs, self.proc = port, logs, None

    def start(self) -> None:
        log = open(self.logs / f"redis-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 (closed with it)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            + ["--daemonize", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.proc.log = log
        deadline = time.monotonic() + scaled(20)
        while not reachable(self.port):
            assert self.proc.poll() is None, f"redis-server exited: {self.proc.returncode}"
            assert time.monotonic() < deadline, "redis-server did not start listening"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=scaled(20))
            self.proc.log.close()
        assert not reachable(self.port), "Redis still answers after being stopped"


class BlackHole:
    """Accepts connections and never answers: a hung Redis (or a firewall that swallows replies)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # read nothing, answer nothing

    def close(self):
        self.closed = True
        self.sock.close()
        for conn in self.held:
            conn.close()


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# --- the site: serve + runworker on one SQLite file --------------------------------------------------------


class Site:
    def __init__(self, tmp: Path, redis_port: int, registry: Path, **extra_env: str):
        self.tmp, self.port, self.procs = tmp, free_port(), {}
        self.db = tmp / "site.sqlite3"
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update(
            DJANGO_SETTINGS_MODULE="lensweb.settings.test",
            DATABASE_URL=f"sqlite:///{self.db}",
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            REDIS_PREFIX=f"lensweb-redis-down-{os.getpid()}-{self.port}",
            LENSWEB_LENS_REGISTRY=str(registry),
            LENSWEB_RESULT_CACHE="1",  # its Redis front is on the request path too
            LENSWEB_HEARTBEAT_INTERVAL="0.5",
            LENSWEB_STALE_AFTER="10",
            HOST="127.0.0.1",
            PORT=str(self.port),
            OMP_NUM_THREADS="1",
            PYTHONPATH=str(REPO),
            **extra_env,
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def manage(self, *args) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=scaled(120),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def setup(self) -> str:
        """Migrate, create the user; returns an API key of theirs."""
        self.manage("migrate", "--noinput", "-v0")
        code = (
            "import json\nfrom django.contrib.auth import get_user_model\nfrom lensweb.accounts import keys\n"
            f"user = get_user_model().objects.create_user({USER!r}, password={PASSWORD!r})\n"
            "print(json.dumps(keys.create_key(user, 'redis-down')[1]))"
        )
        return json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        proc.log = log
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> dict[str, int]:
        codes = {}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
            proc.log.close()
        return codes

    def jobs(self) -> dict[int, tuple[str, int, int]]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            rows = conn.execute("SELECT id, status, progress_done, progress_total FROM analyses_analysis")
            return {row[0]: row[1:] for row in rows}

    def positions(self, job_id: int) -> list[int]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            rows = conn.execute(
                "SELECT position FROM analyses_analysisrow WHERE analysis_id = ? ORDER BY position", (job_id,)
            )
            return [row[0] for row in rows]

    def worker_channel(self) -> str:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            row = conn.execute(
                "SELECT channel_name FROM analyses_workerrecord WHERE state IN ('idle', 'busy') ORDER BY id DESC"
            ).fetchone()
            return row[0] if row else ""


@contextlib.contextmanager
def site_on(tmp: Path, redis_port: int, registry: Path, **env: str):
    site = Site(tmp, redis_port, registry, **env)
    key = site.setup()
    site.start("serve", "serve")
    site.start("worker", "runworker", "lens-inference")
    try:
        wait_http(f"{site.base}/healthz", timeout=scaled(60))
        yield site, key
    finally:
        site.stop()


# --- an HTTP client with cookies that does not follow redirects --------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Client:
    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def request(self, method: str, path: str, data: bytes | None = None, headers=None, timeout=60):
        """(status, headers, body, seconds taken)."""
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        started = time.monotonic()
        try:
            with self.opener.open(request, timeout=timeout) as response:
                status, head, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, head, body = exc.code, exc.headers, exc.read()
        return status, head, body.decode(errors="replace"), time.monotonic() - started

    def csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken")

    def post_form(self, path: str, fields: dict, timeout=60):
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": self.csrf()}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + path}
        return self.request("POST", path, data, headers, timeout)


def login(client: Client, timeout=60):
    status, _, body, _ = client.request("GET", "/accounts/login/", timeout=timeout)
    assert status == 200, f"the login page answered {status}: {body[:500]}"
    return client.post_form("/accounts/login/", {"username": USER, "password": PASSWORD}, timeout)


def api_submit(base: str, key: str, text: str, timeout=60):
    client = Client(base)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return client.request("POST", "/api/v1/analyses", json.dumps({"text": text}).encode(), headers, timeout)


def check_answer(what: str, answer, within: float, expected=OK_STATUSES) -> None:
    status, headers, body, took = answer
    assert status in expected, f"{what} answered {status} (expected one of {expected}): {body[:800]}"
    if status in (429, 503):
        assert headers.get("Retry-After"), f"{what} answered {status} without Retry-After"
    assert took < within, f"{what} took {took:.1f} s (bound {within:.0f} s)"


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {scaled(timeout):.0f} s waiting for {what}")


def all_done(site: Site, ids) -> bool:
    jobs = site.jobs()
    return all(jobs.get(i, ("",))[0] == "done" for i in ids)


@pytest.fixture
def redis_server(tmp_path):
    require(REDIS_SERVER is not None, "redis-server is not installed")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


# --- the tests ---------------------------------------------------------------------------------------------


def test_redis_stopped_requests_answer_the_worker_keeps_working_and_nothing_is_lost(
    tmp_path, redis_server, tiny_lens_registry
):
    """Slow (about 40 s here) by design: a real server and worker ride out a real Redis stopped and started
    again, and the worker polls every 20 s so that a job done quickly after Redis is back proves the doorbell."""
    # Polls slowly: a job that completes quickly after Redis is back was woken by its doorbell.
    poll = scaled(20)
    with site_on(tmp_path, redis_server.port, tiny_lens_registry, LENSWEB_POLL_INTERVAL=str(poll)) as (
        site,
        key,
    ):
        wait_http(f"{site.base}/readyz", timeout=scaled(90))  # a live worker, and the layer answers
        channel_before = site.worker_channel()
        assert channel_before, "the worker recorded no channel of its own"
        redis_server.stop()

        # Login, the page, the form and the API, with Redis stopped.
        browser = Client(site.base)
        check_answer("login", login(browser), scaled(10), expected=(302,))
        status, _, body, _ = browser.request("GET", "/")
        assert status == 200, f"the page answered {status}: {body[:500]}"
        form = {**FORM, "text": "Submitted through the form while Redis was down."}
        check_answer("the form's submit", browser.post_form("/analyses/", form), scaled(10), expected=(302,))
        answer = api_submit(site.base, key, "Submitted through the API while Redis was down.")
        check_answer("the API's submit", answer, scaled(10), expected=(202,))
        during = set(site.jobs())
        assert len(during) == 2

        # The worker claims them from the database (the doorbells were lost), and does not exit.
        wait_until(lambda: all_done(site, during), poll + 90, "the jobs submitted while Redis was down")
        assert site.procs["worker"].poll() is None, "the worker exited:\n" + site.log("worker")[-3000:]
        assert "the channel layer failed" in site.log("worker")

        # Redis back: the web process' layer answers again, and the worker listens again, on a new channel
        # of its own (its consumer died with the layer), which its record names for the doorbells.
        redis_server.start()
        wait_http(f"{site.base}/readyz", timeout=scaled(60))
        wait_until(
            lambda: "the channel layer answers again" in site.log("worker"), 60, "the worker to listen"
        )
        wait_until(lambda: site.worker_channel() not in ("", channel_before), 30, "the worker's new channel")
        after = []
        for i in range(3):
            status, _, body, _ = api_submit(site.base, key, f"Submitted after Redis came back, number {i}.")
            assert status == 202, body[:500]
            after.append(json.loads(body)["id"])
        started = time.monotonic()
        wait_until(lambda: all_done(site, after), poll + 60, "the jobs submitted after Redis came back")
        assert time.monotonic() - started < poll, "the worker's doorbell did not ring: it waited for its poll"
        assert site.procs["worker"].poll() is None, "the worker exited:\n" + site.log("worker")[-3000:]
        jobs = site.jobs()
        assert len(jobs) == 5 and all(status == "done" for status, _, _ in jobs.values()), jobs
        for job_id, (_, done, total) in jobs.items():
            assert site.positions(job_id) == list(range(total)) and done == total, f"rows of job {job_id}"
    assert "Internal Server Error" not in site.log("serve"), site.log("serve")[-3000:]


def test_a_black_holed_redis_cannot_hang_a_request_or_stop_the_worker(tmp_path, tiny_lens_registry):
    """Connections are accepted and never answered: every Redis call must give up on its own timeout. Slow
    (about 35 s here) by design: each Redis user waits out its REDIS_TIMEOUT before its breaker opens."""
    hole = BlackHole()
    try:
        with site_on(tmp_path, hole.port, tiny_lens_registry, LENSWEB_POLL_INTERVAL="0.5") as (site, key):
            bound = scaled(15)  # REDIS_TIMEOUT (2 s) for each of a few Redis users, then their breakers
            browser = Client(site.base)
            check_answer("login", login(browser, timeout=120), bound, expected=(302,))
            form = {**FORM, "text": "Submitted through the form with Redis black-holed."}
            check_answer("the form's submit", browser.post_form("/analyses/", form, 120), bound, (302,))
            wait_until(lambda: site.worker_channel(), 60, "the worker to register")
            answer = api_submit(site.base, key, "Submitted through the API with Redis black-holed.", 120)
            check_answer("the API's submit", answer, bound, expected=(202,))
            ids = set(site.jobs())
            assert len(ids) == 2
            wait_until(lambda: all_done(site, ids), 120, "the jobs submitted with Redis black-holed")
            assert site.procs["worker"].poll() is None, "the worker exited:\n" + site.log("worker")[-3000:]
            status, _, body, took = Client(site.base).request("GET", "/readyz", timeout=120)
            assert status == 503 and took < bound, f"/readyz answered {status} in {took:.1f} s: {body[:300]}"
    finally:
        hole.close()
    assert "Internal Server Error" not in site.log("serve"), site.log("serve")[-3000:]


# --- the pieces, in this process ---------------------------------------------------------------------------


def test_the_fail_soft_cache_falls_back_while_redis_is_stopped_and_returns_to_it(redis_server, caplog):
    import redis

    from lensweb.failsoft import FailSoftRedisCache

    cache = FailSoftRedisCache(
        f"redis://127.0.0.1:{redis_server.port}/0",
        {
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
            "RETRY_AFTER": 0.5,
            "KEY_PREFIX": f"failsoft-{time.monotonic_ns()}",
            "FALLBACK": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "failsoft"},
        },
    )
    cache.breaker.reset()
    assert cache.add("count", 1, 60) and cache.incr("count") == 2  # in Redis
    redis_server.stop()
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="lensweb.redis"):
        assert cache.get("count") is None  # the fallback: it never saw Redis' counter
        assert cache.add("count", 1, 60) and cache.incr("count") == 2 and cache.incr("count") == 3
    assert time.monotonic() - started < scaled(5)
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1, "log it once"
    redis_server.start()  # empty: it keeps nothing on disk
    time.sleep(0.6)  # RETRY_AFTER
    assert cache.add("fresh", 1, 60) and cache.incr("fresh") == 2
    raw = redis.Redis(port=redis_server.port)
    assert int(raw.get(cache.make_key("fresh"))) == 2, "the cache did not go back to Redis"
    assert cache.get("count") is None  # Redis' (lost), not the fallback's 3


async def test_a_black_holed_channel_layer_gives_up_in_time_then_fails_fast():
    import redis.exceptions

    from lensweb.failsoft import BoundedRedisChannelLayer, RedisUnavailable

    hole = BlackHole()
    try:
        layer = BoundedRedisChannelLayer(
            hosts=[{"address": f"redis://127.0.0.1:{hole.port}/0", "socket_connect_timeout": 1}],
            prefix=f"bounded-{hole.port}",
            operation_timeout=1.0,
            retry_after=30,
        )
        layer.breaker.reset()
        started = time.monotonic()
        with pytest.raises((TimeoutError, redis.exceptions.TimeoutError)):
            await layer.group_send("user-1", {"type": "analysis.state"})
        assert time.monotonic() - started < scaled(3), "the send waited past its operation timeout"
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            await layer.send("lens-inference", {"type": "analysis.doorbell"})
        assert time.monotonic() - started < scaled(0.5), "the open breaker still waited for Redis"
    finally:
        hole.close()
