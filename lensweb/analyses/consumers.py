"""Two consumers: the browser's socket (thin: authenticate, replay, forward events, accept `cancel`) and
the worker's background consumer on the `lens-inference` channel (doorbells and cancels)."""

from __future__ import annotations

import json
import time
from collections import deque

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from lensweb.monitoring import requestlog

from . import fragments, services
from .models import Analysis
from .notify import user_group


class AnalysisConsumer(AsyncWebsocketConsumer):
    """`/ws/analyses/`: every message out is HTML for the htmx ws extension (swapped by id)."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)  # before accept: the handshake is refused
            return
        self.user = user
        self.shown: dict[int, fragments.Shown] = {}
        self.recent = deque()
        self.group = user_group(user.pk)
        # Join first, then read the database: an event racing the replay arrives after it, and the
        # `shown` bookkeeping drops what the replay already carried.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        html, shown = await database_sync_to_async(fragments.render_jobs)(user)
        self.shown = {s.job_id: s for s in shown}
        await self.send(text_data=html)

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    # --- from the browser ---------------------------------------------------------------------------

    def _too_many(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] > 60:
            self.recent.popleft()
        self.recent.append(now)
        return len(self.recent) > settings.LENSWEB_WS_MAX_MESSAGES_PER_MINUTE

    async def _say(self, text: str, level: str = "error"):
        await self.send(text_data=fragments.render_socket_message(text, level))

    async def receive(self, text_data=None, bytes_data=None):
        raw = text_data if text_data is not None else bytes_data
        if raw is None or len(raw) > settings.LENSWEB_WS_MAX_MESSAGE_BYTES:
            await self._say("that message was too large and was ignored")
            await self.close(code=1009)
            return
        if self._too_many():
            await self._say("too many messages; slow down")
            return
        try:
            message = json.loads(raw)
            action, job_id = message.get("action"), int(message.get("job"))
        except (ValueError, TypeError, AttributeError):
            await self._say("that message was not understood")
            return
        if action != "cancel":
            await self._say(f"unknown action {action!r}")
            return
        log_cancel = database_sync_to_async(requestlog.record)
        try:
            job = await database_sync_to_async(services.do_cancel)(self.user, job_id)
        except Analysis.DoesNotExist:
            await log_cancel(
                client="socket",
                method="WS",
                endpoint=self.scope["path"],
                kind="cancel",
                outcome="refused",
                reason="not_found",
                user=self.user,
                job_id=job_id,
            )
            await self._say(f"there is no analysis #{job_id} of yours")
            return
        await log_cancel(
            client="socket",
            method="WS",
            endpoint=self.scope["path"],
            kind="cancel",
            outcome="accepted",
            user=self.user,
            job_id=job_id,
        )
        await self._say(
            f"analysis #{job.pk}: {'cancel requested' if job.status == 'running' else job.status}", "info"
        )

    # --- from the owner's group ------------------------------------------------------------------------

    async def _add_card(self, job_id: int):
        html, shown = await database_sync_to_async(fragments.render_new_card)(self.user, job_id)
        if shown is not None:
            self.shown[job_id] = shown
            await self.send(text_data=html)

    async def analysis_created(self, event):
        if event["job"] not in self.shown:
            await self._add_card(event["job"])

    async def analysis_state(self, event):
        shown = self.shown.get(event["job"])
        if shown is None:
            await self._add_card(event["job"])
            return
        if shown.final or (event["done"] < shown.done and not event["final"]):
            return  # older than what this page shows already
        shown.done, shown.final = event["done"], event["final"]
        await self.send(text_data=event["html"])

    async def analysis_rows(self, event):
        shown = self.shown.get(event["job"])
        if shown is None:  # a card this page lacks: send it whole, rows so far included
            await self._add_card(event["job"])
            return
        fresh = [html for position, html in event["rows"] if position not in shown.positions]
        shown.positions.update(position for position, _ in event["rows"])
        parts = [fragments.wrap_rows(event["job"], fresh)] if fresh else []
        if event["done"] >= shown.done and not shown.final:
            shown.done = event["done"]
            parts.append(event["progress"])
        if parts:
            await self.send(text_data="".join(parts))

    async def analysis_queue(self, event):
        await self.send(text_data=event["html"])


class LensWorkerConsumer(AsyncConsumer):
    """Background consumer on `lens-inference` (and on its own channel, which the worker record names,
    so that cancels and doorbells reach this very worker). Handlers return at once: the job runs in the
    worker's own task, because a consumer handles its messages one after another."""

    def _worker(self):
        from .worker import get_worker

        worker = get_worker()
        worker.start(self.channel_name)
        return worker

    async def worker_start(self, message):
        self._worker()

    async def analysis_doorbell(self, message):
        self._worker().ring()

    async def analysis_cancel(self, message):
        self._worker().request_cancel(message["job"])
