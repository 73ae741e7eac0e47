"""A real `manage.py serve` (daphne, optionally the embedded worker; or another server command) and Debian's
Chromium, for the browser tests of every app. One place, so that every browser test starts servers and browsers the same way."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.web.conftest import REPO, free_port, require, scaled, wait_http

CHROMIUM = "/usr/bin/chromium"  # Debian's; never `playwright install`
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def site_environ(tmp: Path, **env: str) -> dict[str, str]:
    """The environment of the live site whose SQLite database is in `tmp` (live_server's, less its address)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    environ.update(
        DJANGO_SETTINGS_MODULE="lensweb.settings.base",
        DATABASE_URL=f"sqlite:///{tmp / 'live.sqlite3'}",
        SECRET_KEY="browser-test",
        **env,
    )
    return environ


def manage_shell(tmp: Path, code: str, **env: str) -> str:
    """`manage.py shell -c code` against the live site in `tmp` (its database, its settings); its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO,
        env=site_environ(tmp, **env),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@contextlib.contextmanager
def live_server(
    tmp: Path,
    *,
    setup: list[list[str]],
    ready: str = "/readyz",
    command: tuple[str, ...] = ("serve",),
    browser: bool = True,
    **env: str,
) -> Iterator[str]:
    """Migrate a fresh SQLite database in `tmp`, run each `manage.py` command of `setup`, serve (`manage.py`
    `command`, each "{port}" in it replaced by a free port, also in $PORT) until `ready` answers 200
    (/readyz: the embedded worker has heart-beaten), yield the base URL, and stop the server with SIGTERM
    (as an operator would) when done. Waits are scaled (tests.conftest.scaled); a server that does not come
    up fails with its log. `browser`: skip unless Chromium is installed."""
    if browser:
        require(shutil.which(CHROMIUM) is not None, f"{CHROMIUM} is not installed")
    port = free_port()
    environ = site_environ(tmp, ALLOWED_HOSTS="127.0.0.1,localhost", HOST="127.0.0.1", PORT=str(port), **env)
    for step in (["migrate", "--noinput", "-v0"], *setup):
        done = subprocess.run(
            [sys.executable, "manage.py", *step], cwd=REPO, env=environ, capture_output=True, text=True
        )
        assert done.returncode == 0, f"manage.py {' '.join(step)} failed: {done.stderr[-3000:]}"
    log = open(tmp / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *(arg.format(port=port) for arg in command)],
        cwd=REPO,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{base}{ready}")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; serve.log ends:\n{(tmp / 'serve.log').read_text()[-3000:]}"
            ) from None
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page, base: str, then: str = "#analysis-form") -> None:
    """Sign in through the login form as the demo user (`manage.py ensure_demo_user` makes it), then wait
    for `then` on the page it leads to."""
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", "demo")
    page.fill("#id_password", "lensweb-demo")
    page.click("button[type=submit]")
    page.wait_for_selector(then)
