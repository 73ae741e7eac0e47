"""`.env` is read when present (lensweb.settings.load_env_file): before the settings module is chosen, never
over the real environment, and never a developer's repo-root `.env` under pytest."""

from __future__ import annotations

import os
import subprocess
import sys

from lensweb.settings import REPO, env_file
from tests.conftest import scaled

SHOW = "from django.conf import settings; print(settings.LENSWEB_MAX_TOKENS, settings.SETTINGS_MODULE)"


def write_env_file(tmp_path):
    path = tmp_path / "lensweb.env"
    path.write_text(
        "# what an operator's .env holds: production, with its secrets\n"
        "LENSWEB_ENV=production\n"
        "SECRET_KEY=dotenv-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz\n"
        "ALLOWED_HOSTS=lens.example.org\n"
        "CSRF_TRUSTED_ORIGINS=https://lens.example.org\n"
        f"DATABASE_URL=sqlite:///{tmp_path / 'dotenv.sqlite3'}\n"
        "LENSWEB_CLIENT_IP_HEADER=HTTP_X_FORWARDED_FOR\n"
        "LENSWEB_MAX_TOKENS=77\n"
    )
    return path


def show_settings(tmp_path, **changes) -> str:
    """`manage.py shell` as an operator runs it: no DJANGO_SETTINGS_MODULE, nothing of lensweb's set but
    what `changes` sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LENSWEB_", "SECURE_"))}
    for name in ("REDIS_URL", "DATABASE_URL", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DEBUG"):
        env.pop(name, None)
    env.update(LENSWEB_ENV_FILE=str(write_env_file(tmp_path)), **changes)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", SHOW],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert done.returncode == 0, f"manage.py shell failed: {done.stderr[-3000:]}"
    return done.stdout.strip()


def test_the_env_file_sets_settings_and_selects_the_settings_module(tmp_path):
    assert show_settings(tmp_path) == "77 lensweb.settings.production", (
        "LENSWEB_MAX_TOKENS and LENSWEB_ENV=production should come from the .env"
    )


def test_the_real_environment_wins_over_the_env_file(tmp_path):
    shown = show_settings(tmp_path, LENSWEB_MAX_TOKENS="55", DJANGO_SETTINGS_MODULE="lensweb.settings.base")
    assert shown == "55 lensweb.settings.base"


def test_which_file_is_read():
    assert env_file({}) == REPO / ".env", "by default, the repo root's"
    assert env_file({"LENSWEB_ENV_FILE": "/etc/lensweb.env"}).as_posix() == "/etc/lensweb.env"
    assert env_file({"LENSWEB_ENV_FILE": ""}) is None, "an empty name reads nothing"
    # Under pytest (and in the servers tests start, which inherit PYTEST_VERSION) only a named file is read.
    assert env_file({"PYTEST_VERSION": "9"}) is None
    assert env_file({"PYTEST_VERSION": "9", "LENSWEB_ENV_FILE": "/tmp/x.env"}).as_posix() == "/tmp/x.env"
