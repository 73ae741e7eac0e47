"""A reusable access-matrix base (healthchecks style): one world of rows, the actors who ask, and the
enumeration of every route in the urlconf, so that a table of expectations can be checked for coverage.

Actors of the site: `anonymous`, `owner` (owns every row in the world), `other` (a user with nothing),
`staff` (is_staff, no model permissions). Actors of the API: `no_key`, `revoked_key` (the owner's, revoked),
`owner_key`, `other_key`, `staff_key`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

SITE_ACTORS = ("anonymous", "owner", "other", "staff")
API_ACTORS = ("no_key", "revoked_key", "owner_key", "other_key", "staff_key")
# An anonymous visitor to a page that needs a login is sent there (302 with this Location).
LOGIN = "login"
LOGIN_PATH = "/accounts/login/"
# Admin routes are Django's own (every one behind admin_site.admin_view): checked per registered model
# in test_admin_is_staff_only, not one by one in the table.
ADMIN_NAMESPACE = "admin"


@dataclass(frozen=True)
class Expect:
    """One request to a route and the status each actor gets. `LOGIN` means 302 to the login page."""

    method: str
    statuses: dict[str, int | str]
    data: dict[str, Any] | None = None
    query: str = ""


def site(method: str, anonymous, owner, other, staff, **extra) -> Expect:
    return Expect(method, {"anonymous": anonymous, "owner": owner, "other": other, "staff": staff}, **extra)


def api(method: str, no_key, revoked_key, owner_key, other_key, staff_key, **extra) -> Expect:
    statuses = {
        "no_key": no_key,
        "revoked_key": revoked_key,
        "owner_key": owner_key,
        "other_key": other_key,
        "staff_key": staff_key,
    }
    return Expect(method, statuses, **extra)


def iter_routes(patterns=None, namespace: str = "", prefix: str = "", urlconf=None):
    """(namespace, qualified url name or None, route, converter names) of every URLPattern, recursively."""
    for p in get_resolver(urlconf).url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            ns = p.namespace
            inner = f"{namespace}:{ns}" if namespace and ns else (ns or namespace)
            yield from iter_routes(p.url_patterns, inner, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            name = f"{namespace}:{p.name}" if namespace and p.name else p.name
            yield namespace, name, prefix + str(p.pattern), tuple(p.pattern.regex.groupindex)


def project_routes(urlconf=None) -> dict[str | None, tuple[str, tuple[str, ...]]]:
    """Every route outside the admin: qualified name (None for an unnamed one) -> (route, converters)."""
    routes = {}
    for namespace, name, route, converters in iter_routes(urlconf=urlconf):
        if namespace.split(":")[0] == ADMIN_NAMESPACE:
            continue
        routes[name] = (route, converters)
    return routes


def coverage_gaps(routes, *tables) -> tuple[list, list]:
    """(routes no table covers, table entries for no route). Unnamed routes count as uncovered."""
    names = set(routes)
    tabled = set().union(*tables)
    return sorted(names - tabled, key=str), sorted(tabled - names)


@dataclass
class World:
    """Everything a route may need, all of it owned by `owner`."""

    owner: Any
    other: Any
    staff: Any
    analysis: Any  # done, with rows (best-of-2 candidates kept)
    queued: Any  # queued, for cancel
    position: int  # a position of `analysis` with candidates
    share_token: str
    api_key: Any  # the owner's active key row (settings page, revoke)
    keys: dict[str, str | None]  # API actor -> raw key
    generation: Any
    probe: Any  # a queued activations read of `analysis`

    def user(self, actor: str):
        return {"anonymous": None, "owner": self.owner, "other": self.other, "staff": self.staff}[actor]

    def client(self, actor: str, **kwargs) -> Client:
        client = Client(**kwargs)
        user = self.user(actor)
        if user is not None:
            client.force_login(user)
        return client

    def url_kwargs(self, name: str, converters: tuple[str, ...]) -> dict[str, Any]:
        """Values for the route's converters: the owner's rows (cancel gets the queued job)."""
        values = {
            "job_id": self.queued.pk if name == "analyses:cancel" else self.analysis.pk,
            "analysis_id": self.analysis.pk,
            "key_id": self.api_key.pk,
            "position": self.position,
            "token": self.share_token,
            "generation_id": self.generation.pk,
            "probe_id": self.probe.pk,
            "rest": "no-such-route",
        }
        missing = set(converters) - set(values)
        assert not missing, f"{name}: no value for {sorted(missing)}; teach World.url_kwargs about it"
        return {c: values[c] for c in converters}
