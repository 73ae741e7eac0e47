"""`manage.py runworker lens-inference`: channels' runworker, plus the lens worker starts at once (not on
the first message) and SIGTERM finishes the current batch, re-queues the rest of the job and exits."""

from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.management.commands import runworker
from django.core.management.base import CommandError

from lensweb.analyses.worker import LensChannelWorker
from lensweb.analyses.workers import worker_lenses_problem


class Command(runworker.Command):
    help = "Run a worker for the given channels; on `lens-inference` it runs analyses."
    worker_class = LensChannelWorker

    def handle(self, *args, **options):
        if problem := worker_lenses_problem():
            raise CommandError(problem)
        if isinstance(get_channel_layer(options.get("layer") or "default"), InMemoryChannelLayer):
            self.stderr.write(
                "warning: the in-memory channel layer reaches only this process; jobs will run, but no "
                "browser sees them live. Set REDIS_URL (or use `manage.py serve`, which embeds the worker)."
            )
        super().handle(*args, **options)
