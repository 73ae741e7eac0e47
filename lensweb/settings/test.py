"""Fast, isolated test settings: in-memory layer (JSON round trip), fast hasher, no embedded worker."""

import os
import tempfile

from .base import *  # noqa: F403
from .base import CHANNEL_LAYERS, DATABASES, REDIS_URL, env

SECRET_KEY = "test-secret-key"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
if REDIS_URL:
    # Keys of their own, so a test run and a dev server on the same Redis never see each other's messages.
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = env("REDIS_PREFIX", default=f"lensweb-test-{os.getpid()}")
else:
    # Messages cross a JSON boundary, as they do on the real (Redis) layer.
    CHANNEL_LAYERS = {"default": {"BACKEND": "lensweb.testing.JSONRoundTripChannelLayer"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not shared-cache memory: there, a worker thread writing meets "table is locked" at once,
    # while a file in WAL mode waits for the lock as production does.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"lensweb-test-{os.getpid()}.sqlite3")
    }
LENSWEB_EMBEDDED_WORKER = False
# Tests that import lensweb.asgi must not start a tokenizer read in the background (tests/web/test_cold_start
# runs a web process with it); servers that tests start use the base settings, and read them.
LENSWEB_WARM_TOKENIZERS = False
# The real engine (base's LENSWEB_ENGINE): tests/conftest.py points LENSWEB_LENS_REGISTRY at the tiny
# golden lens, which loads in seconds and analyses a short text in tens of milliseconds.
LENSWEB_SUBMIT_RATE = "1000/m"
# Identical submits are the queue tests' fixtures: the cache would answer them. tests/cache turns it on.
LENSWEB_RESULT_CACHE = env.bool("LENSWEB_RESULT_CACHE", default=False)
LOGGING = {"version": 1, "disable_existing_loggers": False}
