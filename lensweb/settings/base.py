"""Settings read from the environment in one place. Development defaults; see production.py and test.py."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parents[2]

env = environ.Env()

DEVELOPMENT_SECRET_KEY = (
    "insecure-development-key-set-SECRET_KEY-in-production"  # published: never in production
)
SECRET_KEY = env("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # The first app's command wins: our `runserver` (daphne's, with the embedded worker) shadows daphne's and
    # staticfiles' ones, and our `runworker` (which also starts the lens worker) channels' one.
    "lensweb.analyses",
    "daphne",  # ASGI runserver: pages and sockets
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "lensweb.accounts",
    "lensweb.api",
    "ninja",  # its vendored Swagger UI files, served by /api/v1/docs
    "lensweb.monitoring",
    "lensweb.results",
    "lensweb.cache",
    "channels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "lensweb.security.ContentSecurityPolicyMiddleware",  # every response, static files included
    "lensweb.urlsafety.RejectNulMiddleware",  # a 400, not a database error, for a NUL in the address
    # Before sessions, CSRF and login: it answers the API's CORS preflights, which carry no credentials.
    "lensweb.api.cors.ApiCorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "lensweb.urls"
ASGI_APPLICATION = "lensweb.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded worker writes from its own thread while requests read: WAL + IMMEDIATE avoid lock errors.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="")
# Redis only speeds things up (doorbells, live updates, shared rate-limit counters, the result cache's
# front), so nothing waits long for it (lensweb.failsoft): seconds to connect; for a reply (the channel
# layer's sends and a cache's calls; its blocking receives wait longer, below); and, after it failed, for
# how long callers skip it (caches answer from their per-process fallback) before trying again.
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=1.0)
REDIS_TIMEOUT = env.float("REDIS_TIMEOUT", default=2.0)
REDIS_RETRY_AFTER = env.float("REDIS_RETRY_AFTER", default=5.0)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "lensweb.failsoft.BoundedRedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout, as long as channels_redis' blocking
                # BZPOPMIN: every idle receive would race it and sometimes die. Give reads more room.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 15,
                        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
                    }
                ],
                "prefix": env("REDIS_PREFIX", default="lensweb"),
                "capacity": 1500,
                "expiry": 60,
                "operation_timeout": REDIS_TIMEOUT,
                "retry_after": REDIS_RETRY_AFTER,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "analyses:index"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env("STATIC_ROOT", default=None)  # collectstatic target, for production
# Serve straight from static/ (no collectstatic step needed for `make run`).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels": {"level": "WARNING"}},
}

# --- lensweb: every web-side limit and timing, env-overridable -------------------------------------
# Which engine runs analyses: "inference" (the real one), or a dotted path to a class with its methods.
LENSWEB_ENGINE = env("LENSWEB_ENGINE", default="inference")
# Run the worker inside `manage.py serve` (needed with the in-memory layer, which is per process).
LENSWEB_EMBEDDED_WORKER = env.bool("LENSWEB_EMBEDDED_WORKER", default=not REDIS_URL)
# Read every lens' tokenizer and identity in the background as a web process starts (/readyz waits for it).
LENSWEB_WARM_TOKENIZERS = env.bool("LENSWEB_WARM_TOKENIZERS", default=True)
# A running job's phase and progress within its batch reach its card at most this often (seconds).
LENSWEB_PROGRESS_EVERY = env.float("LENSWEB_PROGRESS_EVERY", default=0.5)
# The status strip re-reads the workers' records at least this often (seconds): a dead worker rings no bell.
LENSWEB_STATUS_REFRESH_SECONDS = env.float("LENSWEB_STATUS_REFRESH_SECONDS", default=10.0)
LENSWEB_MAX_TEXT_CHARS = env.int("LENSWEB_MAX_TEXT_CHARS", default=20_000)
LENSWEB_MAX_TOKENS = env.int("LENSWEB_MAX_TOKENS", default=1_024)
LENSWEB_MAX_BEST_OF_K = env.int("LENSWEB_MAX_BEST_OF_K", default=64)
LENSWEB_MAX_QUEUED_PER_USER = env.int("LENSWEB_MAX_QUEUED_PER_USER", default=20)
LENSWEB_MAX_QUEUE = env.int("LENSWEB_MAX_QUEUE", default=200)
LENSWEB_SUBMIT_RATE = env("LENSWEB_SUBMIT_RATE", default="60/m")
LENSWEB_WS_MAX_MESSAGE_BYTES = env.int("LENSWEB_WS_MAX_MESSAGE_BYTES", default=4096)
LENSWEB_WS_MAX_MESSAGES_PER_MINUTE = env.int("LENSWEB_WS_MAX_MESSAGES_PER_MINUTE", default=120)
# The analysis page shows queued and running jobs and the last few to finish; History has the rest.
LENSWEB_RECENT_JOBS = env.int("LENSWEB_RECENT_JOBS", default=3)
# Rows a live card (page and socket) renders; the results page shows the rest.
LENSWEB_LIVE_CARD_ROWS = env.int("LENSWEB_LIVE_CARD_ROWS", default=50)
# A socket re-validates its session before forwarding, at most this often; idle, this often at least.
LENSWEB_WS_SESSION_CHECK_SECONDS = env.float("LENSWEB_WS_SESSION_CHECK_SECONDS", default=5.0)
LENSWEB_WS_IDLE_CHECK_SECONDS = env.float("LENSWEB_WS_IDLE_CHECK_SECONDS", default=60.0)
# Worker timings (seconds): heartbeat, queue poll (doorbells only cut latency), stale after.
LENSWEB_HEARTBEAT_INTERVAL = env.float("LENSWEB_HEARTBEAT_INTERVAL", default=5.0)
LENSWEB_POLL_INTERVAL = env.float("LENSWEB_POLL_INTERVAL", default=3.0)
LENSWEB_STALE_AFTER = env.float("LENSWEB_STALE_AFTER", default=30.0)
# The lens ids this process' workers serve (comma-separated; unset: every lens of the registry). A job waits
# for a worker that serves its lens, and says so.
LENSWEB_WORKER_LENSES = env.list("LENSWEB_WORKER_LENSES", default=[])
# A worker keeps recently used lenses in CPU memory within this many bytes (least recently used out first; 0:
# none), and lets go of its device copy after this many seconds without work (0: never).
LENSWEB_CPU_CACHE_BYTES = env.int("LENSWEB_CPU_CACHE_BYTES", default=8 * 1024**3)
LENSWEB_IDLE_UNLOAD_S = env.float("LENSWEB_IDLE_UNLOAD_S", default=900.0)
# Queued analyses of one lens and option set a worker runs at once, their positions sharing its batches,
# owners taking turns (inference.sharing); 1: one job at a time.
LENSWEB_SHARED_JOBS = env.int("LENSWEB_SHARED_JOBS", default=8)
# A job whose worker died this many times is failed rather than retried (it may be what kills them).
LENSWEB_MAX_ATTEMPTS = env.int("LENSWEB_MAX_ATTEMPTS", default=3)
LENSWEB_DEMO_USERNAME = "demo"
LENSWEB_DEMO_PASSWORD = env("LENSWEB_DEMO_PASSWORD", default="lensweb-demo")
# Production refuses to start while the demo user still has the demo password.
LENSWEB_REFUSE_DEMO_PASSWORD = False

# --- accounts and the API (lensweb.accounts, lensweb.api) ------------------------------------------
# Self sign-up: off; administrators create users (admin, createsuperuser).
LENSWEB_ALLOW_SIGNUP = env.bool("LENSWEB_ALLOW_SIGNUP", default=False)
# Rate limits ("count/period", django-ratelimit syntax; empty turns one off). Per client IP for the
# anonymous routes, per user on the authenticated ones. The API's submits share LENSWEB_SUBMIT_RATE with
# the browser form.
LENSWEB_LOGIN_RATE = env("LENSWEB_LOGIN_RATE", default="10/m")
# Login POSTs per username (normalised), whatever the address: /accounts/login/ and /admin/login/ together.
LENSWEB_LOGIN_USERNAME_RATE = env("LENSWEB_LOGIN_USERNAME_RATE", default="30/h")
LENSWEB_SIGNUP_RATE = env("LENSWEB_SIGNUP_RATE", default="5/h")
LENSWEB_KEY_CREATE_RATE = env("LENSWEB_KEY_CREATE_RATE", default="20/h")
LENSWEB_API_RATE = env("LENSWEB_API_RATE", default="600/m")
LENSWEB_API_AUTH_FAILURE_RATE = env("LENSWEB_API_AUTH_FAILURE_RATE", default="30/m")
# Daily caps per user (0: none): analysed positions, and generated tokens (n × max_new_tokens).
LENSWEB_MAX_POSITIONS_PER_DAY = env.int("LENSWEB_MAX_POSITIONS_PER_DAY", default=100_000)
LENSWEB_MAX_GENERATED_TOKENS_PER_DAY = env.int("LENSWEB_MAX_GENERATED_TOKENS_PER_DAY", default=100_000)
# Positions answered from the result cache per user and day (0: no cap). A hit computes nothing but its
# rows are copied into the user's own analysis (lensweb.cache.services): this bounds what hits can store.
LENSWEB_MAX_CACHED_POSITIONS_PER_DAY = env.int("LENSWEB_MAX_CACHED_POSITIONS_PER_DAY", default=100_000)
LENSWEB_MAX_QUEUED_GENERATIONS_PER_USER = env.int("LENSWEB_MAX_QUEUED_GENERATIONS_PER_USER", default=5)
LENSWEB_MAX_API_KEYS_PER_USER = env.int("LENSWEB_MAX_API_KEYS_PER_USER", default=20)
# API request bodies over this many bytes are refused (413) before parsing: a 20 000-character chat in
# JSON, escapes included, fits.
LENSWEB_API_MAX_BODY_BYTES = env.int("LENSWEB_API_MAX_BODY_BYTES", default=256 * 1024)
# POST /api/v1/analyses/batch: at most this many items, in a body of at most this many bytes (under
# Django's DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB, which refuses larger bodies before we see them).
LENSWEB_API_MAX_BATCH = env.int("LENSWEB_API_MAX_BATCH", default=100)
LENSWEB_API_MAX_BATCH_BODY_BYTES = env.int("LENSWEB_API_MAX_BATCH_BODY_BYTES", default=2 * 1024 * 1024)
# GET /api/v1/analyses/<id>/events (lensweb.api.events): a stream ends after this many seconds (the client
# resumes with Last-Event-ID); an API key may hold this many streams open at once (beyond: 429 too_many_streams).
LENSWEB_API_EVENTS_MAX_SECONDS = env.int("LENSWEB_API_EVENTS_MAX_SECONDS", default=600)
LENSWEB_API_EVENTS_PER_KEY = env.int("LENSWEB_API_EVENTS_PER_KEY", default=4)
# How often a stream reads the database without a doorbell (a missed one must not stall it), and keep-alives.
LENSWEB_API_EVENTS_POLL_SECONDS = env.float("LENSWEB_API_EVENTS_POLL_SECONDS", default=5.0)
LENSWEB_API_EVENTS_KEEPALIVE_SECONDS = env.float("LENSWEB_API_EVENTS_KEEPALIVE_SECONDS", default=15.0)
# CORS (lensweb.api.cors): web pages of these exact origins (scheme://host[:port], comma-separated; no
# wildcard, no path) may call /api/v1/ with an API key. Unset: none. Never the session pages, never cookies.
LENSWEB_CORS_ALLOWED_ORIGINS = env.list("LENSWEB_CORS_ALLOWED_ORIGINS", default=[])
# The limiter's counters: shared through Redis when there is one (several processes must agree), else
# in this process' memory.
RATELIMIT_USE_CACHE = "ratelimit"
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    **globals().get("CACHES", {}),
    # While Redis is unreachable each process counts on its own (lensweb.failsoft.FailSoftRedisCache).
    "ratelimit": (
        {
            "BACKEND": "lensweb.failsoft.FailSoftRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": REDIS_CONNECT_TIMEOUT, "socket_timeout": REDIS_TIMEOUT},
            "RETRY_AFTER": REDIS_RETRY_AFTER,
            "FALLBACK": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ratelimit"},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ratelimit"}
    ),
}
# The client address per-IP limits count (lensweb.accounts.ratelimits.client_ip). Unset: REMOTE_ADDR.
# Behind a reverse proxy REMOTE_ADDR is the proxy's, the same for everyone: name the header the proxy
# sets, as a META key or a header name: HTTP_X_FORWARDED_FOR (proxies append the address they saw; the
# LENSWEB_TRUSTED_PROXY_HOPS-th entry from the right is taken, so what a client wrote further left does
# not count) or HTTP_X_REAL_IP (the proxy overwrites it). Production refuses to start without it unless
# LENSWEB_BEHIND_PROXY=false (lensweb.settings.production).
_ip_header = env("LENSWEB_CLIENT_IP_HEADER", default="").strip().upper().replace("-", "_")
LENSWEB_CLIENT_IP_HEADER = (
    _ip_header if _ip_header.startswith("HTTP_") or not _ip_header else f"HTTP_{_ip_header}"
)
# Proxies in front of daphne that each append to X-Forwarded-For (a CDN, then nginx: 2).
LENSWEB_TRUSTED_PROXY_HOPS = env.int("LENSWEB_TRUSTED_PROXY_HOPS", default=1)
RATELIMIT_IP_META_KEY = "lensweb.accounts.ratelimits.client_ip"

# --- monitoring (lensweb.monitoring): dashboard, /metrics, the request log --------------------------
# /metrics: a staff session, or `Authorization: Bearer <this token>` when set; with no token set, also
# plain requests from loopback that came through no proxy (no X-Forwarded-For / Forwarded header), except
# in production (LENSWEB_METRICS_ALLOW_LOOPBACK is False there: a proxy or sidecar on the host is loopback).
LENSWEB_METRICS_TOKEN = env("LENSWEB_METRICS_TOKEN", default="")
LENSWEB_METRICS_ALLOW_LOOPBACK = True
# Retention (lensweb.monitoring.retention): hourly from the app, and `manage.py purge` (alias
# purge_request_log) for a cron job. Request log entries older than this (0 keeps them forever); expired
# sessions; records of workers stopped or lost this many days ago.
LENSWEB_REQUEST_LOG_RETENTION_DAYS = env.int("LENSWEB_REQUEST_LOG_RETENTION_DAYS", default=30)
LENSWEB_WORKER_RECORD_RETENTION_DAYS = env.int("LENSWEB_WORKER_RECORD_RETENTION_DAYS", default=7)
# Finished analyses (done, failed, cancelled: rows, share links and all) this many days after they ended;
# queued and running ones never. `manage.py purge` only (it may delete much); 0 keeps them forever.
LENSWEB_ANALYSIS_RETENTION_DAYS = env.int("LENSWEB_ANALYSIS_RETENTION_DAYS", default=0)
# Requests refused for want of a login or a valid API key are counted for /metrics in this cache (shared
# through Redis when there is one), not written to the request log: spam cannot grow a table.
LENSWEB_METRICS_COUNTER_CACHE = RATELIMIT_USE_CACHE
# POST/PUT/PATCH/DELETE under these paths are logged (the browser's submit and cancel, and the API).
LENSWEB_REQUEST_LOG_PREFIXES = ["/analyses/", "/generations/", "/api/v1/"]
LENSWEB_REQUEST_LOG_API_PREFIX = "/api/"
MIDDLEWARE += ["lensweb.monitoring.middleware.RequestLogMiddleware"]  # last: it sees request.user

# --- results: import size limit ----------------------------------------------------------------------
LENSWEB_MAX_IMPORT_BYTES = env.int("LENSWEB_MAX_IMPORT_BYTES", default=20 * 2**20)
# Imports per user (POSTs, refused or not): a file is parsed and written in the one database thread that
# every socket shares. Rows count against LENSWEB_MAX_POSITIONS_PER_DAY like analysed positions; each
# transcript has at most LENSWEB_MAX_TOKENS rows, a file at most LENSWEB_MAX_IMPORT_ROWS.
LENSWEB_IMPORT_RATE = env("LENSWEB_IMPORT_RATE", default="10/m")
LENSWEB_MAX_IMPORT_ROWS = env.int("LENSWEB_MAX_IMPORT_ROWS", default=10_000)

# --- security headers (lensweb.security; production.py adds HTTPS, HSTS and secure cookies) ----------
# Content-Security-Policy: no inline script or style, connect-src 'self' + the page's ws(s) origin.
# A report-uri for violation reports (optional), and report-only mode for trying a change of policy.
LENSWEB_CSP_REPORT_URI = env("LENSWEB_CSP_REPORT_URI", default="")
LENSWEB_CSP_REPORT_ONLY = env.bool("LENSWEB_CSP_REPORT_ONLY", default=False)
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- the result cache (lensweb.cache): identical requests answered from stored results -----------------
LENSWEB_RESULT_CACHE = env.bool("LENSWEB_RESULT_CACHE", default=True)
# One trusted group: any user's identical request is answered from another's result. Off, a user's cache is
# their own (plus what an operator warmed), so that a hit never tells one user what another asked.
LENSWEB_RESULT_CACHE_SHARED = env.bool("LENSWEB_RESULT_CACHE_SHARED", default=False)
# The device and dtype workers run lenses in (inference.lens reads them itself; empty: CUDA if available,
# else CPU; bf16 on CUDA, float32 on CPU). They are part of a result's identity: a web process keys results
# by them, so where web and workers run on different machines, give both the workers' values.
LENSWEB_DEVICE = env("LENSWEB_DEVICE", default="")
LENSWEB_DTYPE = env("LENSWEB_DTYPE", default="")
# "int8": CPU workers quantise their lenses' transformer blocks (inference.quant; faster, a measured fidelity
# cost: README). Part of a result's identity too.
LENSWEB_CPU_QUANT = env("LENSWEB_CPU_QUANT", default="")
# Eviction after every store and by `manage.py evict_cache`: entries older than this, then the least
# recently used until the total fits. 0 turns a limit off.
LENSWEB_CACHE_MAX_AGE_DAYS = env.float("LENSWEB_CACHE_MAX_AGE_DAYS", default=30)
LENSWEB_CACHE_MAX_BYTES = env.int("LENSWEB_CACHE_MAX_BYTES", default=2 * 2**30)
# With Redis, recently used entries are also kept there (the database stays the record) for this long.
LENSWEB_CACHE_REDIS_TTL = env.int("LENSWEB_CACHE_REDIS_TTL", default=3600)
LENSWEB_CACHE_FRONT = "results" if REDIS_URL else ""  # a CACHES alias, or "" for the database alone
if REDIS_URL:
    CACHES["results"] = {  # while Redis is unreachable: no front, the database answers
        "BACKEND": "lensweb.failsoft.FailSoftRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env("REDIS_PREFIX", default="lensweb"),
        "TIMEOUT": LENSWEB_CACHE_REDIS_TTL,
        "OPTIONS": {"socket_connect_timeout": REDIS_CONNECT_TIMEOUT, "socket_timeout": REDIS_TIMEOUT},
        "RETRY_AFTER": REDIS_RETRY_AFTER,
    }
