"""`manage.py clear_cache [--lens ID] [--older-than DAYS] [--engine-version V] [--all]`: delete cached
results that match every filter given. With no filter, --all is required (so a typo never empties it)."""

from django.core.management.base import BaseCommand, CommandError

from lensweb.cache import services as result_cache


class Command(BaseCommand):
    help = "Delete cached results: those matching every filter given, or --all."

    def add_arguments(self, parser):
        parser.add_argument("--lens", help="only this lens id's results")
        parser.add_argument("--older-than", type=float, metavar="DAYS", help="only results stored before")
        parser.add_argument("--engine-version", help="only results of this engine version")
        parser.add_argument("--all", action="store_true", help="every cached result")

    def handle(self, *args, **opts):
        filters = {
            "lens_id": opts["lens"],
            "older_than_days": opts["older_than"],
            "engine_version": opts["engine_version"],
        }
        if all(value is None for value in filters.values()) and not opts["all"]:
            raise CommandError("give a filter (--lens, --older-than, --engine-version) or --all")
        deleted = result_cache.clear(**filters)
        self.stdout.write(f"deleted {deleted} cached result(s)")
