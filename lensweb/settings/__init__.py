"""Settings modules: `base` (development default), `test`, `production` (LENSWEB_ENV=production)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def env_file(environ=os.environ) -> Path | None:
    """The `.env` to read: the file LENSWEB_ENV_FILE names (empty: none), else REPO/.env, except under pytest
    (PYTEST_VERSION, inherited by the servers tests start): a developer's .env must not leak into tests,
    which name their file explicitly."""
    named = environ.get("LENSWEB_ENV_FILE")
    if named is not None:
        return Path(named) if named else None
    return None if "PYTEST_VERSION" in environ else REPO / ".env"


def load_env_file() -> None:
    """Read the `.env` into os.environ when it exists; a variable already set in the real environment wins
    over the file."""
    path = env_file()
    if path is not None and path.is_file():
        import environ as django_environ

        django_environ.Env.read_env(path, overwrite=False)


def default_module() -> str:
    """The settings module manage.py and asgi.py use when DJANGO_SETTINGS_MODULE is unset. It reads the
    `.env` first (both call it, always, before settings load), so LENSWEB_ENV there selects the module too."""
    load_env_file()
    if os.environ.get("LENSWEB_ENV", "").lower() == "production":
        return "lensweb.settings.production"
    return "lensweb.settings.base"
