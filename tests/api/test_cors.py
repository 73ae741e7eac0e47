"""CORS on the JSON API only (lensweb.api.cors): allowed and refused origins, preflights, the unset default,
the session pages that never get a CORS header, and the allow-list refused at startup when malformed."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler

from lensweb.api.cors import check_allowed_origins

pytestmark = pytest.mark.django_db

APP = "https://app.example.org"
OTHER = "https://evil.example.net"
URL = "/api/v1/analyses"


@pytest.fixture
def cors(settings):
    settings.LENSWEB_CORS_ALLOWED_ORIGINS = [APP, "http://localhost:3000"]


def cors_headers(response) -> dict[str, str]:
    return {
        name: value for name, value in response.headers.items() if name.lower().startswith("access-control-")
    }


def varies_on_origin(response) -> bool:
    return "origin" in [part.strip().lower() for part in response.get("Vary", "").split(",")]


def preflight(client, path, origin, method="POST"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


# --- actual requests ------------------------------------------------------------------------------


def test_allowed_origin_reads_post_and_get_answers(api, cors, alice_key, live_worker):
    posted = api.post(URL, {"text": "The Eiffel Tower is in Paris"}, key=alice_key, headers={"Origin": APP})
    assert posted.status_code == 202
    assert posted["Access-Control-Allow-Origin"] == APP
    exposed = {name.strip() for name in posted["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "Retry-After"} <= exposed, "a cross-origin client must be able to read these"
    assert varies_on_origin(posted)

    got = api.get(posted["Location"], key=alice_key, headers={"Origin": "http://localhost:3000"})
    assert got.status_code == 200
    assert got["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert varies_on_origin(got)
    for response in (posted, got):
        assert "Access-Control-Allow-Credentials" not in response


def test_allowed_origin_can_read_the_apis_errors(api, cors):
    response = api.get(URL + "/1", headers={"Origin": APP})  # no key
    assert response.status_code == 401
    assert response["Access-Control-Allow-Origin"] == APP
    assert "WWW-Authenticate" in response["Access-Control-Expose-Headers"]


def test_refused_origin_gets_no_cors_header_but_the_call_is_unchanged(api, cors, alice_key, live_worker):
    posted = api.post(URL, {"text": "hello"}, key=alice_key, headers={"Origin": OTHER})
    assert posted.status_code == 202  # CORS is the browser's guard; the key still authenticates
    assert cors_headers(posted) == {}
    assert varies_on_origin(posted), "a shared cache must not hand this answer to an allowed origin"
    # Near misses are not the allowed origin: another scheme, port, or a suffix.
    for origin in ("http://app.example.org", "https://app.example.org:8443", APP + ".evil.net", "null"):
        assert cors_headers(api.get(posted["Location"], key=alice_key, headers={"Origin": origin})) == {}


def test_unset_allows_nothing(api, client, alice_key, live_worker, settings):
    settings.LENSWEB_CORS_ALLOWED_ORIGINS = []
    posted = api.post(URL, {"text": "hello"}, key=alice_key, headers={"Origin": APP})
    assert posted.status_code == 202 and cors_headers(posted) == {}
    refused = preflight(client, URL, APP)
    assert refused.status_code == 403 and cors_headers(refused) == {}


# --- preflights -------------------------------------------------------------------------------------


def test_preflight_from_allowed_origin_is_204_before_any_authentication(client, cors):
    for path in (URL, URL + "/7", "/api/v1/generations"):
        response = preflight(client, path, APP, method="DELETE" if path.endswith("7") else "POST")
        assert response.status_code == 204, f"{path}: {response.status_code} (a key or login was asked?)"
        assert response["Access-Control-Allow-Origin"] == APP
        methods = {m.strip() for m in response["Access-Control-Allow-Methods"].split(",")}
        assert methods == {"GET", "POST", "DELETE"}
        headers = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= headers
        assert int(response["Access-Control-Max-Age"]) > 0
        assert "Access-Control-Allow-Credentials" not in response
        assert varies_on_origin(response)


def test_preflight_from_refused_origin_is_403_without_cors_headers(client, cors):
    response = preflight(client, URL, OTHER)
    assert response.status_code == 403
    assert cors_headers(response) == {}
    assert response.json()["error"]["code"] == "origin_not_allowed"


def test_plain_options_without_preflight_headers_is_the_apis_own_answer(client, cors):
    response = client.options(URL, headers={"Origin": APP})  # no Access-Control-Request-Method
    # reached the API's own routing (OPTIONS is no operation here): not treated as a preflight
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


# --- session pages: never CORS ---------------------------------------------------------------------


def test_session_pages_never_get_cors_headers(api, client, cors, alice, alice_key, live_worker):
    analysis_id = api.post(URL, {"text": "mine"}, key=alice_key).json_body["id"]
    anonymous = [client.get(path, headers={"Origin": APP}) for path in ("/", "/accounts/login/")]
    client.force_login(alice)
    pages = [
        client.get(path, headers={"Origin": APP})
        for path in ("/", f"/analyses/{analysis_id}/", "/accounts/login/", "/monitoring/", "/metrics")
    ]
    assert [r.status_code for r in pages[:2]] == [200, 200], "alice's pages should load with her session"
    for response in anonymous + pages:
        assert cors_headers(response) == {}, f"{response.request['PATH_INFO']} got {cors_headers(response)}"
    for path in ("/", f"/analyses/{analysis_id}/", "/accounts/login/"):
        response = preflight(client, path, APP)
        assert response.status_code != 204 and cors_headers(response) == {}, path


# --- ASGI: the same middleware, async --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_under_asgi(async_client, cors, alice):
    from asgiref.sync import sync_to_async
    from django.db import connections

    from lensweb.accounts import keys

    key = (await sync_to_async(keys.create_key)(alice, "asgi"))[1]
    response = await async_client.get(
        URL + "/999999", headers={"Origin": APP, "Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 404
    assert response["Access-Control-Allow-Origin"] == APP
    response = await async_client.options(
        URL, headers={"Origin": APP, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204 and response["Access-Control-Allow-Origin"] == APP
    response = await async_client.options(
        URL, headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 403 and cors_headers(response) == {}
    response = await async_client.get("/accounts/login/", headers={"Origin": APP})
    assert response.status_code == 200 and cors_headers(response) == {}
    await sync_to_async(connections.close_all)()


# --- the setting, checked at startup ------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        "https://*.example.org",
        "null",
        "app.example.org",  # no scheme
        "ftp://app.example.org",
        "https://app.example.org/",  # an origin has no path, not even "/"
        "https://app.example.org/api",
        "https://app.example.org?x=1",
        "https://app.example.org#top",
        "https://user@app.example.org",
        "https://app.example.org:notaport",
        "https://",
    ],
)
def test_malformed_entry_is_refused(entry):
    with pytest.raises(ImproperlyConfigured, match="LENSWEB_CORS_ALLOWED_ORIGINS"):
        check_allowed_origins(("https://fine.example.org", entry))


def test_entries_are_written_as_browsers_send_origins():
    assert check_allowed_origins(
        (" HTTPS://App.Example.org:443", "http://localhost:3000", "http://[::1]:8000", "http://x.org:80", "")
    ) == {"https://app.example.org", "http://localhost:3000", "http://[::1]:8000", "http://x.org"}


@pytest.mark.parametrize("handler", [WSGIHandler, ASGIHandler])
def test_server_refuses_to_start_on_a_malformed_setting(settings, handler):
    settings.LENSWEB_CORS_ALLOWED_ORIGINS = ["*"]
    with pytest.raises(ImproperlyConfigured, match="wildcard"):
        handler()  # what runserver, daphne and gunicorn build at startup: it loads the middleware
