"""Addresses that reached the database as they were and answered 500 on PostgreSQL: a NUL in the path or the
query, an id of 19 or more digits, a time that overflows once converted to UTC. Each is a 4xx with a clear
message, on SQLite and on PostgreSQL (the suite's second stage runs this file there)."""

from __future__ import annotations

import pytest

from lensweb.accounts.keys import create_key
from tests.accounts.conftest import clear_ratelimits  # noqa: F401  (autouse: every test starts uncounted)

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def alice_key(alice) -> str:
    return create_key(alice, "probe")[1]


NUL_PAGES = [
    "/s/%00/",
    "/s/%00/export.json",
    "/s/x%00/candidates/1/",
    "/analyses/history/?q=%00",
    "/analyses/history/?lens=%00",
]
NUL_API = ["/api/v1/analyses?q=%00", "/api/v1/analyses?lens=%00", "/api/v1/analyses?status=%00"]


@pytest.mark.parametrize("url", NUL_PAGES)
def test_a_nul_in_a_page_address_is_a_400_anonymous_or_not(client, alice, url):
    for signed_in in (False, True):
        if signed_in:
            client.force_login(alice)
        response = client.get(url)
        assert response.status_code == 400, (url, signed_in, response.status_code)
        assert "NUL" in response.content.decode()


@pytest.mark.parametrize("url", NUL_API)
def test_a_nul_in_an_api_query_is_a_400_in_the_api_envelope(client, alice_key, url):
    response = client.get(url, headers={"Authorization": f"Bearer {alice_key}"})
    assert response.status_code == 400
    assert (
        response.json()["error"]["code"] == "invalid_request" and "NUL" in response.json()["error"]["message"]
    )


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("delete", "/api/v1/analyses/99999999999999999999"),
        ("get", "/api/v1/analyses/99999999999999999999"),
        ("get", "/api/v1/generations/99999999999999999999"),
        ("get", "/api/v1/analyses/99999999999999999999/export.json"),
    ],
)
def test_an_id_beyond_any_databases_integer_is_not_found(client, alice_key, method, url):
    response = getattr(client, method)(url, headers={"Authorization": f"Bearer {alice_key}"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/analyses/99999999999999999999/",
        "/analyses/99999999999999999999/export.json",
        "/analyses/1/candidates/99999999999999999999/",
        "/generations/99999999999999999999/",
    ],
)
def test_a_page_id_beyond_any_databases_integer_is_not_found(client, alice, url):
    client.force_login(alice)
    assert client.get(url).status_code == 404


def test_the_largest_id_any_database_holds_is_still_a_plain_not_found(client, alice_key):
    response = client.get(
        "/api/v1/analyses/999999999999999999", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("name", ["created_after", "created_before"])
def test_a_time_out_of_range_in_utc_is_a_400_naming_its_parameter(client, alice_key, name):
    response = client.get(
        f"/api/v1/analyses?{name}=9999-12-31T23:59:59-23:59", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == name and "out of range" in error["message"]
    ok = client.get(
        f"/api/v1/analyses?{name}=2026-01-01T00:00:00%2B05:00",
        headers={"Authorization": f"Bearer {alice_key}"},
    )
    assert ok.status_code == 200
