"""`manage.py serve`: daphne on $HOST:$PORT. With the in-memory channel layer (no REDIS_URL) the worker
runs inside this process, on daphne's event loop, because that layer only reaches its own loop."""

import daphne.server  # noqa: F401,I001  (first: it installs the asyncio Twisted reactor)

import asyncio
import logging
import os

from channels.layers import get_channel_layer
from daphne.endpoints import build_endpoint_description_strings
from daphne.server import twisted_loop
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from twisted.internet import defer, reactor

from lensweb.analyses import workers

log = logging.getLogger("lensweb.serve")

# The largest message a client may send (the consumer refuses anything over LENSWEB_WS_MAX_MESSAGE_BYTES).
INCOMING_MESSAGE_LIMIT = 64 * 1024


class IncomingLimitProtocol(WebSocketProtocol):
    """autobahn applies maxMessagePayloadSize to sends as well, and a refused send kills the consumer (the
    socket closes with 1011). The limit is for what clients send; the consumer keeps its own messages
    small (fragments.SEND_BUDGET), so a send is never refused for its size."""

    def handle_reply(self, message):
        # daphne drops a close's reason: send it (the code is already a valid one, see the consumers)
        if (
            message.get("type") == "websocket.close"
            and self.state == self.STATE_OPEN
            and message.get("reason")
        ):
            self.sendClose(code=message.get("code") or 1000, reason=message["reason"][:120])
            return
        super().handle_reply(message)

    def sendMessage(self, payload, *args, **kwargs):
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            return super().sendMessage(payload, *args, **kwargs)
        finally:
            self.maxMessagePayloadSize = limit


class LimitedServer(daphne.server.Server):
    """daphne's server with IncomingLimitProtocol on its sockets."""

    def _use_our_protocol(self):
        self.ws_factory.protocol = IncomingLimitProtocol
        # A message over the limit gets a close frame (1009, "message too big"), not a dropped connection.
        self.ws_factory.setProtocolOptions(failByDrop=False)

    def run(self):
        # run() builds the factory; startup callbacks run before the first connection is accepted.
        reactor.callWhenRunning(self._use_our_protocol)
        super().run()


class EmbeddedWorker:
    """The lens worker on the Twisted reactor's asyncio loop, shared with the consumers (the in-memory layer
    is per loop): it starts when the reactor runs and finishes its batch before the reactor shuts down.
    `manage.py serve` and `manage.py runserver` both embed it this way."""

    def __init__(self, application):
        self.application = application
        self.worker = None
        self.task = None

    def install(self) -> None:
        # callWhenRunning fires before the loop runs: the task starts with it. The loop is named, not looked
        # up: under runserver's autoreloader the reactor runs in a thread that has no current loop.
        reactor.callWhenRunning(lambda: setattr(self, "task", twisted_loop.create_task(self.run())))
        reactor.addSystemEventTrigger(
            "before", "shutdown", lambda: defer.Deferred.fromFuture(twisted_loop.create_task(self.stop()))
        )

    async def run(self) -> None:
        from lensweb.analyses.notify import WORKER_CHANNEL
        from lensweb.analyses.worker import LensChannelWorker, get_worker

        self.worker = get_worker()
        runner = LensChannelWorker(
            application=self.application,
            channels=[WORKER_CHANNEL],
            channel_layer=get_channel_layer(),
            install_signal_handlers=False,
        )
        await runner.arun()

    async def stop(self) -> None:
        if self.worker is None:
            return
        self.worker.request_stop()
        # Finish the current batch and hand the job back; a stuck batch is left to the stale re-queue.
        try:
            await asyncio.wait_for(self.worker.finished.wait(), timeout=20)
        except TimeoutError:
            log.warning("the embedded worker did not stop in 20 s; its job will be re-queued when stale")


def embed_worker(application) -> EmbeddedWorker:
    """Run the lens worker in this process once the reactor runs (call before the server runs)."""
    embedded = EmbeddedWorker(application)
    embedded.install()
    return embedded


def exit_if_busy(embedded: EmbeddedWorker | None) -> None:
    """After the reactor stopped: a batch still running in its thread would hold the interpreter's exit
    forever, so leave at once (the job is re-queued once stale)."""
    worker = embedded.worker if embedded is not None else None
    if worker is not None and worker.current_jobs:
        log.warning("exiting with %s unfinished; re-queued once stale", worker.current_jobs)
        os._exit(0)


class Command(BaseCommand):
    help = "Serve lensweb with daphne on $HOST:$PORT (default 127.0.0.1:8000)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))

    def handle(self, *args, **options):
        from channels.routing import get_default_application

        application = get_default_application()  # settings.ASGI_APPLICATION: the app imports no project

        embedded = settings.LENSWEB_EMBEDDED_WORKER
        if embedded and (problem := workers.worker_lenses_problem()):
            raise CommandError(problem)
        worker = embed_worker(application) if embedded else None
        host, port = options["host"], options["port"]
        self.stdout.write(
            f"Serving lensweb on http://{host}:{port}/ "
            + (
                "(worker embedded in this process)"
                if embedded
                else "(workers: manage.py runworker lens-inference)"
            ),
        )
        self.stdout.flush()
        LimitedServer(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            verbosity=options["verbosity"],
            websocket_max_message_size=INCOMING_MESSAGE_LIMIT,
        ).run()
        exit_if_busy(worker)
