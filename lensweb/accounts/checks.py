"""Production refuses to start while the demo user can still log in with the published demo password.

The published one is `lensweb-demo` (base.py's default for LENSWEB_DEMO_PASSWORD, printed by `make run` and
in the README). A password an operator chose through LENSWEB_DEMO_PASSWORD (compose's first look) is not
published, so a demo user with it may serve."""

from django.conf import settings
from django.core import checks
from django.db import DatabaseError

PUBLISHED_DEMO_PASSWORD = "lensweb-demo"


@checks.register(checks.Tags.security)
def check_demo_password(app_configs=None, **kwargs):
    if not settings.LENSWEB_REFUSE_DEMO_PASSWORD:
        return []
    from django.contrib.auth import get_user_model

    try:
        user = get_user_model().objects.filter(username=settings.LENSWEB_DEMO_USERNAME).first()
    except DatabaseError:  # not migrated yet: nothing to refuse
        return []
    if user is not None and user.check_password(PUBLISHED_DEMO_PASSWORD):
        return [
            checks.Error(
                f"the user {user.username!r} still has the published demo password",
                hint=f"run `manage.py changepassword {user.username}` or delete the user before serving in "
                "production (or set your own LENSWEB_DEMO_PASSWORD before the demo user is created)",
                id="lensweb.E001",
            )
        ]
    return []
