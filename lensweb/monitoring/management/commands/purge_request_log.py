from django.conf import settings
from django.core.management.base import BaseCommand

from lensweb.monitoring.requestlog import purge


class Command(BaseCommand):
    help = "Delete request log entries older than LENSWEB_REQUEST_LOG_RETENTION_DAYS (0 keeps them all)."

    def handle(self, *args, **options):
        days = settings.LENSWEB_REQUEST_LOG_RETENTION_DAYS
        if not days or days <= 0:
            self.stdout.write("LENSWEB_REQUEST_LOG_RETENTION_DAYS is 0: entries are kept forever")
            return
        deleted = purge()
        self.stdout.write(f"{deleted} request log entries older than {days} days deleted")
