"""Users (alice, bob, a staff member), API keys, and a limiter that starts every test empty."""

from __future__ import annotations

import pytest
from django.core.cache import caches

from lensweb.accounts import keys


@pytest.fixture(autouse=True)
def clear_ratelimits(settings):
    """django-ratelimit counts in a cache: empty it, so that no test inherits another's requests."""
    caches[settings.RATELIMIT_USE_CACHE].clear()
    yield
    caches[settings.RATELIMIT_USE_CACHE].clear()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw-alice-Long-1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-bob-Long-1")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("stella", password="pw-staff-Long-1", is_staff=True)


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("root", password="pw-root-Long-1")


@pytest.fixture
def alice_key(alice) -> str:
    return keys.create_key(alice, "alice's laptop")[1]


@pytest.fixture
def bob_key(bob) -> str:
    return keys.create_key(bob, "bob's notebook")[1]


@pytest.fixture
def staff_key(staff) -> str:
    return keys.create_key(staff, "operator")[1]


@pytest.fixture
def revoked_key(alice) -> str:
    row, raw = keys.create_key(alice, "old")
    keys.revoke_key(row)
    return raw
