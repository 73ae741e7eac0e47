"""`manage.py serve`: daphne on $HOST:$PORT. With the in-memory channel layer (no REDIS_URL) the worker
runs inside this process, on daphne's event loop, because that layer only reaches its own loop."""

import daphne.server  # noqa: F401,I001  (first: it installs the asyncio Twisted reactor)

import asyncio
import logging
import os

from channels.layers import get_channel_layer
from daphne.endpoints import build_endpoint_description_strings
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from django.core.management.base import BaseCommand
from twisted.internet import defer, reactor

log = logging.getLogger("lensweb.serve")

# The largest message a client may send (the consumer refuses anything over LENSWEB_WS_MAX_MESSAGE_BYTES).
INCOMING_MESSAGE_LIMIT = 64 * 1024


class IncomingLimitProtocol(WebSocketProtocol):
    """autobahn applies maxMessagePayloadSize to sends as well, and a refused send kills the consumer (the
    socket closes with 1011). The limit is for what clients send; the consumer keeps its own messages
    small (fragments.SEND_BUDGET), so a send is never refused for its size."""

    def sendMessage(self, payload, *args, **kwargs):
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            return super().sendMessage(payload, *args, **kwargs)
        finally:
            self.maxMessagePayloadSize = limit


class Command(BaseCommand):
    help = "Serve lensweb with daphne on $HOST:$PORT (default 127.0.0.1:8000)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))

    def handle(self, *args, **options):
        from lensweb.analyses.notify import WORKER_CHANNEL
        from lensweb.analyses.worker import LensChannelWorker, get_worker
        from lensweb.asgi import application

        embedded = settings.LENSWEB_EMBEDDED_WORKER
        state = {}

        async def run_worker():
            # On daphne's event loop, shared with the consumers (the in-memory layer is per loop).
            state["worker"] = get_worker()
            runner = LensChannelWorker(
                application=application,
                channels=[WORKER_CHANNEL],
                channel_layer=get_channel_layer(),
                install_signal_handlers=False,
            )
            await runner.arun()

        async def stop_worker():
            worker = state.get("worker")
            if worker is None:
                return
            worker.request_stop()
            # Finish the current batch and hand the job back; a stuck batch is left to the stale re-queue.
            try:
                await asyncio.wait_for(worker.finished.wait(), timeout=20)
            except TimeoutError:
                log.warning("the embedded worker did not stop in 20 s; its job will be re-queued when stale")

        if embedded:
            # callWhenRunning fires before the asyncio loop runs: schedule a task, which starts with it.
            reactor.callWhenRunning(lambda: state.setdefault("task", asyncio.ensure_future(run_worker())))
            reactor.addSystemEventTrigger(
                "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(stop_worker()))
            )
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
        server = daphne.server.Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            verbosity=options["verbosity"],
            websocket_max_message_size=INCOMING_MESSAGE_LIMIT,
        )
        # run() builds the factory; startup callbacks run before the first connection is accepted.
        reactor.callWhenRunning(lambda: setattr(server.ws_factory, "protocol", IncomingLimitProtocol))
        server.run()
        worker = state.get("worker")
        if worker is not None and worker.current_job_id is not None:
            # A batch still running in its thread would hold the interpreter's exit forever.
            log.warning(
                "exiting with analysis %s unfinished; it is re-queued once stale", worker.current_job_id
            )
            os._exit(0)
