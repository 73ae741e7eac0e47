"""The socket's Origin check through the real ASGI application: a page may open /ws/analyses/ only from this
site's own origin (scheme, host and port) or from CSRF_TRUSTED_ORIGINS. A page of another app on the same
host (another port) carries the user's cookie just the same, and must be refused before accept."""

from __future__ import annotations

import contextlib

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from lensweb.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cookie(django_user_model):
    user = django_user_model.objects.create_user("origin-tester", password="pw-origin-Long-1")
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


@contextlib.asynccontextmanager
async def socket(cookie, *headers, scheme="ws"):
    """A logged-in handshake with these (name, value) headers."""
    pairs = [(name.encode(), value.encode()) for name, value in headers] + [(b"cookie", cookie.encode())]
    communicator = WebsocketCommunicator(application, "/ws/analyses/", headers=pairs)
    communicator.scope["scheme"] = scheme
    try:
        yield communicator
    finally:
        await communicator.disconnect()


async def opens(cookie, *headers, scheme="ws") -> bool:
    async with socket(cookie, *headers, scheme=scheme) as communicator:
        connected, _ = await communicator.connect()
        if connected:
            await communicator.receive_from(timeout=10)  # the replay: the consumer really ran
        return connected


@pytest.mark.parametrize(
    "host, origin",
    [
        ("testserver", "http://testserver"),
        ("testserver:80", "http://testserver"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("LOCALHOST:8000", "http://localhost:8000"),
    ],
)
async def test_the_sites_own_pages_open_it(cookie, host, origin):
    assert await opens(cookie, ("host", host), ("origin", origin)), f"{origin} refused on {host}"


@pytest.mark.parametrize(
    "host, origin",
    [
        ("127.0.0.1:8000", "http://127.0.0.1:9999"),  # another local app
        ("127.0.0.1:8000", "http://127.0.0.1"),  # port 80 is another origin too
        ("localhost:8000", "http://127.0.0.1:8000"),  # another host name, though an allowed one
        ("testserver", "https://testserver"),  # the plain-HTTP site is not the HTTPS one
    ],
    ids=["other-port", "default-port", "other-allowed-host", "other-scheme"],
)
async def test_another_origin_on_an_allowed_host_is_refused(cookie, host, origin):
    assert not await opens(cookie, ("host", host), ("origin", origin)), f"{origin} let in on {host}"


@pytest.mark.parametrize(
    "headers",
    [
        [("host", "evil.example"), ("origin", "http://evil.example")],  # DNS rebinding: Host not allowed
        [("origin", "http://testserver")],  # no Host: nothing to be the same origin as
        [("host", "testserver")],  # no Origin
        [("host", "testserver"), ("origin", "null")],
        [("host", "testserver"), ("origin", "http://testserver"), ("origin", "http://evil.example")],
        [("host", "testserver"), ("origin", "http://testserver/path")],
        [("host", "testserver"), ("origin", "http://user@testserver")],
        [("host", "testserver"), ("origin", "http://testserver:99999")],
    ],
    ids=["unallowed-host", "no-host", "no-origin", "null", "two-origins", "path", "credentials", "bad-port"],
)
async def test_malformed_or_missing_headers_are_refused(cookie, headers):
    assert not await opens(cookie, *headers)


async def test_behind_the_tls_proxy_the_origin_is_https(cookie, settings):
    """daphne sees ws:// behind the proxy; the proxy's X-Forwarded-Proto says what the browser used."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = [("host", "testserver"), ("x-forwarded-proto", "https")]
    assert await opens(cookie, *proxied, ("origin", "https://testserver"))
    assert not await opens(cookie, *proxied, ("origin", "http://testserver"))
    assert await opens(cookie, ("host", "testserver"), ("origin", "https://testserver"), scheme="wss")


async def test_trusted_origins_open_it(cookie, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.org:8443", "https://*.lens.example"]
    host = ("host", "testserver")
    assert await opens(cookie, host, ("origin", "https://app.example.org:8443"))
    assert await opens(cookie, host, ("origin", "https://eu.lens.example"))
    assert await opens(cookie, host, ("origin", "https://lens.example"))
    assert not await opens(cookie, host, ("origin", "https://app.example.org"))  # port 443, not 8443
    assert not await opens(cookie, host, ("origin", "http://eu.lens.example"))  # scheme
    assert not await opens(cookie, host, ("origin", "https://evil-lens.example"))  # not a subdomain
