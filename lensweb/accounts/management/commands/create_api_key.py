"""`manage.py create_api_key USERNAME [--name NAME]`: the new key alone on the last line, for scripts."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from lensweb.accounts import keys


class Command(BaseCommand):
    help = "Create an API key for USERNAME and print it (it cannot be shown again)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="what the key is for")

    def handle(self, *args, username, name, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(
                f"there is no user {username!r}; create one first (manage.py createsuperuser)"
            ) from None
        if not user.is_active:
            raise CommandError(f"the user {username!r} is inactive; its keys would not work")
        try:
            row, raw = keys.create_key(user, name)
        except keys.KeyLimitError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"Created API key {row.masked} ({row.name}) for {username}. It is shown once:")
        self.stdout.write(raw)
