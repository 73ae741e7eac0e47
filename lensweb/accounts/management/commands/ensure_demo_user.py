"""Create the `demo` user with the demo password if it is missing. Safe to re-run: an existing user is
left alone (its password included)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the demo user (printing its password) unless it exists."

    def handle(self, *args, **options):
        username, password = settings.LENSWEB_DEMO_USERNAME, settings.LENSWEB_DEMO_PASSWORD
        users = get_user_model().objects
        if users.filter(username=username).exists():
            self.stdout.write(f"User {username!r} exists; left as it is.")
            return
        users.create_user(username=username, password=password)
        self.stdout.write(
            self.style.SUCCESS(f"Created user {username!r} with password {password!r}.")
            + f"\nChange it before going public: manage.py changepassword {username}"
        )
