"""`/ws/status/`: the status strip on every page, kept live. It sends the strip on connect, again on each
`status.changed` doorbell (a worker came, went or loaded a lens; the queue moved), at most once a second, and
every LENSWEB_STATUS_REFRESH_SECONDS anyway (a worker that dies sends nothing: its heartbeat just ages)."""

from __future__ import annotations

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from .consumers import SessionBound
from .notify import STATUS_GROUP
from .status import fleet_status

log = logging.getLogger(__name__)
MIN_INTERVAL = 1.0  # seconds between two renders: a busy queue rings often


def render_strip() -> str:
    return render_to_string("analyses/partials/status-strip.html", {"fleet": fleet_status()})


class StatusConsumer(SessionBound, AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user, self.session_key = user, self.scope["session"].session_key
        self.checked_at, self.ended = time.monotonic(), False
        self.groups_joined = [STATUS_GROUP]
        self.sent_at, self.pending = 0.0, None
        if not await self._join_or_refuse(STATUS_GROUP):
            return
        await self.accept()
        await self._send_strip()
        self.refresher = asyncio.ensure_future(self._refresh_forever())
        self.watchdog = asyncio.ensure_future(self._watch_session())

    async def disconnect(self, code):
        for task in (getattr(self, name, None) for name in ("refresher", "watchdog", "pending")):
            if task is not None:
                task.cancel()
        if hasattr(self, "groups_joined"):
            try:
                await self.channel_layer.group_discard(STATUS_GROUP, self.channel_name)
            except Exception as exc:  # the layer away: its group entries expire on their own
                log.warning("could not leave the status group: %s", exc)

    async def receive(self, text_data=None, bytes_data=None):
        pass  # nothing to ask: the strip only listens

    async def status_changed(self, event):
        wait = MIN_INTERVAL - (time.monotonic() - self.sent_at)
        if wait <= 0:
            await self._send_strip()
        elif self.pending is None:
            self.pending = asyncio.ensure_future(self._send_later(wait))

    async def _send_later(self, wait: float):
        await asyncio.sleep(wait)
        self.pending = None
        await self._send_strip()

    async def _refresh_forever(self):
        while not self.ended:
            await asyncio.sleep(settings.LENSWEB_STATUS_REFRESH_SECONDS)
            await self._send_strip()

    async def _send_strip(self):
        try:
            if not await self._session_valid():
                return
            html = await database_sync_to_async(render_strip)()
        except Exception:  # the database away for a moment: the next ring or refresh tries again
            log.exception("could not render the status strip")
            return
        self.sent_at = time.monotonic()
        if not self.ended:
            await self.send(text_data=html)
