"""The production settings as a deployment runs them (a subprocess with the environment it would set):
`check --deploy` has nothing to say, HTTPS is enforced behind the proxy, rate limits see the client's address
behind it, /metrics wants its token, and missing secrets or a missing proxy setting stop it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import scaled

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
        LENSWEB_CLIENT_IP_HEADER="HTTP_X_FORWARDED_FOR",
    )
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=scaled(120)
    )


def test_check_deploy_has_no_warnings(tmp_path):
    result = run(production_env(tmp_path), "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output, output
    assert "WARNING" not in output.upper() and "security.W" not in output, output


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS", "LENSWEB_CLIENT_IP_HEADER"])
def test_production_refuses_to_start_without(tmp_path, missing):
    result = run(production_env(tmp_path, **{missing: None}), "manage.py", "check")
    assert result.returncode != 0
    assert missing in result.stderr


@pytest.mark.parametrize(
    "key",
    ["", "   ", "insecure-development-key-set-SECRET_KEY-in-production"],
    ids=["empty", "blank", "published"],
)
def test_production_refuses_an_empty_or_the_published_development_secret_key(tmp_path, key):
    """An empty key started and answered 500 to everything; the development key is in this repository."""
    result = run(production_env(tmp_path, SECRET_KEY=key), "manage.py", "check")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured: SECRET_KEY must be a long random secret" in message, message


def test_the_refusal_says_how_to_name_the_proxy_header_or_declare_none(tmp_path):
    result = run(production_env(tmp_path, LENSWEB_CLIENT_IP_HEADER=None), "manage.py", "check")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("django.core.exceptions.ImproperlyConfigured: Set LENSWEB_CLIENT_IP_HEADER"), (
        message
    )
    assert "HTTP_X_FORWARDED_FOR" in message and "LENSWEB_BEHIND_PROXY=false" in message, message


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"LENSWEB_BEHIND_PROXY": "false"}, "LENSWEB_BEHIND_PROXY=false"),  # a header no proxy sets
        ({"LENSWEB_TRUSTED_PROXY_HOPS": "0"}, "LENSWEB_TRUSTED_PROXY_HOPS"),
        ({"RATELIMIT_IP_META_KEY": "HTTP_X_FORWARDED_FOR"}, "RATELIMIT_IP_META_KEY"),  # the old setting
    ],
    ids=["header-without-proxy", "no-hops", "old-setting"],
)
def test_production_refuses_contradictory_proxy_settings(tmp_path, changes, named):
    result = run(production_env(tmp_path, **changes), "manage.py", "check")
    assert result.returncode != 0 and named in result.stderr.strip().splitlines()[-1], result.stderr


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


# Behind the proxy (REMOTE_ADDR is the proxy's, 10.0.0.1), three logins a minute per client address.
CLIENTS = """
import json, django
django.setup()
from tests.ratewindows import hold_rate_windows
hold_rate_windows()
from django.core.management import call_command
from django.test import Client
call_command("migrate", verbosity=0)
c = Client(HTTP_HOST="lens.example.org", REMOTE_ADDR="10.0.0.1", headers={"x-forwarded-proto": "https"})
def login(forwarded):
    form = {"username": "nobody", "password": "wrong"}
    return c.post("/accounts/login/", form, headers={"x-forwarded-for": forwarded}).status_code
spoofed = [login(f"192.0.2.{n}, 203.0.113.7") for n in range(4)]  # one client, a new made-up address each time
print(json.dumps({
    "spoofed": spoofed,
    "someone_else": login("198.51.100.8"),
    "framed": login("198.51.100.9, 198.51.100.8"),
    "metrics_loopback": Client(HTTP_HOST="lens.example.org").get("/metrics").status_code,  # from 127.0.0.1
    "metrics_token": Client(HTTP_HOST="lens.example.org").get(
        "/metrics", headers={"authorization": "Bearer scrape-token-1"}).status_code,
}))
"""


def test_behind_the_proxy_each_client_has_its_own_counter(tmp_path):
    result = run(production_env(tmp_path, LENSWEB_LOGIN_RATE="3/m"), "-c", CLIENTS)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["spoofed"] == [
        200,
        200,
        200,
        429,
    ]  # what the client wrote before the proxy's entry is ignored
    assert seen["someone_else"] == 200  # not throttled together with the guesser behind the shared proxy
    assert seen["framed"] == 200  # nor can the guesser spend another client's attempts


@pytest.mark.parametrize("token", [None, "scrape-token-1"])
def test_metrics_from_loopback_needs_the_token(tmp_path, token):
    """Daphne sits behind a proxy on the same host: a request from loopback is anyone's."""
    result = run(production_env(tmp_path, LENSWEB_METRICS_TOKEN=token), "-c", CLIENTS)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["metrics_loopback"] == (403 if token is None else 401)
    assert seen["metrics_token"] == (403 if token is None else 200)


DIRECT = """
import json, django
django.setup()
from django.conf import settings
from django.test import RequestFactory
from lensweb.accounts.ratelimits import client_ip
request = RequestFactory().get("/", REMOTE_ADDR="198.51.100.8", HTTP_X_FORWARDED_FOR="203.0.113.7")
print(json.dumps({"client_ip": client_ip(request), "ssl_header": settings.SECURE_PROXY_SSL_HEADER}))
"""


def test_without_a_proxy_no_forwarded_header_is_believed(tmp_path):
    env = production_env(tmp_path, LENSWEB_CLIENT_IP_HEADER=None, LENSWEB_BEHIND_PROXY="false")
    result = run(env, "-c", DIRECT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "client_ip": "198.51.100.8",
        "ssl_header": None,
    }


DEMO_USER = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
call_command("ensure_demo_user")
"""


@pytest.mark.parametrize("published", [True, False], ids=["published-password", "operators-own"])
def test_production_refuses_only_the_published_demo_password(tmp_path, published):
    """compose's first look creates `demo` with the operator's LENSWEB_DEMO_PASSWORD: that one is nobody
    else's, so production serves with it; the published lensweb-demo it refuses."""
    password = "lensweb-demo" if published else "operators-own-" + secrets.token_hex(8)
    env = production_env(tmp_path, LENSWEB_DEMO_PASSWORD=password)
    created = run(env, "-c", DEMO_USER)
    assert created.returncode == 0, created.stderr
    assert (password in created.stdout) == published, "only the published password may be printed"
    check = run(env, "manage.py", "check", "--deploy")
    assert (check.returncode != 0) == published, check.stdout + check.stderr
    assert ("lensweb.E001" in check.stderr) == published, check.stderr
