"""Create the `demo` user with the demo password if it is missing. Safe to re-run: an existing user is
left alone (its password included)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from lensweb.accounts.checks import PUBLISHED_DEMO_PASSWORD
from lensweb.accounts.demo import published_demo_login


class Command(BaseCommand):
    help = "Create the demo user unless it exists (printing its password only if it is the published one)."

    def handle(self, *args, **options):
        username, password = settings.LENSWEB_DEMO_USERNAME, settings.LENSWEB_DEMO_PASSWORD
        if not password:
            self.stdout.write("LENSWEB_DEMO_PASSWORD is empty: no demo user created.")
            return
        users = get_user_model().objects
        if users.filter(username=username).exists():
            self.stdout.write(f"User {username!r} exists; left as it is.")
            if published_demo_login():  # still the published password, on a development server: say it
                self.stdout.write(
                    self.style.SUCCESS(f"Log in as {username!r} with password {PUBLISHED_DEMO_PASSWORD!r}.")
                )
            return
        users.create_user(username=username, password=password)
        if password == PUBLISHED_DEMO_PASSWORD:
            self.stdout.write(
                self.style.SUCCESS(f"Created user {username!r} with password {password!r}.")
                + f"\nChange it before going public: manage.py changepassword {username}"
            )
        else:  # the operator's own (LENSWEB_DEMO_PASSWORD): not written to logs
            self.stdout.write(
                self.style.SUCCESS(f"Created user {username!r} with the password LENSWEB_DEMO_PASSWORD.")
            )
