"""The old name of `manage.py purge`, kept for cron jobs written before it: it now purges everything."""

from .purge import Command as PurgeCommand


class Command(PurgeCommand):
    help = "Another name for `manage.py purge`. " + PurgeCommand.help
