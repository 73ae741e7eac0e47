"""Every route of the URL conf (listed from it, so a new route is covered), fed NUL characters, lone
surrogates, numbers too large for any database and times that overflow in UTC, in its path and in every query
parameter the code reads (from `request.GET` in the source and the OpenAPI document): no 5xx, for an anonymous
visitor, a signed-in user and an API key. The suite's second stage runs it on PostgreSQL, where these
reached the database and answered 500."""

from __future__ import annotations

import itertools
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern

from lensweb.accounts.keys import create_key
from tests.accounts.conftest import clear_ratelimits  # noqa: F401  (autouse: every test starts uncounted)
from tests.conftest import REPO

# Transactional: the event stream's database_sync_to_async closes connections, which a test transaction
# cannot survive.
pytestmark = pytest.mark.django_db(transaction=True)

# What goes where a value goes: a NUL (raw and escaped), a lone surrogate (as UTF-8 cannot carry it: its
# WTF-8 bytes), digits beyond 64 bits, negative ones, a time past year 9999 in UTC, an empty value.
VALUES = [
    "%00",
    "x%00y",
    "%ED%A0%80",
    "99999999999999999999999",
    "-99999999999999999999",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00%2B23:59",
    "",
]
# Converter name -> values for a path segment (each also gets the VALUES that its regex admits).
SEGMENTS = {"id": ["1", "999999999999999999"], "str": ["x", "%00", "%ED%A0%80"], "slug": ["x"], "path": ["x"]}
SKIP_PREFIXES = ("admin/", "static/")  # Django's own admin and whitenoise's files


def routes() -> list[str]:
    """Every route of ours as a template, e.g. "analyses/<id:analysis_id>/export.json"."""
    found = []

    def walk(patterns, prefix):
        for entry in patterns:
            if not isinstance(entry.pattern, RoutePattern):
                continue  # regex routes are Django's own (admin); ours are all path() routes
            route = prefix + str(entry.pattern._route)
            if route.startswith(SKIP_PREFIXES):
                continue
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern):
                found.append(route)

    walk(get_resolver().url_patterns, "")
    return sorted(set(found))


def paths(route: str) -> list[str]:
    """The route with each converter filled by each of its test values (at most a few dozen)."""
    parts = re.split(r"<(?:(\w+):)?(\w+)>", route)
    literal, slots = parts[0::3], [parts[i] or "str" for i in range(1, len(parts), 3)]
    filled = []
    for values in itertools.product(*(SEGMENTS.get(kind, ["x"]) for kind in slots)):
        text = literal[0]
        for value, tail in zip(values, literal[1:], strict=True):
            text += value + tail
        filled.append("/" + text)
    return filled[:24]


def query_names() -> list[str]:
    """Every query parameter the code reads: `request.GET` in the source, and the API's documented ones."""
    names = set()
    for source in (REPO / "lensweb").rglob("*.py"):
        names |= set(re.findall(r"request\.GET(?:\.get|\.getlist)?[\[(]\"(\w+)\"", source.read_text()))
    client = Client()
    document = client.get("/api/v1/openapi.json").json()
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query":
                    names.add(parameter["name"])
    # the forms bound to request.GET (history's filter, compare's pick, the results page's view)
    names |= {"sort", "view", "columns", "order", "min_mse", "max_mse", "rerun", "sample", "kind"}
    return sorted(names)


@pytest.fixture
def visitors(django_user_model):
    user = django_user_model.objects.create_user("fuzz", password="pw-fuzz")
    signed_in = Client(raise_request_exception=False)
    signed_in.force_login(user)
    _, key = create_key(user, "fuzz")
    return {
        "anonymous": (Client(raise_request_exception=False), {}),
        "signed in": (signed_in, {}),
        "api key": (Client(raise_request_exception=False), {"Authorization": f"Bearer {key}"}),
    }


def test_the_route_list_sees_every_app():
    listed = routes()
    for expected in ("s/<str:token>/", "api/v1/analyses/<id:analysis_id>", "analyses/<id:analysis_id>/"):
        assert any(route.startswith(expected) for route in listed), expected
    assert len(listed) > 40


def test_no_address_answers_a_server_error(visitors):
    """Slow (about 35 s here) by what it covers: every route times every query parameter the code reads times
    four hostile values, some 6,000 requests; a sample would miss the new route this test exists for."""
    names = query_names()
    assert {"q", "lens", "created_after", "raw", "after"} <= set(names), names
    # NUL is refused before any view (one probe per path shows it); the others reach the views: a lone
    # surrogate, 23 digits, a time past year 9999 in UTC, an empty value
    probes = [f"?{name}={value}" for name in names for value in (VALUES[2], VALUES[3], VALUES[5], "")]
    failures = []
    for route in routes():
        for index, path in enumerate(paths(route)):
            for who, (client, headers) in visitors.items():
                # the probes where they reach a view: a session on pages, a key on the API
                reaches = who == ("api key" if path.startswith("/api/") else "signed in")
                queries = [""] + (probes if index == 0 and reaches else ["?q=%00"])
                for query in queries:
                    response = client.get(path + query, headers=headers)
                    # 503 is an answer (no worker yet, /readyz): a server error is any other 5xx
                    if response.status_code >= 500 and response.status_code != 503:
                        failures.append(f"{who} GET {path}{query}: {response.status_code}")
    assert not failures, f"{len(failures)} server errors, e.g.:\n" + "\n".join(failures[:20])
