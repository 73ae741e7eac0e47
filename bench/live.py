"""A throwaway lensweb for the results bench and screenshots: a temporary SQLite database seeded through
the ORM in this process, and `manage.py serve` (daphne) on a free port in a subprocess over the same file.

    with live_site(tmp_dir) as site:      # DJANGO_SETTINGS_MODULE etc. set before django.setup()
        ... create users and analyses with the ORM ...
        site.start()                      # then the server
        site.url("/analyses/1/")
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


class LiveSite:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        self.env.update(
            DJANGO_SETTINGS_MODULE="lensweb.settings.base",
            DATABASE_URL=f"sqlite:///{directory / 'site.sqlite3'}",
            SECRET_KEY="results-bench",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LENSWEB_EMBEDDED_WORKER="false",  # nothing is computed by the server here
            HOST="127.0.0.1",
            PORT=str(self.port),
        )
        self.proc = None

    def setup_django(self) -> None:
        os.environ.update(self.env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", "--noinput", verbosity=0)
        call_command("ensure_demo_user", verbosity=0)

    def start(self) -> None:
        log = open(self.directory / "serve.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.base}/healthz")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def url(self, path: str) -> str:
        return self.base + path


@contextlib.contextmanager
def live_site(directory: Path):
    site = LiveSite(directory)
    site.setup_django()
    try:
        yield site
    finally:
        site.stop()


def login(page, site: LiveSite, username: str = "demo", password: str = "lensweb-demo") -> None:
    page.goto(site.url("/accounts/login/"))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
