"""`manage.py runserver`: daphne's (ASGI: pages and sockets, static files when DEBUG), with `serve`'s limit on
what clients send and, with the in-memory channel layer (LENSWEB_EMBEDDED_WORKER), the lens worker in the
serving process, as `manage.py serve` runs it. Under the autoreloader only the child that serves calls
inner_run, so the parent never starts a worker; a reload kills the child and its batch, and the job is
re-queued once stale (use --noreload or `serve` for a graceful stop)."""

from daphne.management.commands import runserver
from django.conf import settings

from .serve import INCOMING_MESSAGE_LIMIT, LimitedServer, embed_worker, exit_if_busy


class Command(runserver.Command):
    help = (
        "Development server: daphne (pages and sockets), with the lens worker inside unless REDIS_URL is set."
    )
    server_cls = LimitedServer

    def handle(self, *args, **options):
        if options.get("websocket_max_message_size") is None:
            options["websocket_max_message_size"] = INCOMING_MESSAGE_LIMIT
        super().handle(*args, **options)

    def inner_run(self, *args, **options):
        worker = None
        if options.get("use_asgi", True) and settings.LENSWEB_EMBEDDED_WORKER:
            from channels.routing import get_default_application

            application = get_default_application()  # settings.ASGI_APPLICATION: no project import

            worker = embed_worker(application)
            self.stdout.write("The lens worker runs in this process (LENSWEB_EMBEDDED_WORKER).\n")
        super().inner_run(*args, **options)
        exit_if_busy(worker)
