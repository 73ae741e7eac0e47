"""Every route against every actor. The tables below are the access policy; `test_*_table_covers_every_route`
fails when a route is added without an entry (or an entry outlives its route).

Site actors: anonymous, owner, other (a user who owns nothing), staff. API actors: no key, the owner's
revoked key, the owner's key, another user's key, a staff member's key. Someone else's object is 404, never
403 (it does not exist for you); staff may read any analysis but change only their own.
"""

from __future__ import annotations

import json

import pytest
from django.contrib import admin
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.urls import reverse

from .access import API_ACTORS, LOGIN, LOGIN_PATH, SITE_ACTORS, api, coverage_gaps, project_routes, site

pytestmark = [pytest.mark.django_db]

# --- the site (session) -----------------------------------------------------------------------------------
# site(method, anonymous, owner, other, staff). POSTs are made without HX-Request: the plain-form answers.
SITE: dict[str, list] = {
    # accounts
    "login": [site("GET", 200, 302, 302, 302)],  # logged-in users are sent on
    "logout": [site("POST", 302, 302, 302, 302)],
    "signup": [site("GET", 404, 404, 404, 404)],  # LENSWEB_ALLOW_SIGNUP is off by default
    "account-settings": [site("GET", LOGIN, 200, 200, 200)],
    "api-key-create": [site("POST", LOGIN, 200, 200, 200, data={"name": "matrix"})],
    "api-key-revoke": [site("POST", LOGIN, 302, 404, 404)],
    "password_change": [site("GET", LOGIN, 200, 200, 200)],
    "password_change_done": [site("GET", LOGIN, 200, 200, 200)],
    # analyses
    "analyses:index": [site("GET", LOGIN, 200, 200, 200)],
    "analyses:submit": [site("POST", LOGIN, 400, 400, 400, data={})],  # reached the form: it is empty
    "analyses:card": [site("GET", LOGIN, 200, 404, 404)],
    "analyses:cancel": [site("POST", LOGIN, 302, 404, 404)],
    "analyses:generate": [site("POST", LOGIN, 400, 400, 400, data={})],  # reached the form: it is empty
    "analyses:describe": [site("GET", LOGIN, 200, 200, 200), site("POST", LOGIN, 200, 200, 200, data={})],
    "analyses:described": [site("GET", LOGIN, 404, 404, 404)],  # the world's probe reads activations
    "analyses:generation": [site("GET", LOGIN, 200, 404, 200)],  # staff read any generation
    "analyses:generation_card": [site("GET", LOGIN, 200, 404, 200)],
    "analyses:generation_cancel": [site("POST", LOGIN, 302, 404, 404)],
    "analyses:generation_analyse": [site("POST", LOGIN, 400, 404, 404, data={})],  # owner: no sample named
    "analyses:generation_input": [site("GET", LOGIN, 404, 404, 404)],  # the world's generation has no sample
    # results
    "results:history": [site("GET", LOGIN, 200, 200, 200)],
    "results:compare": [site("GET", LOGIN, 200, 404, 200, query="a={id}&b={id}")],
    "results:import": [site("GET", LOGIN, 200, 200, 200)],
    "results:detail": [site("GET", LOGIN, 200, 404, 200)],
    "results:export_json": [site("GET", LOGIN, 200, 404, 200)],
    "results:export_csv": [site("GET", LOGIN, 200, 404, 200)],
    "results:export_research_json": [site("GET", LOGIN, 200, 404, 200)],
    "results:fulltext_figure": [site("GET", LOGIN, 200, 404, 200)],
    "results:fulltext_svg": [site("GET", LOGIN, 200, 404, 200)],
    "results:candidates": [site("GET", LOGIN, 200, 404, 200)],
    "results:generation_export_json": [site("GET", LOGIN, 200, 404, 200)],
    "results:generation_export_csv": [site("GET", LOGIN, 200, 404, 200)],
    "results:share": [site("POST", LOGIN, 302, 404, 404, data={"enabled": "1"})],
    "results:explain_difference": [site("POST", LOGIN, 200, 200, 200, data={})],  # no positions: said so
    "results:difference": [
        site("GET", LOGIN, 404, 404, 404)
    ],  # the world's probe reads activations: no comparison
    "results:scores": [  # the owner's own explanations under a row: owner only, staff included
        site("GET", LOGIN, 200, 404, 404),
        site("POST", LOGIN, 200, 404, 404, data={"explanation": "x"}),
    ],
    "results:add_positions": [site("POST", LOGIN, 302, 404, 404, data={"positions": "0"})],
    "results:delete": [site("POST", LOGIN, 302, 404, 404)],
    "results:delete_generation": [site("POST", LOGIN, 302, 404, 404)],  # staff read any, delete their own
    "results:preferences": [site("POST", LOGIN, 302, 302, 302, data={"scale": "fixed"})],
    "results:colours_css": [site("GET", 200, 200, 200, 200)],
    "results:shared": [site("GET", 200, 200, 200, 200)],  # the token is the capability
    "results:shared_candidates": [site("GET", 200, 200, 200, 200)],
    "results:shared_export_json": [site("GET", 200, 200, 200, 200)],
    "results:shared_export_csv": [site("GET", 200, 200, 200, 200)],
    "results:shared_export_research_json": [site("GET", 200, 200, 200, 200)],
    "results:shared_fulltext_figure": [site("GET", 200, 200, 200, 200)],
    "results:shared_fulltext_svg": [site("GET", 200, 200, 200, 200)],
    # monitoring (LENSWEB_METRICS_TOKEN set: no loopback exception)
    "healthz": [site("GET", 200, 200, 200, 200)],
    "readyz": [site("GET", 200, 200, 200, 200)],
    "metrics": [site("GET", 401, 401, 401, 200)],
    "monitoring:dashboard": [site("GET", LOGIN, 403, 403, 200)],
    "monitoring:live": [site("GET", 286, 403, 403, 200)],  # 286: htmx stops polling
    "monitoring:lenses": [site("GET", LOGIN, 403, 403, 200)],
}

# --- the API (Bearer keys only; a session is ignored) -------------------------------------------------------
# api(method, no_key, revoked_key, owner_key, other_key, staff_key)
API: dict[str, list] = {
    "api:analyses": [
        api("POST", 401, 401, 400, 400, 400, data={}),  # authenticated: the body is empty
        api("GET", 401, 401, 200, 200, 200),  # everyone lists their own
    ],
    "api:analyses_batch": [api("POST", 401, 401, 400, 400, 400, data={})],  # no items
    "api:analysis": [
        api("GET", 401, 401, 200, 404, 200),
        api("DELETE", 401, 401, 200, 404, 403),  # staff read any, cancel only their own
    ],
    "api:analysis_events": [api("GET", 401, 401, 200, 404, 200)],  # the world's analysis is done: ends
    "api:analysis_export_json": [api("GET", 401, 401, 200, 404, 200)],
    "api:analysis_export_csv": [api("GET", 401, 401, 200, 404, 200)],
    "api:analysis_export_research_json": [api("GET", 401, 401, 200, 404, 200)],
    "api:lenses": [api("GET", 401, 401, 200, 200, 200)],
    "api:status": [api("GET", 401, 401, 200, 200, 200)],
    "api:generations": [api("POST", 401, 401, 400, 400, 400, data={})],
    "api:generation": [
        api("GET", 401, 401, 200, 404, 200),
        api("DELETE", 401, 401, 200, 404, 403),
    ],
    "api:analysis_scores": [
        api("POST", 401, 401, 202, 404, 404, data={"position": 0, "explanation": "x"}),  # the owner's only
        api("GET", 401, 401, 200, 404, 200),
    ],
    "api:analysis_activations": [
        api("POST", 401, 401, 202, 404, 202, data={"positions": [0]}),  # staff may read it
        api("GET", 401, 401, 202, 404, 202, query="positions=0"),  # queued: 202 until read
    ],
    "api:probe": [api("GET", 401, 401, 200, 404, 200)],
    "api:describe": [api("POST", 401, 401, 400, 400, 400, data={})],  # authenticated: no vectors
    "api:compare": [api("POST", 401, 401, 400, 400, 400, data={})],  # authenticated: no sides
    "api:generation_export_json": [api("GET", 401, 401, 200, 404, 200)],
    "api:generation_export_csv": [api("GET", 401, 401, 200, 404, 200)],
    "api:openapi-json": [api("GET", 200, 200, 200, 200, 200)],  # public by design
    "api:docs": [api("GET", 200, 200, 200, 200, 200)],  # the reference page: public, like the document
    "api:api-root": [api("GET", 302, 302, 302, 302, 302)],  # to the reference
    "api:unknown": [api("GET", 404, 404, 404, 404, 404)],
}

# What the API's routes answer when they answer (refusals are always JSON).
API_ANSWER_TYPES = {
    "api:analysis_export_csv": "text/csv",
    "api:generation_export_csv": "text/csv",
    "api:docs": "text/html",
    "api:api-root": "",  # a redirect
    "api:analysis_events": "text/event-stream",
}
STREAMS = ("api:analysis_events",)
PUBLIC_API_ROUTES = ("api:openapi-json", "api:docs", "api:api-root", "api:unknown")

ROUTES = project_routes()


def _cases(table, actors):
    return [
        pytest.param(name, i, actor, id=f"{name}-{expect.method}-{actor}")
        for name, expects in table.items()
        for i, expect in enumerate(expects)
        for actor in actors
    ]


def _url(world, name: str, expect) -> str:
    route, converters = ROUTES[name]
    url = reverse(name, kwargs=world.url_kwargs(name, converters))
    if expect.query:
        url += "?" + expect.query.format(id=world.analysis.pk)
    return url


def _request(client: Client, method: str, url: str, data, **headers):
    if method == "GET":
        return client.get(url, headers=headers)
    if method == "POST" and not url.startswith("/api/"):
        return client.post(url, data or {}, headers=headers)
    body = json.dumps(data) if data is not None else None
    kwargs = {"data": body, "content_type": "application/json"} if body is not None else {}
    return getattr(client, method.lower())(url, headers=headers, **kwargs)


# --- coverage: a route without an entry fails -----------------------------------------------------------------


def test_every_route_is_named():
    unnamed = [route for name, (route, _) in ROUTES.items() if name is None]
    assert not unnamed, f"name these routes (the access matrix finds routes by name): {unnamed}"


def test_tables_cover_every_route_and_only_routes():
    assert not set(SITE) & set(API)
    missing, stale = coverage_gaps(ROUTES, SITE, API)
    assert not missing, f"routes with no access-matrix entry (add them to SITE or API): {missing}"
    assert not stale, f"access-matrix entries for routes that no longer exist: {stale}"


def test_a_new_view_without_an_entry_is_caught():
    routes = project_routes("tests.security.urls_with_a_new_view")
    assert coverage_gaps(routes, SITE, API) == (["new-view"], [])


def test_api_routes_are_in_the_api_table():
    for name, (route, _) in ROUTES.items():
        assert (route.startswith("api/")) == (name in API), f"{name} ({route}) is in the wrong table"


# --- the matrix -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "index", "actor"), _cases(SITE, SITE_ACTORS))
def test_site_route(world, settings, name, index, actor):
    settings.LENSWEB_METRICS_TOKEN = "matrix-metrics-token"
    expect = SITE[name][index]
    url = _url(world, name, expect)
    response = _request(world.client(actor), expect.method, url, expect.data)
    wanted = expect.statuses[actor]
    if wanted == LOGIN:
        assert response.status_code == 302, (url, actor, response.status_code)
        assert response["Location"].startswith(f"{LOGIN_PATH}?next="), response["Location"]
    else:
        assert response.status_code == wanted, (expect.method, url, actor, response.status_code)


@pytest.mark.parametrize(("name", "index", "actor"), _cases(API, API_ACTORS))
def test_api_route(world, name, index, actor):
    expect = API[name][index]
    if name in STREAMS and actor in ("owner_key", "other_key", "staff_key"):
        # its reads leave the request's connection (channels' database_sync_to_async closes stale ones),
        # which this non-transactional test database cannot survive; test_events.py checks these three
        pytest.skip("the event stream's access is tested in tests/api/test_events.py")
    url = _url(world, name, expect)
    key = world.keys[actor]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = _request(Client(), expect.method, url, expect.data, **headers)
    assert response.status_code == expect.statuses[actor], (expect.method, url, actor, response.content[:300])
    if response.status_code < 400:
        assert response.get("Content-Type", "").startswith(API_ANSWER_TYPES.get(name, "application/json"))
    else:  # every refusal is our JSON envelope
        assert response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("name", sorted(n for n in API if n not in PUBLIC_API_ROUTES))
def test_api_ignores_the_session(world, name):
    """A logged-in browser without a key is anonymous to the API (so it needs no CSRF token)."""
    expect = API[name][0]
    response = _request(world.client("owner"), expect.method, _url(world, name, expect), expect.data)
    assert response.status_code == 401


# --- CSRF: every route of the site refuses a POST without the token; the htmx header carries it ----------


@pytest.mark.parametrize("name", sorted(SITE))
def test_no_site_route_takes_a_post_without_the_csrf_token(world, name):
    """Also catches a new @csrf_exempt view (results:import is exempt only to swap upload handlers, and
    checks the token itself)."""
    expect = SITE[name][0]
    actor = "anonymous" if name in ("login", "signup") else "owner"
    client = world.client(actor, enforce_csrf_checks=True)
    response = client.post(_url(world, name, expect), expect.data or {})
    assert response.status_code == 403, (name, response.status_code)


@pytest.mark.parametrize("name", sorted(n for n, e in SITE.items() if e[0].method == "POST"))
def test_site_posts_take_the_token_htmx_sends(world, name):
    """base.html's <body hx-headers='{"X-CSRFToken": …}'>: the header with the cookie's secret passes."""
    expect = SITE[name][0]
    client = world.client("owner", enforce_csrf_checks=True)
    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    response = client.post(
        _url(world, name, expect), expect.data or {}, headers={"X-CSRFToken": token, "HX-Request": "true"}
    )
    assert response.status_code != 403, (name, response.status_code)


# --- admin: Django's own gate, checked on every registered model ------------------------------------------


@pytest.mark.parametrize(
    "model", [f"{m._meta.app_label}_{m._meta.model_name}" for m in admin.site._registry], ids=str
)
def test_admin_is_staff_only(world, django_user_model, model):
    url = reverse(f"admin:{model}_changelist")
    response = world.client("anonymous").get(url)
    assert response.status_code == 302 and response["Location"].startswith(LOGIN_PATH)
    for actor in ("owner", "other"):
        response = world.client(actor).get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), actor
    assert world.client("staff").get(url).status_code == 403  # staff without the model's permission
    root = django_user_model.objects.create_superuser("root", password="pw-root-Long-1")
    client = Client()
    client.force_login(root)
    assert client.get(url).status_code == 200
