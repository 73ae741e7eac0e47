"""No value a client chose can forge a log line or make a request log entry fail to save: an API key's name
with a newline is refused (or cleaned), names and paths are escaped in log lines, the request log's line
is one line whatever its fields hold, and its fields are stored whatever characters they hold."""

from __future__ import annotations

import json
import logging

import pytest
from django.db import connection

from lensweb.accounts import keys
from lensweb.accounts.models import ApiKey
from lensweb.monitoring import requestlog
from lensweb.monitoring.models import RequestLogEntry
from tests.accounts.conftest import admin_user  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

FORGED = 'laptop\n2026-01-01 12:00:00 INFO lensweb.requests: request {"user": 1, "outcome": "accepted"}'


def lines_of(caplog, logger: str) -> list[str]:
    return [line for r in caplog.records if r.name == logger for line in r.getMessage().splitlines()]


@pytest.mark.parametrize(
    "name", [FORGED, "a\rb", "tab\there", "esc\x1b[31mred", "rtl\u202eevil", "ls\u2028x"]
)
def test_the_settings_page_refuses_a_key_name_with_control_characters(client, alice, name):
    client.force_login(alice)
    page = client.post("/accounts/settings/keys/", {"name": name}, headers={"HX-Request": "true"})
    assert "control or formatting characters" in page.content.decode()
    assert not ApiKey.objects.exists()


def test_the_admin_refuses_it_too_on_adding_and_renaming(client, admin_user, alice):  # noqa: F811
    client.force_login(admin_user)
    page = client.post("/admin/accounts/apikey/add/", {"user": alice.pk, "name": FORGED})
    assert page.status_code == 200 and "control or formatting characters" in page.content.decode()
    assert not ApiKey.objects.exists()
    row, _ = keys.create_key(alice, "fine")
    page = client.post(f"/admin/accounts/apikey/{row.pk}/change/", {"name": "x\ny"})
    assert "control or formatting characters" in page.content.decode()
    assert ApiKey.objects.get().name == "fine"


def test_every_other_caller_gets_the_name_cleaned_and_log_lines_stay_single(alice, caplog):
    caplog.set_level(logging.INFO, logger="lensweb.accounts.keys")
    row, _ = keys.create_key(alice, FORGED)
    assert "\n" not in row.name and row.name.startswith("laptop 2026-01-01")
    ApiKey.objects.filter(pk=row.pk).update(name=FORGED)  # a name stored before names were cleaned
    keys.revoke_key(ApiKey.objects.get(pk=row.pk))
    lines = lines_of(caplog, "lensweb.accounts.keys")
    assert len(lines) == 2 and all(line.startswith("API key lw_") for line in lines), lines
    assert "\\n2026-01-01" in lines[1]  # escaped, still readable


def test_a_request_log_line_is_one_line_whatever_its_fields_hold(alice, caplog):
    caplog.set_level(logging.INFO, logger="lensweb.requests")
    requestlog.record(
        client="api", method="POST", endpoint="/api/v1/x\n2026-01-01 INFO lensweb.requests: request {}",
        kind="analysis\r", outcome="refused", reason="bad\u2028reason", lens_id="tiny\x85", user=alice,
        options={"seed": "7\n8"},
    )  # fmt: skip
    lines = lines_of(caplog, "lensweb.requests")
    assert len(lines) == 1 and lines[0].startswith("request {")
    fields = json.loads(lines[0][len("request ") :])
    assert fields["endpoint"].startswith("/api/v1/x\n2026") and fields["reason"] == "bad\u2028reason"
    assert lines[0].isascii()


def test_fields_a_database_refuses_are_stored_replaced(alice):
    """A lone surrogate (valid JSON: "\\ud800") or NUL in a path, a lens id or an option: before, the entry
    failed to save (SQLite cannot encode a surrogate; PostgreSQL refuses NUL and both in jsonb)."""
    entry = requestlog.record(
        client="api", method="POST", endpoint="/api/v1/\x00x", kind="analysis", outcome="refused",
        lens_id="tiny\ud800", user=alice, options={"seed": "\ud800\x00"},
    )  # fmt: skip
    stored = RequestLogEntry.objects.get(pk=entry.pk)
    assert stored.endpoint == "/api/v1/\ufffdx" and stored.lens_id.startswith("tiny\ufffd")
    assert "\x00" not in stored.options["seed"] and "\ufffd" in stored.options["seed"]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {RequestLogEntry._meta.db_table}")
        assert cursor.fetchone()[0] == 1


def test_the_failure_line_of_the_request_log_escapes_the_path(client, alice, caplog, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("the database is away")

    monkeypatch.setattr(requestlog, "record", broken)
    caplog.set_level(logging.ERROR, logger="lensweb.requests")
    client.force_login(alice)
    assert client.post("/analyses/%0Aforged/").status_code == 404
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lensweb.requests"]
    assert "\n" not in line and "\\n" in line
