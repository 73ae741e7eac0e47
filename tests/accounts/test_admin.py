"""The admin lists, creates and revokes keys, and never shows a key or its hash after creation."""

from __future__ import annotations

import re

import pytest

from lensweb.accounts import keys
from lensweb.accounts.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_list_and_change_pages_never_show_the_key_or_its_hash(admin_client, alice):
    row, raw = keys.create_key(alice, "laptop")
    keys.authenticate_key(raw)
    for url in (
        "/admin/accounts/apikey/",
        f"/admin/accounts/apikey/{row.pk}/change/",
        f"/admin/accounts/apikey/{row.pk}/history/",
        f"/admin/accounts/apikey/{row.pk}/delete/",
        "/admin/accounts/apikey/?q=laptop",
    ):
        html = admin_client.get(url).content.decode()
        assert raw not in html and raw[12:] not in html and row.hashed not in html, url
    html = admin_client.get("/admin/accounts/apikey/").content.decode()
    assert f"lw_{row.prefix}_" in html and "laptop" in html


def test_admin_creates_a_key_and_shows_it_once(admin_client, alice):
    response = admin_client.post("/admin/accounts/apikey/add/", {"user": alice.pk, "name": "from admin"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    raw = re.search(r'value="(lw_[^"]+)"', response.content.decode()).group(1)
    row = keys.authenticate_key(raw)
    assert row.user == alice and row.name == "from admin"
    html = admin_client.get(f"/admin/accounts/apikey/{row.pk}/change/").content.decode()
    assert raw not in html and row.hashed not in html


def test_admin_renames_and_revokes(admin_client, alice):
    row, raw = keys.create_key(alice, "laptop")
    admin_client.post(f"/admin/accounts/apikey/{row.pk}/change/", {"name": "old laptop"})
    assert ApiKey.objects.get(pk=row.pk).name == "old laptop"
    admin_client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [row.pk]})
    assert ApiKey.objects.get(pk=row.pk).revoked_at is not None
    assert keys.authenticate_key(raw) is None


def test_generations_are_listed_read_only(admin_client, alice):
    from lensweb.analyses.models import Generation

    generation = Generation.objects.create(owner=alice, lens_id="tiny", input={"text": "x"}, options={})
    assert admin_client.get("/admin/analyses/generation/").status_code == 200
    assert admin_client.get(f"/admin/analyses/generation/{generation.pk}/change/").status_code == 200
    assert admin_client.get("/admin/analyses/generation/add/").status_code == 403


def test_non_staff_cannot_reach_the_admin(client, alice):
    client.force_login(alice)
    assert client.get("/admin/accounts/apikey/").status_code == 302


def test_admin_respects_the_key_cap(admin_client, alice, settings):
    settings.LENSWEB_MAX_API_KEYS_PER_USER = 1
    keys.create_key(alice, "one")
    response = admin_client.post("/admin/accounts/apikey/add/", {"user": alice.pk, "name": "two"})
    assert response.status_code == 200 and "already has 1 active keys" in response.content.decode()
    assert ApiKey.objects.count() == 1
