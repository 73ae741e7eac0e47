"""`manage.py purge`: everything retention removes, for a daily cron job (lensweb.monitoring.retention)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from lensweb.monitoring.retention import purge_all


def _kept_for(days: int, what: str) -> str:
    return f"{days} days" if days and days > 0 else f"kept forever ({what} is 0)"


class Command(BaseCommand):
    help = (
        "Delete request log entries, expired sessions, records of workers long stopped and (when "
        "LENSWEB_ANALYSIS_RETENTION_DAYS is set) finished analyses older than their retention."
    )

    def handle(self, *args, **options):
        purged = purge_all()
        log_days = settings.LENSWEB_REQUEST_LOG_RETENTION_DAYS
        worker_days = settings.LENSWEB_WORKER_RECORD_RETENTION_DAYS
        analysis_days = settings.LENSWEB_ANALYSIS_RETENTION_DAYS
        sessions = "expire by themselves" if purged.sessions is None else f"{purged.sessions} expired deleted"
        self.stdout.write(
            f"request log: {purged.request_log} entries deleted "
            f"(retention {_kept_for(log_days, 'LENSWEB_REQUEST_LOG_RETENTION_DAYS')})\n"
            f"sessions: {sessions}\n"
            f"worker records: {purged.workers} of stopped or lost workers deleted "
            f"(retention {_kept_for(worker_days, 'LENSWEB_WORKER_RECORD_RETENTION_DAYS')})\n"
            f"analyses: {purged.analyses} finished analyses deleted "
            f"(retention {_kept_for(analysis_days, 'LENSWEB_ANALYSIS_RETENTION_DAYS')})"
        )
