"""Two consumers: the browser's socket (thin: authenticate, replay, forward events, accept `cancel`) and
the worker's background consumer on the `lens-inference` channel (doorbells and cancels)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from functools import partial

from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import cards, fragments, services
from .models import Analysis, Generation
from .notify import user_group
from .sessions import check_session, fingerprint
from .signals import socket_request

log = logging.getLogger(__name__)

# What the card's cancel form sends (htmx sends the id as text); at most 18 digits: any database's integer.
JOB_ID = re.compile(r"[0-9]{1,18}")
MAX_JOB_ID = 10**18
# A cancel names the kind of job (a generation card's form says "generation"); none is an analysis.
KINDS = {Analysis.kind: Analysis, Generation.kind: Generation}


def render(function):
    """Rendering reads no database: off the one thread that every socket's database work shares (a long
    replay there would hold up other users' handshakes and cancels), and off the event loop."""
    return sync_to_async(function, thread_sensitive=False)


class BadMessage(ValueError):
    """A socket message that is no valid request: its text is the answer."""


def _refuse_constant(name):
    raise BadMessage("that message was not understood (NaN and Infinity are not JSON)")


def check_message(text: str) -> tuple[str, str, int]:
    """(action, kind, job id) from a socket message, or BadMessage saying what is wrong. Any JSON within the
    size limit is safe here: too deep a nesting, odd numbers and non-objects are refused, never raised."""
    try:
        message = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadMessage("that message is nested too deeply") from None
    except BadMessage:
        raise
    except ValueError:
        raise BadMessage("that message was not understood") from None
    if not isinstance(message, dict):
        raise BadMessage("that message was not understood (a JSON object is expected)")
    action = message.get("action")
    if not isinstance(action, str):
        raise BadMessage("that message names no action")
    if action != "cancel":
        raise BadMessage(f"unknown action {action[:40]!r}")
    kind = message.get("kind", Analysis.kind)
    if not isinstance(kind, str) or kind not in KINDS:
        raise BadMessage(f"unknown kind of job {str(kind)[:40]!r}: analysis or generation")
    job = message.get("job")
    if isinstance(job, str) and JOB_ID.fullmatch(job):
        job = int(job)
    if type(job) is not int or not 0 < job < MAX_JOB_ID:  # bool is an int, and not a job
        raise BadMessage(f"a cancel names its {kind} by number")
    return action, kind, job


class SessionBound:
    """A socket that lives no longer than its session (sessions.py): re-validated at most every
    LENSWEB_WS_SESSION_CHECK_SECONDS before it forwards anything, and every LENSWEB_WS_IDLE_CHECK_SECONDS
    while idle; closed with 4401 when the session is gone. Needs user, session_key, checked_at, ended and
    groups_joined."""

    async def _session_valid(self, *, now: bool = False) -> bool:
        """Whether this socket may still act for its user; closes it (4401) when not. Unless `now`, a check
        younger than LENSWEB_WS_SESSION_CHECK_SECONDS stands, so a stream of rows costs no query each."""
        if self.ended:
            return False
        if not now and time.monotonic() - self.checked_at < settings.LENSWEB_WS_SESSION_CHECK_SECONDS:
            return True
        valid = await database_sync_to_async(check_session)(self.session_key, self.user.pk)
        self.checked_at = time.monotonic()
        if not valid:
            await self._end("the session ended")
        return valid

    async def _end(self, why: str):
        if self.ended:
            return
        self.ended = True
        log.info("closing a socket of user %s: %s", self.user.pk, why)
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.close(code=4401)

    async def _watch_session(self):
        """An idle socket re-validates too: a lost `session.check` must not leave it open for good."""
        while not self.ended:
            await asyncio.sleep(settings.LENSWEB_WS_IDLE_CHECK_SECONDS)
            try:
                await self._session_valid(now=True)
            except Exception:  # a database hiccup: try again next time, never kill the socket for it
                log.exception("could not re-validate a socket's session")

    async def _join_or_refuse(self, group: str) -> bool:
        """Join `group` before accepting; with the channel layer away (Redis down) refuse the handshake
        cleanly (the page says "reconnecting" and its socket tries again) instead of a 500 and a traceback."""
        try:
            await self.channel_layer.group_add(group, self.channel_name)
        except Exception as exc:
            log.warning("refusing a socket of user %s: the channel layer is away (%s)", self.user.pk, exc)
            await self.close(code=1013)  # try again later
            return False
        return True

    async def session_check(self, event):
        if event.get("ended") and event["ended"] == fingerprint(self.session_key):
            await self._end("logged out")
        else:
            await self._session_valid(now=True)


class AnalysisConsumer(SessionBound, AsyncWebsocketConsumer):
    """`/ws/analyses/`: every message out is HTML for the htmx ws extension (swapped by id), in messages
    that fit fragments.SEND_BUDGET. The socket lives as long as its session (sessions.py)."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)  # before accept: the handshake is refused
            return
        self.user = user
        self.session_key = self.scope["session"].session_key
        self.checked_at = time.monotonic()  # the auth middleware validated the session just now
        self.ended = False
        self.shown: dict[int, fragments.Shown] = {}  # analyses on the page
        self.gen_shown: dict[int, fragments.Shown] = {}  # generations on the page
        self.recent = deque()
        self.group = user_group(user.pk)
        self.groups_joined = [self.group]
        # Join first, then read the database: an event racing the replay arrives after it, and the
        # `shown` bookkeeping drops what the replay already carried.
        if not await self._join_or_refuse(self.group):
            return
        await self.accept()
        jobs, positions = await database_sync_to_async(cards.load_replay)(user)
        messages, shown = await render(fragments.render_replay)(jobs, positions)
        self.shown = {s.job_id: s for s in shown if s.kind == Analysis.kind}
        self.gen_shown = {s.job_id: s for s in shown if s.kind == Generation.kind}
        await self._send_messages(messages)
        self.watchdog = asyncio.ensure_future(self._watch_session())

    async def disconnect(self, code):
        if hasattr(self, "watchdog"):
            self.watchdog.cancel()
        if hasattr(self, "group"):
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception as exc:  # the layer away: its group entries expire on their own
                log.warning("could not leave %s: %s", self.group, exc)

    async def _send_messages(self, messages: list[str]):
        for text in messages:
            if not self.ended:
                # daphne sends UTF-8: a lone surrogate from stored text would fail the whole send
                await self.send(text_data=text.encode("utf-8", "replace").decode("utf-8"))

    async def _send_html(self, fragment_list: list[str]):
        await self._send_messages(fragments.pack(fragment_list))

    # --- from the browser ---------------------------------------------------------------------------

    def _too_many(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] > 60:
            self.recent.popleft()
        if len(self.recent) >= settings.LENSWEB_WS_MAX_MESSAGES_PER_MINUTE:
            return True  # not counted: a flood must not grow the window
        self.recent.append(now)
        return False

    async def _say(self, text: str, level: str = "error"):
        await self._send_messages([fragments.render_socket_message(text, level)])

    async def receive(self, text_data=None, bytes_data=None):
        if self.ended:
            return
        raw = text_data if text_data is not None else bytes_data
        if raw is not None and len(raw) > settings.LENSWEB_WS_MAX_MESSAGE_BYTES:
            # Over the size limit is no request at all: said, and closed with the application's own "message too
            # big" (a server may not send 1009 itself: autobahn refuses any code but 1000 and 3000-4999, and
            # the refusal closed the socket with 1011).
            await self._say("that message was too large and was ignored")
            await self.close(code=4009, reason="message too big")
            return
        if self._too_many():
            await self._say("too many messages; slow down")
            return
        try:
            if text_data is None:
                raise BadMessage("binary messages are not accepted; send JSON text")
            _action, kind, job_id = check_message(text_data)
        except BadMessage as exc:
            await self._say(str(exc))
            return
        if not await self._session_valid(now=True):
            return
        await self._cancel(kind, job_id)

    async def _cancel(self, kind: str, job_id: int):
        """The services check ownership: another user's job is "not found", as one that does not exist."""
        log_cancel = database_sync_to_async(partial(socket_request.send, None))  # the request log listens
        cancel = services.do_cancel_generation if kind == Generation.kind else services.do_cancel
        try:
            job = await database_sync_to_async(cancel)(self.user, job_id)
        except KINDS[kind].DoesNotExist:
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
            await self._say(f"there is no {kind} #{job_id} of yours")
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
            f"{kind} #{job.pk}: {'cancel requested' if job.status == 'running' else job.status}", "info"
        )

    # --- from the owner's group: forwarded while the session is valid --------------------------------------

    async def _add_card(self, job_id: int):
        job, position = await database_sync_to_async(cards.load_card)(self.user, job_id)
        if job is None:
            return
        # A generation's follow-up takes the place of the generation's card: one card, generating, then
        # analysing, then done.
        source = cards.source_generation_id(job)
        replace = source if source in self.gen_shown and not self.gen_shown[source].replaced else None
        messages, self.shown[job_id] = await render(fragments.render_new_card)(job, position, replace)
        if source is not None:
            self.gen_shown[source] = fragments.Shown(source, final=True, kind=Generation.kind, replaced=True)
        await self._send_messages(messages)

    async def analysis_created(self, event):
        if not await self._session_valid():
            return
        if event["job"] not in self.shown:
            await self._add_card(event["job"])

    async def analysis_state(self, event):
        if not await self._session_valid():
            return
        shown = self.shown.get(event["job"])
        if shown is None:
            await self._add_card(event["job"])
            return
        if shown.final or (event["done"] < shown.done and not event["final"]):
            return  # older than what this page shows already
        shown.done, shown.final = event["done"], event["final"]
        await self._send_html([event["html"]])

    async def analysis_rows(self, event):
        if not await self._session_valid():
            return
        job_id = event["job"]
        shown = self.shown.get(job_id)
        if shown is None:  # a card this page lacks: send it whole, first rows included
            await self._add_card(job_id)
            return
        fresh = []
        for position, html in event["rows"]:
            # Past the card's cap a row is only counted (progress, "more rows"): the results page has it.
            if position not in shown.positions and len(shown.positions) < cards.live_card_rows():
                shown.positions.add(position)
                fresh.append(html)
        parts = fragments.wrap_rows_chunks(job_id, fresh) if fresh else []
        if event["done"] >= shown.done and not shown.final:
            shown.done = event["done"]
            parts.append(event["progress"])
        more = max(0, shown.done - len(shown.positions))
        if more != shown.more:
            shown.more = more
            parts.append(fragments.render_more(job_id, more))
        if parts:
            await self._send_html(parts)

    async def analysis_progress(self, event):
        """Within a batch: only for a card on this page that has not moved on (rows or its end)."""
        if not await self._session_valid():
            return
        shown = self.shown.get(event["job"])
        if shown is not None and not shown.final and event["done"] >= shown.done:
            await self._send_html([event["html"]])

    async def analysis_queue(self, event):
        """Queue lines for the cards on this page only (a line without its card would be an htmx error)."""
        if not await self._session_valid():
            return
        shown = {Analysis.kind: self.shown, Generation.kind: self.gen_shown}
        lines = [html for kind, job_id, html in event["lines"] if job_id in shown.get(kind, {})]
        if lines:
            await self._send_html(lines)

    # generations: the card (state), and its samples so far (tokens); both whole, swapped by id

    async def _add_generation_card(self, generation_id: int):
        gen, position = await database_sync_to_async(cards.load_generation_card)(self.user, generation_id)
        if gen is None:  # not this user's, or followed by its analysis (whose card stands for it)
            return
        messages, self.gen_shown[generation_id] = await render(fragments.render_new_generation_card)(
            gen, position
        )
        await self._send_messages(messages)

    async def generation_created(self, event):
        if not await self._session_valid():
            return
        if event["job"] not in self.gen_shown:
            await self._add_generation_card(event["job"])

    async def generation_state(self, event):
        if not await self._session_valid():
            return
        shown = self.gen_shown.get(event["job"])
        if shown is None:
            await self._add_generation_card(event["job"])
            return
        if shown.final:
            return  # its final card is on the page already (or its analysis' card took its place)
        shown.final = bool(event["final"])
        await self._send_html([event["html"]])

    async def generation_tokens(self, event):
        if not await self._session_valid():
            return
        shown = self.gen_shown.get(event["job"])
        if shown is None:
            await self._add_generation_card(event["job"])
            return
        if not shown.final:
            await self._send_html([event["html"]])


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
        self._worker().request_cancel(message["job"], message.get("kind", Analysis.kind))
