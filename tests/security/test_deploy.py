"""The production settings as a deployment runs them (a subprocess with the environment it would set):
`check --deploy` has nothing to say, HTTPS is enforced behind the proxy, and missing secrets stop it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST = "lens.example.org"


def production_env(tmp_path, **changes) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LENSWEB_", "SECURE_"))}
    env.pop("REDIS_URL", None)
    env.update(
        LENSWEB_ENV="production",
        DJANGO_SETTINGS_MODULE="lensweb.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS=HOST,
        CSRF_TRUSTED_ORIGINS=f"https://{HOST}",
        DEBUG="off",
        DATABASE_URL=f"sqlite:///{tmp_path / 'deploy.sqlite3'}",  # empty: no demo user to refuse
    )
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_has_no_warnings(tmp_path):
    result = run(production_env(tmp_path), "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output, output
    assert "WARNING" not in output.upper() and "security.W" not in output, output


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without(tmp_path, missing):
    result = run(production_env(tmp_path, **{missing: None}), "manage.py", "check")
    assert result.returncode != 0
    assert missing in result.stderr


PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
c = Client(HTTP_HOST="lens.example.org")
plain, probe = c.get("/"), c.get("/healthz")
tls = c.get("/healthz", headers={"x-forwarded-proto": "https"})
print(json.dumps({
    "plain": [plain.status_code, plain.headers.get("Location")],
    "probe": probe.status_code,
    "tls": dict(tls.headers),
    "settings": {k: getattr(settings, k) for k in (
        "DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_HTTPONLY",
        "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER", "X_FRAME_OPTIONS",
        "SECURE_REFERRER_POLICY")},
}))
"""


def test_https_behind_the_proxy(tmp_path):
    result = run(production_env(tmp_path), "-c", PROBE)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, f"https://{HOST}/"]  # plain HTTP is sent to HTTPS …
    assert seen["probe"] == 200  # … except the probes, which talk to the container directly
    headers = seen["tls"]
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert f"connect-src 'self' wss://{HOST}" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "same-origin"
    assert seen["settings"] == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_HTTPONLY": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "X_FRAME_OPTIONS": "DENY",
        "SECURE_REFERRER_POLICY": "same-origin",
    }
