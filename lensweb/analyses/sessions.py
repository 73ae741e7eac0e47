"""A socket lives no longer than the session that opened it. Logout, a password change, a deactivated or
deleted user: each sends `session.check` to the user's group (after commit), and every socket of the user
re-validates its session. Channel messages are at-most-once, so the consumer also re-validates before each
cancel and, at most every few seconds, before forwarding anything."""

from __future__ import annotations

import hashlib
from importlib import import_module

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils.crypto import constant_time_compare

from .notify import session_check


def fingerprint(session_key: str | None) -> str:
    """What a `session.check` names an ended session by: channel messages (in Redis) never carry the key."""
    return hashlib.sha256((session_key or "").encode()).hexdigest()


def check_session(session_key: str | None, user_id) -> bool:
    """Whether `session_key` still signs in `user_id`, decided as django.contrib.auth.get_user decides it on
    the next request (session present and unexpired, backend configured, user active, auth hash matching the
    password, fallback secrets included), but read-only: get_user would flush or cycle the session, and a
    socket cannot hand the browser a new cookie."""
    if not session_key:
        return False
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()  # {}: gone or expired
    backend_path = data.get(BACKEND_SESSION_KEY)
    if backend_path not in settings.AUTHENTICATION_BACKENDS or SESSION_KEY not in data:
        return False
    try:
        session_user_id = get_user_model()._meta.pk.to_python(data[SESSION_KEY])
    except Exception:  # a value that is no primary key is no session of this user
        return False
    if session_user_id != user_id:
        return False
    user = load_backend(backend_path).get_user(session_user_id)  # None: deleted, or inactive
    if user is None:
        return False
    if not hasattr(user, "get_session_auth_hash"):
        return True
    session_hash = data.get(HASH_SESSION_KEY)
    if not session_hash:
        return False
    return constant_time_compare(session_hash, user.get_session_auth_hash()) or any(
        constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash()
    )


# --- what ends sessions ------------------------------------------------------------------------------------


def _after_commit(user_id, ended: str = "") -> None:
    # After commit: a socket re-validating earlier would still read the old password or session.
    transaction.on_commit(lambda: session_check(user_id, ended))


def on_logged_out(sender, request, user, **kwargs):
    if user is not None:
        # The event names the session: logout flushes it only after this signal.
        _after_commit(user.pk, fingerprint(getattr(request.session, "session_key", None)))


def on_user_saved(sender, instance, created, update_fields=None, **kwargs):
    """A password change (or is_active, or anything else on a full save) may end sessions: re-validate.
    Saves of named fields other than the password (last_login on every login) cannot."""
    if created or (update_fields is not None and "password" not in update_fields):
        return
    _after_commit(instance.pk)


def on_user_deleted(sender, instance, **kwargs):
    _after_commit(instance.pk)


def connect_signals() -> None:
    user_model = get_user_model()
    user_logged_out.connect(on_logged_out, dispatch_uid="lensweb.analyses.sessions.logged_out")
    post_save.connect(on_user_saved, sender=user_model, dispatch_uid="lensweb.analyses.sessions.saved")
    post_delete.connect(on_user_deleted, sender=user_model, dispatch_uid="lensweb.analyses.sessions.deleted")
