"""Redis as what it is here, an optimisation that may fail: a cache backend and a channel layer that
neither hang nor raise a 500 when Redis is stopped or black-holed. The database stays the record.

FailSoftRedisCache: Django's RedisCache that answers from a per-process fallback cache (CACHES' "FALLBACK",
a DummyCache unless named) while Redis is unreachable: the rate limiter then counts per process, the
result cache's front misses and the database answers.
BoundedRedisChannelLayer: channels_redis' layer whose sends and group changes give up after
`operation_timeout` seconds (a blocking receive keeps its own, longer socket timeout).

After a failure a short circuit breaker skips Redis for `retry_after` seconds, so that each request does
not wait for a timeout of its own; it logs once when Redis goes away and once when it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from urllib.parse import urlsplit

import redis.exceptions
from channels_redis.core import RedisChannelLayer
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from django.utils.module_loading import import_string

log = logging.getLogger("lensweb.redis")

# Refused, reset, or no answer in time (BusyLoadingError, a restarting Redis, is a ConnectionError).
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RedisUnavailable(redis.exceptions.ConnectionError):
    """Not tried: Redis failed a moment ago (the breaker is open)."""


def describe(location: str) -> str:
    """host:port of a Redis URL, never its password."""
    try:
        parts = urlsplit(location)
        return f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else "(a socket)"
    except ValueError:
        return "(unparsable address)"


class Breaker:
    """One per name (what uses Redis, and where), shared by every thread of the process."""

    _registry: dict[str, Breaker] = {}
    _registry_lock = threading.Lock()

    def __init__(self, name: str, fallback: str):
        self.name, self.fallback = name, fallback
        self.open_until = 0.0
        self.down = False
        self._lock = threading.Lock()

    @classmethod
    def named(cls, name: str, fallback: str) -> Breaker:
        with cls._registry_lock:
            if name not in cls._registry:
                cls._registry[name] = cls(name, fallback)
            return cls._registry[name]

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def failed(self, error: BaseException, retry_after: float) -> None:
        with self._lock:
            self.open_until = time.monotonic() + retry_after
            first, self.down = not self.down, True
        if first:
            log.warning(
                "%s: Redis is unreachable (%s: %s); %s, trying Redis again every %g s",
                self.name,
                type(error).__name__,
                error,
                self.fallback,
                retry_after,
            )

    def succeeded(self) -> None:
        if self.down:
            with self._lock:
                back, self.down = self.down, False
            if back:
                log.warning("%s: Redis answers again", self.name)

    def reset(self) -> None:
        """Forget any failure (tests)."""
        with self._lock:
            self.open_until, self.down = 0.0, False


class FailSoftRedisCache(RedisCache):
    """RedisCache, or its FALLBACK cache while Redis is unreachable. CACHES entry keys beyond RedisCache's:
    FALLBACK (a CACHES-style dict; default DummyCache) and RETRY_AFTER (seconds, default 5). Put
    socket_connect_timeout and socket_timeout in OPTIONS: they bound the wait before falling back."""

    def __init__(self, server, params):
        params = dict(params)
        fallback = dict(
            params.pop("FALLBACK", None) or {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
        )
        self.retry_after = float(params.pop("RETRY_AFTER", 5.0))
        super().__init__(server, params)
        backend = fallback.pop("BACKEND")
        self.fallback = import_string(backend)(fallback.pop("LOCATION", ""), fallback)
        kind = "a per-process cache" if "locmem" in backend.lower() else "no cache"
        servers = ",".join(describe(s) for s in self._servers)
        self.breaker = Breaker.named(
            f"cache {servers} {params.get('KEY_PREFIX', '')}".strip(), f"using {kind}"
        )

    def _either(self, name: str, *args, **kwargs):
        if self.breaker.allows():
            try:
                result = getattr(RedisCache, name)(self, *args, **kwargs)
            except REDIS_DOWN as exc:
                self.breaker.failed(exc, self.retry_after)
            else:
                self.breaker.succeeded()
                return result
        return getattr(self.fallback, name)(*args, **kwargs)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._either("add", key, value, timeout, version)

    def get(self, key, default=None, version=None):
        return self._either("get", key, default, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._either("set", key, value, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._either("touch", key, timeout, version)

    def delete(self, key, version=None):
        return self._either("delete", key, version)

    def get_many(self, keys, version=None):
        return self._either("get_many", keys, version)

    def has_key(self, key, version=None):
        return self._either("has_key", key, version)

    def incr(self, key, delta=1, version=None):
        return self._either("incr", key, delta, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._either("set_many", data, timeout, version)

    def delete_many(self, keys, version=None):
        return self._either("delete_many", keys, version)

    def clear(self):
        return self._either("clear")


class BoundedRedisChannelLayer(RedisChannelLayer):
    """RedisChannelLayer whose send, group_send, group_add and group_discard give up after
    `operation_timeout` seconds. After a timeout (a black-holed Redis) they fail at once, with
    RedisUnavailable, for `retry_after` seconds; a refused connection fails fast by itself and trips
    nothing (so a blip drops no more messages than it must). Messages are doorbells and live updates,
    at most once by design: callers log the failure and the database stays the record."""

    def __init__(self, *args, operation_timeout: float = 2.0, retry_after: float = 5.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.operation_timeout, self.retry_after = float(operation_timeout), float(retry_after)
        addresses = ",".join(describe(str(h.get("address", ""))) for h in self.hosts)
        self.breaker = Breaker.named(f"channel layer {addresses}", "dropping messages")

    async def _bounded(self, operation, *args):
        if not self.breaker.allows():
            raise RedisUnavailable("Redis did not answer a moment ago; not trying again yet")
        try:
            result = await asyncio.wait_for(operation(*args), self.operation_timeout)
        except (TimeoutError, redis.exceptions.TimeoutError) as exc:
            error = redis.exceptions.TimeoutError(f"no answer from Redis in {self.operation_timeout:g} s")
            self.breaker.failed(error, self.retry_after)
            raise error from exc
        self.breaker.succeeded()
        return result

    async def send(self, channel, message):
        return await self._bounded(super().send, channel, message)

    async def group_send(self, group, message):
        return await self._bounded(super().group_send, group, message)

    async def group_add(self, group, channel):
        return await self._bounded(super().group_add, group, channel)

    async def group_discard(self, group, channel):
        return await self._bounded(super().group_discard, group, channel)
