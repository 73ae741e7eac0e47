"""Password guessing at both login pages (/accounts/login/ and Django's /admin/login/): limited per client
address and per username, with the client's address taken from the proxy's header so that neither sharing
the proxy's address nor writing an X-Forwarded-For of one's own changes whose counter a request lands in."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from lensweb.accounts.ratelimits import client_ip

pytestmark = pytest.mark.django_db

LOGINS = ["/admin/login/", "/accounts/login/"]
ROOT_PASSWORD = "pw-root-Long-1"


def attempt(client, url, username="root", password="wrong", **extra):
    return client.post(url, {"username": username, "password": password, "next": "/admin/"}, **extra)


def assert_limited(response, what="login attempts"):
    assert response.status_code == 429, f"expected 429, got {response.status_code}"
    assert int(response["Retry-After"]) >= 1
    assert f"Too many {what}" in response.content.decode()


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password=ROOT_PASSWORD)


@pytest.fixture
def per_ip_only(settings):
    settings.LENSWEB_LOGIN_RATE = "3/m"
    settings.LENSWEB_LOGIN_USERNAME_RATE = ""
    return settings


@pytest.fixture
def per_username_only(settings):
    settings.LENSWEB_LOGIN_RATE = "1000/m"
    settings.LENSWEB_LOGIN_USERNAME_RATE = "3/h"
    return settings


def test_admin_login_is_limited_per_ip(client, root, per_ip_only):
    for _ in range(3):
        assert attempt(client, "/admin/login/").status_code == 200  # the form again, with an error
    # The right password does not get past the limit either: the guesser cannot tell.
    assert_limited(attempt(client, "/admin/login/", password=ROOT_PASSWORD))
    assert client.get("/admin/login/").status_code == 200  # showing the form is not limited
    other_client = attempt(client, "/admin/login/", password=ROOT_PASSWORD, REMOTE_ADDR="10.9.9.9")
    assert other_client.status_code == 302 and other_client.url == "/admin/"


def test_both_login_pages_share_the_counters(client, root, per_ip_only):
    """Two doors to one password check: alternating between them buys no extra guesses."""
    assert attempt(client, "/accounts/login/").status_code == 200
    assert attempt(client, "/admin/login/").status_code == 200
    assert attempt(client, "/accounts/login/").status_code == 200
    assert_limited(attempt(client, "/admin/login/"))
    assert_limited(attempt(client, "/accounts/login/"))


@pytest.mark.parametrize("url", LOGINS)
def test_one_account_is_limited_from_any_number_of_addresses(client, root, per_username_only, url):
    # Spelling variants of one name are one counter: case, surrounding spaces, full-width letters.
    for n, username in enumerate(["root", " ROOT ", "ｒｏｏｔ"]):
        assert attempt(client, url, username=username, REMOTE_ADDR=f"198.51.100.{n}").status_code == 200
    limited = attempt(client, url, username="Root", password=ROOT_PASSWORD, REMOTE_ADDR="203.0.113.50")
    assert_limited(limited, "login attempts for this account")
    # Other accounts, from an address that took part, are not held up.
    assert attempt(client, url, username="someone-else", REMOTE_ADDR="198.51.100.0").status_code == 200


@pytest.fixture
def behind_proxy(settings, per_ip_only):
    """daphne behind one proxy (at 10.0.0.1) that appends the peer's address to X-Forwarded-For."""
    settings.LENSWEB_CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.LENSWEB_TRUSTED_PROXY_HOPS = 1
    return {"REMOTE_ADDR": "10.0.0.1"}


def via_proxy(client, proxy, url, client_sent: str | None, real_client: str, **fields):
    forwarded = f"{client_sent}, {real_client}" if client_sent else real_client
    return attempt(client, url, HTTP_X_FORWARDED_FOR=forwarded, **proxy, **fields)


@pytest.mark.parametrize("url", LOGINS)
def test_behind_a_proxy_clients_are_told_apart_and_cannot_pick_their_counter(client, behind_proxy, url):
    guesser = "203.0.113.7"
    # A fresh made-up address in front of each try: the proxy's own entry (right-most) is what counts.
    for spoof in (None, "192.0.2.1", "192.0.2.2"):
        assert via_proxy(client, behind_proxy, url, spoof, guesser).status_code == 200
    assert_limited(via_proxy(client, behind_proxy, url, "192.0.2.3", guesser))
    # Everyone shares the proxy's REMOTE_ADDR, yet another client is not held up by the guesser …
    assert via_proxy(client, behind_proxy, url, None, "198.51.100.8").status_code == 200
    # … and cannot be framed: claiming to be someone else does not land in their counter.
    assert via_proxy(client, behind_proxy, url, "198.51.100.9", "198.51.100.8").status_code == 200
    assert via_proxy(client, behind_proxy, url, None, "198.51.100.9").status_code == 200


def request_with(**meta):
    return RequestFactory().get("/", **{"REMOTE_ADDR": "10.0.0.1", **meta})


def test_client_ip_reads_the_configured_header(settings):
    settings.LENSWEB_CLIENT_IP_HEADER = ""
    assert client_ip(request_with(HTTP_X_FORWARDED_FOR="203.0.113.7")) == "10.0.0.1"  # not trusted: unset

    settings.LENSWEB_CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    settings.LENSWEB_TRUSTED_PROXY_HOPS = 1
    assert client_ip(request_with(HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.7")) == "203.0.113.7"
    assert client_ip(request_with(HTTP_X_FORWARDED_FOR="203.0.113.7:5123")) == "203.0.113.7"
    assert client_ip(request_with(HTTP_X_FORWARDED_FOR="[2001:db8::7]:443")) == "2001:db8::7"
    assert client_ip(request_with()) == "10.0.0.1"  # not through the proxy: a probe on the container
    assert client_ip(request_with(HTTP_X_FORWARDED_FOR="unknown")) == "10.0.0.1"  # never a 500
    assert client_ip(request_with(REMOTE_ADDR="")) == "0.0.0.0"  # a Unix socket: one shared counter

    settings.LENSWEB_TRUSTED_PROXY_HOPS = 2  # a CDN, then nginx: the CDN's entry names the client
    chain = "192.0.2.1, 203.0.113.7, 172.16.0.9"
    assert client_ip(request_with(HTTP_X_FORWARDED_FOR=chain)) == "203.0.113.7"
    assert client_ip(request_with(HTTP_X_FORWARDED_FOR="203.0.113.7")) == "203.0.113.7"  # came via nginx only

    settings.LENSWEB_CLIENT_IP_HEADER = "HTTP_X_REAL_IP"
    assert client_ip(request_with(HTTP_X_REAL_IP="203.0.113.8", HTTP_X_FORWARDED_FOR="192.0.2.1")) == (
        "203.0.113.8"
    )
