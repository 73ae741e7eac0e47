"""Settings modules: `base` (development default), `test`, `production` (LENSWEB_ENV=production)."""

import os


def default_module() -> str:
    """The settings module manage.py and asgi.py use when DJANGO_SETTINGS_MODULE is unset."""
    if os.environ.get("LENSWEB_ENV", "").lower() == "production":
        return "lensweb.settings.production"
    return "lensweb.settings.base"
