"""The settings page (keys created and revoked through htmx partials), password change, sign-up, logout,
and the 429 page of the browser's rate limits."""

from __future__ import annotations

import re

import pytest

from lensweb.accounts import keys
from lensweb.accounts.models import ApiKey

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


def new_key_in(response) -> str:
    return re.search(r'value="(lw_[^"]+)"', response.content.decode()).group(1)


def test_settings_needs_login(client):
    response = client.get("/accounts/settings/")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    assert client.post("/accounts/settings/keys/", {"name": "x"}).status_code == 302
    assert not ApiKey.objects.exists()


def test_settings_lists_only_your_own_keys(logged_in, alice, bob):
    keys.create_key(alice, "alice laptop")
    keys.create_key(bob, "bob notebook")
    html = logged_in.get("/accounts/settings/").content.decode()
    assert 'id="api-keys"' in html and "alice laptop" in html and "bob notebook" not in html
    assert "<script>" not in html and "onclick" not in html  # no inline scripts
    assert 'href="/accounts/settings/"' in html  # the nav link in base.html


def test_create_a_key_with_htmx_shows_it_once(logged_in, alice):
    response = logged_in.post("/accounts/settings/keys/", {"name": "notebook"}, headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert html.lstrip().startswith('<section id="api-keys"')  # the partial named after its element
    raw = new_key_in(response)
    assert keys.authenticate_key(raw).user == alice
    assert "shown only this once" in html
    again = logged_in.get("/accounts/settings/").content.decode()
    assert raw not in again and "notebook" in again and f"lw_{raw[3:11]}_" in again


def test_create_without_htmx_renders_the_whole_page(logged_in):
    response = logged_in.post("/accounts/settings/keys/", {"name": "notebook"})
    assert response.status_code == 200 and "<html" in response.content.decode()
    assert new_key_in(response)


def test_create_needs_a_name(logged_in):
    response = logged_in.post("/accounts/settings/keys/", {"name": ""}, headers=HTMX)
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert logged_in.post("/accounts/settings/keys/", {"name": ""}).status_code == 400
    assert not ApiKey.objects.exists()


def test_the_key_cap_is_shown_on_the_form(logged_in, settings):
    settings.LENSWEB_MAX_API_KEYS_PER_USER = 1
    logged_in.post("/accounts/settings/keys/", {"name": "one"}, headers=HTMX)
    response = logged_in.post("/accounts/settings/keys/", {"name": "two"}, headers=HTMX)
    assert "revoke one you no longer use" in response.content.decode()
    assert ApiKey.objects.count() == 1


def test_revoke_with_htmx(logged_in, alice, client):
    row, raw = keys.create_key(alice, "laptop")
    response = logged_in.post(f"/accounts/settings/keys/{row.pk}/revoke/", headers=HTMX)
    assert response.status_code == 200 and 'id="api-keys"' in response.content.decode()
    assert "revoked" in response.content.decode()
    assert keys.authenticate_key(raw) is None
    api = client.get("/api/v1/lenses", headers={"Authorization": f"Bearer {raw}"})
    assert api.status_code == 401  # at once


def test_revoke_without_htmx_redirects(logged_in, alice):
    row, _ = keys.create_key(alice, "laptop")
    response = logged_in.post(f"/accounts/settings/keys/{row.pk}/revoke/")
    assert response.status_code == 302 and response.url == "/accounts/settings/"


def test_someone_elses_key_is_not_found(logged_in, bob):
    row, raw = keys.create_key(bob, "bob's")
    assert logged_in.post(f"/accounts/settings/keys/{row.pk}/revoke/", headers=HTMX).status_code == 404
    assert keys.authenticate_key(raw) is not None


def test_revoke_needs_post(logged_in, alice):
    row, _ = keys.create_key(alice, "laptop")
    assert logged_in.get(f"/accounts/settings/keys/{row.pk}/revoke/").status_code == 405


def test_key_creation_is_rate_limited_per_user(logged_in, settings):
    settings.LENSWEB_KEY_CREATE_RATE = "2/h"
    for name in ("a", "b"):
        assert logged_in.post("/accounts/settings/keys/", {"name": name}, headers=HTMX).status_code == 200
    limited = logged_in.post("/accounts/settings/keys/", {"name": "c"}, headers=HTMX)
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert ApiKey.objects.count() == 2


# --- password, logout, login limits ------------------------------------------------------------------------


def test_password_change(logged_in, client):
    assert logged_in.get("/accounts/password/").status_code == 200
    response = logged_in.post(
        "/accounts/password/",
        {
            "old_password": "pw-alice-Long-1",
            "new_password1": "N3w-passphrase!",
            "new_password2": "N3w-passphrase!",
        },
    )
    assert response.status_code == 302 and response.url == "/accounts/password/done/"
    assert logged_in.get("/accounts/password/done/").status_code == 200
    logged_in.logout()
    assert client.login(username="alice", password="N3w-passphrase!")


def test_password_change_refuses_a_wrong_old_password(logged_in):
    response = logged_in.post(
        "/accounts/password/",
        {"old_password": "wrong", "new_password1": "N3w-passphrase!", "new_password2": "N3w-passphrase!"},
    )
    assert response.status_code == 200 and "incorrect" in response.content.decode()


def test_logout(logged_in):
    response = logged_in.post("/accounts/logout/")
    assert response.status_code == 302 and response.url == "/accounts/login/"
    assert logged_in.get("/accounts/settings/").status_code == 302


def test_login_is_rate_limited_per_ip(client, alice, settings):
    settings.LENSWEB_LOGIN_RATE = "3/m"
    for _ in range(3):
        assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    limited = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice-Long-1"})
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    assert "Too many login attempts" in limited.content.decode()
    assert client.get("/accounts/login/").status_code == 200  # the form itself still shows
    other = client.post(
        "/accounts/login/", {"username": "alice", "password": "pw-alice-Long-1"}, REMOTE_ADDR="10.9.9.9"
    )
    assert other.status_code == 302


def test_a_tests_requests_share_one_rate_window_however_long_it_runs(client, alice, settings, monkeypatch):
    """tests/ratewindows.py: a limit a test expects is not lost to a window's edge passing mid-test."""
    import time

    settings.LENSWEB_LOGIN_RATE = "2/m"
    statuses = [client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code]
    # A window's edge passes (the count itself lives 65 s).
    monkeypatch.setattr(time, "time", lambda later=time.time() + 61: later)
    statuses += [client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code]
    statuses += [client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code]
    assert statuses == [200, 200, 429]


# --- sign-up ------------------------------------------------------------------------------------------------

SIGNUP = {"username": "newcomer", "password1": "Fresh-passphrase-9", "password2": "Fresh-passphrase-9"}


def test_signup_is_off_by_default(client, django_user_model):
    assert client.get("/accounts/signup/").status_code == 404
    assert client.post("/accounts/signup/", SIGNUP).status_code == 404
    assert not django_user_model.objects.filter(username="newcomer").exists()


def test_signup_when_allowed(client, settings, django_user_model):
    settings.LENSWEB_ALLOW_SIGNUP = True
    assert client.get("/accounts/signup/").status_code == 200
    response = client.post("/accounts/signup/", SIGNUP)
    assert response.status_code == 302 and response.url == "/"
    user = django_user_model.objects.get(username="newcomer")
    assert not user.is_staff and client.get("/accounts/settings/").status_code == 200


def test_signup_shows_errors(client, settings):
    settings.LENSWEB_ALLOW_SIGNUP = True
    response = client.post("/accounts/signup/", {**SIGNUP, "password2": "different"})
    assert response.status_code == 400 and "didn’t match" in response.content.decode()


def test_signup_is_rate_limited_per_ip(client, settings):
    settings.LENSWEB_ALLOW_SIGNUP = True
    settings.LENSWEB_SIGNUP_RATE = "2/h"
    client.post("/accounts/signup/", {**SIGNUP, "username": "one"})
    client.logout()
    client.post("/accounts/signup/", {**SIGNUP, "username": "two"})
    client.logout()
    limited = client.post("/accounts/signup/", {**SIGNUP, "username": "three"})
    assert limited.status_code == 429 and limited["Retry-After"]
