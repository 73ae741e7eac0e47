"""`manage.py evict_cache`: apply LENSWEB_CACHE_MAX_AGE_DAYS and LENSWEB_CACHE_MAX_BYTES now (they are also
applied after every store); e.g. from cron after lowering a limit."""

from django.core.management.base import BaseCommand

from lensweb.cache import services as result_cache


class Command(BaseCommand):
    help = "Evict cached results past the configured age, then the least recently used past the size limit."

    def add_arguments(self, parser):
        parser.add_argument("--max-age-days", type=float, help="instead of LENSWEB_CACHE_MAX_AGE_DAYS")
        parser.add_argument("--max-bytes", type=int, help="instead of LENSWEB_CACHE_MAX_BYTES")

    def handle(self, *args, **opts):
        evicted = result_cache.evict(max_age_days=opts["max_age_days"], max_bytes=opts["max_bytes"])
        size = result_cache.size()
        self.stdout.write(
            f"evicted {evicted}; {size.entries} cached result(s), {size.size_bytes:,} bytes left"
        )
