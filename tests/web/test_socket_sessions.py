"""A socket lives no longer than its session: logout, a password change or a deactivated user close the
user's sockets (4401), and a closed socket forwards nothing and cancels nothing. Through the real ASGI
stack (Origin check, session cookie, auth middleware) with real sessions made by the real views."""

from __future__ import annotations

import json
from importlib import import_module

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.test import Client

from lensweb.analyses import services
from lensweb.analyses.models import Analysis
from lensweb.analyses.sessions import check_session
from tests.conftest import scaled
from tests.live import chromium, live_server, sign_in

from .conftest import job_state, write_tiny_registry
from .test_consumers import receive_until, socket

pytestmark = [pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "a new and long passphrase 42"
SIGNED_OUT = {"type": "websocket.close", "code": 4401}

submit = database_sync_to_async(services.do_submit)


@pytest.fixture
def never_recheck(settings):
    """Only the events (and the cancel-time check) may close a socket: no throttled or idle re-checks."""
    settings.LENSWEB_WS_SESSION_CHECK_SECONDS = 3600
    settings.LENSWEB_WS_IDLE_CHECK_SECONDS = 3600
    return settings


@database_sync_to_async
def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def cookie(client: Client) -> str:
    return client.cookies["sessionid"].value


@database_sync_to_async
def post(client: Client, path: str, data: dict | None = None):
    return client.post(path, data or {})


@database_sync_to_async
def get(client: Client, path: str):
    return client.get(path)


@database_sync_to_async
def end_session_silently(session_key: str) -> None:
    """The session is gone but its event is lost (messages are at-most-once): no signal, no message."""
    import_module(django_settings.SESSION_ENGINE).SessionStore(session_key).delete()


async def opened(communicator) -> None:
    connected, _ = await communicator.connect()
    assert connected, "the socket should open for a signed-in session"
    await communicator.receive_from(timeout=scaled(10))  # the replay


async def still_open(communicator) -> None:
    """A request answered proves the socket is open and its consumer alive."""
    await communicator.send_to(text_data=json.dumps({"action": "cancel", "job": 999_999}))
    answer = await receive_until(communicator, lambda m: 'id="socket-message"' in m)
    assert "there is no analysis #999999 of yours" in answer[-1]


async def test_logout_closes_that_sessions_sockets_and_no_other(alice, never_recheck):
    here, elsewhere = await signed_in(alice), await signed_in(alice)
    async with socket(cookie=cookie(here)) as mine, socket(cookie=cookie(elsewhere)) as other:
        await opened(mine)
        await opened(other)
        response = await post(here, "/accounts/logout/")
        assert response.status_code == 302
        assert await mine.receive_output(timeout=scaled(10)) == SIGNED_OUT, (
            "logout should close the session's socket"
        )
        await submit(alice, None, {"text": "after logout"}, {})
        assert await mine.receive_nothing(timeout=0.5), "a closed socket forwards nothing"
        # The other session is still signed in: its socket gets the new card and answers.
        card = await other.receive_from(timeout=scaled(10))
        assert 'hx-swap-oob="afterbegin:#jobs"' in card and "after logout" in card
        await still_open(other)


async def test_password_change_closes_the_other_sessions_sockets(alice, never_recheck):
    changer, elsewhere = await signed_in(alice), await signed_in(alice)
    async with socket(cookie=cookie(elsewhere)) as other:
        await opened(other)
        response = await post(
            changer,
            "/accounts/password/",
            {"old_password": "pw-alice", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        )
        assert response.status_code == 302, "the password change should succeed"
        assert await other.receive_output(timeout=scaled(10)) == SIGNED_OUT, (
            "another session's socket should close"
        )
        await submit(alice, None, {"text": "after the change"}, {})
        assert await other.receive_nothing(timeout=0.5), "a closed socket forwards nothing"
    # The session that changed the password stays signed in (update_session_auth_hash gave it a new key):
    # its page renders, and its browser's socket (re)connects with the new cookie.
    assert (await get(changer, "/")).status_code == 200
    async with socket(cookie=cookie(changer)) as again:
        await opened(again)
        await still_open(again)
    # The other session is signed out for HTTP as well, as Django decides it.
    assert (await get(elsewhere, "/")).status_code == 302


async def test_deactivating_the_user_closes_their_sockets(alice, never_recheck):
    async with socket(alice) as communicator:
        await opened(communicator)
        alice.is_active = False
        await database_sync_to_async(alice.save)()
        assert await communicator.receive_output(timeout=scaled(10)) == SIGNED_OUT


async def test_a_lost_event_still_closes_the_socket_before_anything_is_forwarded(alice, settings):
    settings.LENSWEB_WS_SESSION_CHECK_SECONDS = 0  # re-validate before every forward
    settings.LENSWEB_WS_IDLE_CHECK_SECONDS = 3600
    client = await signed_in(alice)
    async with socket(cookie=cookie(client)) as communicator:
        await opened(communicator)
        await end_session_silently(cookie(client))
        await submit(alice, None, {"text": "a private text"}, {})
        assert await communicator.receive_output(timeout=scaled(10)) == SIGNED_OUT, (
            "no card may reach a dead session"
        )
        await submit(alice, None, {"text": "another private text"}, {})
        assert await communicator.receive_nothing(timeout=0.5)


async def test_a_cancel_after_the_session_ended_is_refused(alice, never_recheck):
    job = await submit(alice, None, {"text": "x y z"}, {})
    client = await signed_in(alice)
    async with socket(cookie=cookie(client)) as communicator:
        await opened(communicator)
        await end_session_silently(cookie(client))  # and the event is lost
        await communicator.send_to(text_data=json.dumps({"action": "cancel", "job": job.pk}))
        assert await communicator.receive_output(timeout=scaled(10)) == SIGNED_OUT
    job = await database_sync_to_async(job_state)(job.pk)
    assert job.status == Analysis.Status.QUEUED and not job.cancel_requested


async def test_an_idle_socket_closes_on_its_own_when_its_session_ends(alice, settings):
    settings.LENSWEB_WS_SESSION_CHECK_SECONDS = 3600
    settings.LENSWEB_WS_IDLE_CHECK_SECONDS = 0.2
    client = await signed_in(alice)
    async with socket(cookie=cookie(client)) as communicator:
        await opened(communicator)
        assert await communicator.receive_nothing(timeout=0.6), "a valid session's idle socket stays quiet"
        await end_session_silently(cookie(client))
        assert await communicator.receive_output(timeout=scaled(10)) == SIGNED_OUT


def test_check_session_accepts_fallback_secrets_without_touching_the_session(alice, settings):
    """After a SECRET_KEY rotation (old key in SECRET_KEY_FALLBACKS) Django keeps sessions signed in; the
    check agrees, and unlike get_user never cycles the key: the browser's cookie cannot follow a socket."""
    client = Client()
    client.force_login(alice)
    key = cookie(client)
    assert check_session(key, alice.pk)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a rotated secret key for this test"
    assert check_session(key, alice.pk)
    assert import_module(settings.SESSION_ENGINE).SessionStore().exists(key), "the session key must stay"
    settings.SECRET_KEY_FALLBACKS = []
    assert not check_session(key, alice.pk)
    assert not check_session(key, alice.pk + 1) and not check_session("", alice.pk)


@pytest.mark.browser
def test_logging_out_in_another_tab_signs_the_live_page_out(tmp_path):
    """Chromium against a real `manage.py serve`: the live page's socket closes with 4401 when its session
    logs out elsewhere, and the page says so (the ws extension does not reconnect after 4401)."""
    with (
        live_server(
            tmp_path, setup=[["ensure_demo_user"]], LENSWEB_LENS_REGISTRY=str(write_tiny_registry(tmp_path))
        ) as base,
        chromium() as browser,
    ):
        context = browser.new_context()
        live = context.new_page()
        live.set_default_timeout(scaled(60) * 1000)
        sockets = []
        live.on("websocket", lambda ws: sockets.append(ws.url))
        sign_in(live, base, then="#socket-state.live")
        other = context.new_page()
        other.goto(f"{base}/")
        other.click("form.logout button")
        other.wait_for_url("**/accounts/login/**")
        live.wait_for_selector("#socket-state.down")  # selectors, not functions: the page's CSP forbids eval
        assert live.inner_text("#socket-state").startswith("signed out"), live.inner_text("#socket-state")
        live.wait_for_timeout(scaled(2) * 1000)  # the ws extension's first reconnect comes within a second
        analyses = [url for url in sockets if url.endswith("/ws/analyses/")]  # the status strip has its own
        assert len(analyses) == 1, "the page does not reconnect a signed-out socket"
        context.close()
