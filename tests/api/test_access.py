"""Who may do what, on every endpoint: the owner, another user, staff, nobody, a revoked key, a session."""

from __future__ import annotations

import pytest

from lensweb.analyses import services
from lensweb.analyses import services as generation_services
from tests.conftest import TINY_DESCRIPTION, TINY_NAME

from .conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def jobs(alice, live_worker):
    """One analysis and one generation of Alice's."""
    analysis = services.do_submit(alice, None, {"text": "alice's secret text"}, {})
    generation = generation_services.do_submit_generation(alice, None, {"text": "alice's prompt"}, {})
    return {"analysis": analysis.pk, "generation": generation.pk}


def _key(who, request):
    return {
        "alice": lambda: request.getfixturevalue("alice_key"),
        "bob": lambda: request.getfixturevalue("bob_key"),
        "staff": lambda: request.getfixturevalue("staff_key"),
        "revoked": lambda: request.getfixturevalue("revoked_key"),
        "anonymous": lambda: None,
        "garbage": lambda: "lw_abcdefgh_not-the-right-secret-at-all",
    }[who]()


READ_EXPECTED = {"alice": 200, "bob": 404, "staff": 200, "revoked": 401, "anonymous": 401, "garbage": 401}
CANCEL_EXPECTED = {"alice": 200, "bob": 404, "staff": 403, "revoked": 401, "anonymous": 401, "garbage": 401}
SUBMIT_EXPECTED = {"alice": 202, "bob": 202, "staff": 202, "revoked": 401, "anonymous": 401, "garbage": 401}
LENSES_EXPECTED = {"alice": 200, "bob": 200, "staff": 200, "revoked": 401, "anonymous": 401, "garbage": 401}
WHO = list(READ_EXPECTED)


@pytest.mark.parametrize("kind", ["analyses", "generations"])
@pytest.mark.parametrize("who", WHO)
def test_read(api, jobs, request, who, kind):
    job_id = jobs["analysis"] if kind == "analyses" else jobs["generation"]
    response = api.get(f"/api/v1/{kind}/{job_id}", key=_key(who, request))
    assert response.status_code == READ_EXPECTED[who], response.json_body
    if response.status_code == 200:
        assert response.json_body["id"] == job_id
    else:
        assert "alice" not in response.content.decode()


@pytest.mark.parametrize("kind", ["analyses", "generations"])
@pytest.mark.parametrize("who", WHO)
def test_cancel(api, jobs, request, who, kind):
    job_id = jobs["analysis"] if kind == "analyses" else jobs["generation"]
    response = api.delete(f"/api/v1/{kind}/{job_id}", key=_key(who, request))
    assert response.status_code == CANCEL_EXPECTED[who], response.json_body
    status = api.get(f"/api/v1/{kind}/{job_id}", key=request.getfixturevalue("alice_key")).json_body["status"]
    assert status == ("cancelled" if who == "alice" else "queued")


@pytest.mark.parametrize("kind", ["analyses", "generations"])
@pytest.mark.parametrize("who", WHO)
def test_submit(api, live_worker, request, who, kind):
    response = api.post(f"/api/v1/{kind}", {"text": "hello"}, key=_key(who, request))
    assert response.status_code == SUBMIT_EXPECTED[who], response.json_body


@pytest.mark.parametrize("who", WHO)
def test_lenses(api, request, who):
    response = api.get("/api/v1/lenses", key=_key(who, request))
    assert response.status_code == LENSES_EXPECTED[who]
    if response.status_code == 200:
        assert response.json_body == {
            "lenses": [
                {
                    "id": "tiny",
                    "name": TINY_NAME,
                    "description": TINY_DESCRIPTION,
                    "default": True,
                    "untrained": False,
                    "kind": "lens",
                    "base_model": None,  # known once a worker has loaded it
                    "layer": None,
                    "t_text": None,
                }
            ]
        }


def test_openapi_is_public(api):
    assert api.get("/api/v1/openapi.json").status_code == 200


def test_401_says_what_to_do(api, revoked_key):
    missing = api.get("/api/v1/lenses")
    assert (
        error_of(missing)["code"] == "unauthenticated"
        and "Authorization: Bearer" in error_of(missing)["message"]
    )
    assert missing["WWW-Authenticate"].startswith("Bearer")
    revoked = api.get("/api/v1/lenses", key=revoked_key)
    assert "revoked" in error_of(revoked)["message"]


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Token lw_x", "bearer  "])
def test_malformed_authorization_is_401(api, header):
    assert api.get("/api/v1/lenses", headers={"Authorization": header}).status_code == 401


def test_scheme_is_case_insensitive(api, alice_key):
    assert api.get("/api/v1/lenses", headers={"Authorization": f"bearer {alice_key}"}).status_code == 200


def test_a_session_is_not_enough_and_no_csrf_is_needed(client, alice, alice_key, live_worker):
    """Logged in on the site but no key: 401. With a key, POST works without a CSRF token."""
    from django.test import Client

    client.force_login(alice)
    assert client.get("/api/v1/lenses").status_code == 401
    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        "/api/v1/analyses",
        data={"text": "hi"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {alice_key}"},
    )
    assert response.status_code == 202
    assert "sessionid" not in response.cookies


def test_an_inactive_users_key_stops_working(api, alice, alice_key):
    alice.is_active = False
    alice.save()
    assert api.get("/api/v1/lenses", key=alice_key).status_code == 401
