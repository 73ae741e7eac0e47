"""API keys: format, hashed storage, constant-time check, revocation, last use, the command, the logs."""

from __future__ import annotations

import hashlib
import io
import logging
import re

import pytest
from django.core.management import CommandError, call_command

from lensweb.accounts import keys
from lensweb.accounts.models import ApiKey

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"^lw_[a-z0-9]{8}_[A-Za-z0-9_-]{43}$")


def test_a_key_is_prefixed_and_stored_hashed(alice):
    row, raw = keys.create_key(alice, "laptop")
    assert KEY_RE.match(raw)
    assert raw[3:11] == row.prefix and row.name == "laptop" and row.user == alice
    assert row.hashed == hashlib.sha256(raw.encode()).hexdigest()
    stored = ApiKey.objects.filter(pk=row.pk).values().get()
    assert raw not in str(stored) and raw.split("_", 2)[2] not in str(stored)
    assert row.last_used_at is None and row.revoked_at is None and row.created_at


def test_keys_are_unique(alice):
    made = {keys.create_key(alice, f"k{i}")[1] for i in range(10)}
    assert len(made) == 10 and len({k[3:11] for k in made}) == 10


def test_a_key_works_until_revoked(alice):
    row, raw = keys.create_key(alice, "laptop")
    assert keys.authenticate_key(raw).pk == row.pk
    keys.revoke_key(row)
    assert row.revoked_at is not None
    assert keys.authenticate_key(raw) is None
    keys.revoke_key(row)  # twice: no error, the first revocation time stays
    assert ApiKey.objects.get(pk=row.pk).revoked_at == row.revoked_at


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # wrong secret, right prefix
        lambda k: k.upper(),
        lambda k: k[:11],
        lambda k: "lw_zzzzzzzz" + k[11:],  # unknown prefix
        lambda k: k.replace("lw_", "xx_", 1),
        lambda k: k + "x",
        lambda k: "",
        lambda k: "lw_",
        lambda k: "lw_ab\x00defgh_" + "x" * 40,
    ],
)
def test_anything_but_the_exact_key_fails(alice, mangle):
    _, raw = keys.create_key(alice, "laptop")
    assert keys.authenticate_key(mangle(raw)) is None


def test_check_uses_compare_digest(alice, monkeypatch):
    calls = []
    real = keys.hmac.compare_digest
    monkeypatch.setattr(keys.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    _, raw = keys.create_key(alice, "laptop")
    keys.authenticate_key(raw)
    keys.authenticate_key("lw_zzzzzzzz_" + "x" * 43)  # a miss compares too, against a dummy
    assert len(calls) == 2


def test_an_inactive_users_key_fails(alice):
    _, raw = keys.create_key(alice, "laptop")
    alice.is_active = False
    alice.save()
    assert keys.authenticate_key(raw) is None


def test_last_used_is_recorded_at_most_once_a_minute(alice):
    row, raw = keys.create_key(alice, "laptop")
    keys.authenticate_key(raw)
    first = ApiKey.objects.get(pk=row.pk).last_used_at
    assert first is not None
    keys.authenticate_key(raw)
    assert ApiKey.objects.get(pk=row.pk).last_used_at == first


def test_the_number_of_active_keys_is_capped(alice, settings):
    settings.LENSWEB_MAX_API_KEYS_PER_USER = 2
    first, _ = keys.create_key(alice, "a")
    keys.create_key(alice, "b")
    with pytest.raises(keys.KeyLimitError):
        keys.create_key(alice, "c")
    keys.revoke_key(first)
    keys.create_key(alice, "c")


def test_a_blank_name_gets_a_default(alice):
    assert keys.create_key(alice, "  ")[0].name == "API key"


# --- manage.py create_api_key ----------------------------------------------------------------------------


def test_create_api_key_prints_the_key_alone_on_its_last_line(alice):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "alice", "--name", "nightly sweep", stdout=out, stderr=err)
    last = out.getvalue().strip().splitlines()[-1]
    assert KEY_RE.match(last)
    row = keys.authenticate_key(last)
    assert row.user == alice and row.name == "nightly sweep"
    assert last not in err.getvalue() and row.prefix in err.getvalue()


def test_create_api_key_default_name(alice):
    out = io.StringIO()
    call_command("create_api_key", "alice", stdout=out, stderr=io.StringIO())
    assert ApiKey.objects.get().name == "command line"


def test_create_api_key_for_an_unknown_or_inactive_user_fails(alice):
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("create_api_key", "nobody", stdout=io.StringIO(), stderr=io.StringIO())
    alice.is_active = False
    alice.save()
    with pytest.raises(CommandError, match="inactive"):
        call_command("create_api_key", "alice", stdout=io.StringIO(), stderr=io.StringIO())
    assert not ApiKey.objects.exists()


# --- never in the logs -----------------------------------------------------------------------------------


def test_keys_never_appear_in_logs(client, alice, admin_user, caplog, settings):
    """Everything a key goes through, logged at DEBUG everywhere: neither the key nor its secret shows."""
    settings.LENSWEB_API_AUTH_FAILURE_RATE = "1000/m"
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    out = io.StringIO()
    call_command("create_api_key", "alice", stdout=out, stderr=io.StringIO())
    seen.append(out.getvalue().strip())

    client.force_login(alice)
    page = client.post("/accounts/settings/keys/", {"name": "web"}, headers={"HX-Request": "true"})
    seen.append(re.search(r'value="(lw_[^"]+)"', page.content.decode()).group(1))

    for raw in seen:
        assert client.get("/api/v1/lenses", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
        wrong = raw[:-4] + "AAAA"
        assert client.get("/api/v1/lenses", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        client.get("/api/v1/nowhere", headers={"Authorization": f"Bearer {raw}"})
    keys.revoke_key(keys.authenticate_key(seen[0]))
    assert client.get("/api/v1/lenses", headers={"Authorization": f"Bearer {seen[0]}"}).status_code == 401

    client.force_login(admin_user)
    client.post("/admin/accounts/apikey/add/", {"user": alice.pk, "name": "from admin"})
    client.get("/admin/accounts/apikey/")

    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert "lw_" in caplog.text  # prefixes are logged, so that an operator can tell keys apart
    for raw in seen:
        secret = raw[12:]
        assert raw not in caplog.text and secret not in caplog.text
        assert secret[:16] not in caplog.text
