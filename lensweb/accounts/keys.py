"""The one place that makes, hashes and checks API keys.

A key is `lw_<8-character lookup prefix>_<secret>`; the database holds the prefix and the sha256 of the
whole key. The key is shown once, when it is made, and never logged: log lines name the prefix only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
import unicodedata
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import ApiKey

log = logging.getLogger(__name__)

KEY_PREFIX = "lw_"
PREFIX_LENGTH = 8
PREFIX_ALPHABET = string.ascii_lowercase + string.digits
SECRET_BYTES = 32
# last_used_at is written at most this often per key: a busy client must not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)
# Compared against when no key has the prefix, so that a miss costs what a hit costs.
_DUMMY_HASH = hashlib.sha256(b"lensweb-no-such-key").hexdigest()
NAME_MAX_LENGTH = 100
# Not in a key's name (Unicode categories): control characters (newline, escape), format characters (bidi
# overrides), line and paragraph separators, surrogates, private use. In a log line or on a page they would
# start a forged line or disguise the text around them.
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})


class KeyLimitError(Exception):
    """The user holds as many active keys as LENSWEB_MAX_API_KEYS_PER_USER allows."""


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def split_key(raw: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not isinstance(raw, str) or not raw.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = raw[len(KEY_PREFIX) :].partition("_")  # the prefix alphabet has no "_"
    if not sep or len(prefix) != PREFIX_LENGTH or set(prefix) - set(PREFIX_ALPHABET) or len(secret) < 16:
        return None
    return prefix


def unprintable_in(name: str) -> str | None:
    """The first character of `name` that a key's name may not hold, or None."""
    return next((c for c in name if unicodedata.category(c) in UNPRINTABLE_CATEGORIES), None)


def clean_name(name) -> str:
    """The name as stored: unprintable characters become spaces (the forms refuse them; this covers every
    other caller), the ends stripped, cut to the column's length."""
    text = "".join(" " if unicodedata.category(c) in UNPRINTABLE_CATEGORIES else c for c in str(name or ""))
    return text.strip()[:NAME_MAX_LENGTH] or "API key"


def _new_key() -> tuple[str, str]:
    prefix = "".join(secrets.choice(PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def create_key(user, name: str) -> tuple[ApiKey, str]:
    """A new key for `user`: the row, and the key itself, which nobody can see again after this."""
    name = clean_name(name)
    limit = settings.LENSWEB_MAX_API_KEYS_PER_USER
    if limit and ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() >= limit:
        raise KeyLimitError(f"you already have {limit} active API keys; revoke one you no longer use first")
    for _ in range(5):  # a prefix collision is astronomically rare; try again if it happens
        prefix, raw = _new_key()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(user=user, name=name, prefix=prefix, hashed=hash_key(raw))
        except IntegrityError:
            continue
        log.info("API key lw_%s_… (%r) created for user %s", prefix, name, user.pk)
        return key, raw
    raise RuntimeError("could not find a free API key prefix")


def authenticate_key(raw: str) -> ApiKey | None:
    """The active key `raw` is, with its active user; None otherwise. Constant-time in the secret."""
    prefix = split_key(raw)
    key = ApiKey.objects.select_related("user").filter(prefix=prefix).first() if prefix is not None else None
    matches = hmac.compare_digest(
        key.hashed if key else _DUMMY_HASH, hash_key(raw if isinstance(raw, str) else "")
    )
    if key is None or not matches:
        log.info(
            "API authentication failed: %s",
            f"no valid key with prefix lw_{prefix}_…" if prefix else "malformed key",
        )
        return None
    if not usable(key):
        log.info("API authentication failed: key lw_%s_… is revoked or its user is inactive", prefix)
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def usable(key: ApiKey) -> bool:
    """Not revoked, and its user active."""
    return key.is_active and key.user.is_active


def still_valid(key_id: int) -> bool:
    """Whether the key is still usable: a long-lived stream asks this every few seconds."""
    key = ApiKey.objects.select_related("user").filter(pk=key_id).first()
    return key is not None and usable(key)


def revoke_key(key: ApiKey) -> ApiKey:
    """Revoked keys stop working on the next request (every request reads the row)."""
    if key.revoked_at is None:
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        key.refresh_from_db()
        # %r: a name stored before names were cleaned may hold a newline; it must not start a log line
        log.info("API key lw_%s_… (%r) of user %s revoked", key.prefix, key.name, key.user_id)
    return key
