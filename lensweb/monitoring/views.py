"""Liveness (the process answers) and readiness (database, channel layer, a live worker)."""

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse

from lensweb.analyses import warmup
from lensweb.analyses.services import live_workers

log = logging.getLogger(__name__)


@login_not_required
def healthz(request):
    return JsonResponse({"status": "ok"})


def _database_and_workers() -> tuple[bool, int]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, live_workers().count()
    except Exception:
        log.exception("readyz: database check failed")
        return False, 0


async def _channel_layer_ok() -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        channel = await layer.new_channel("readyz.")
        await layer.send(channel, {"type": "readyz.ping"})
        message = await asyncio.wait_for(layer.receive(channel), timeout=2)
        return message.get("type") == "readyz.ping"
    except Exception:
        log.exception("readyz: channel layer check failed")
        return False


@login_not_required
async def readyz(request):
    database, workers = await sync_to_async(_database_and_workers)()
    layer = await _channel_layer_ok()
    tokenizers = warmup.is_warm()  # the start-up read of every lens' tokenizer has finished
    checks = {"database": database, "channel_layer": layer, "workers": workers, "tokenizers": tokenizers}
    ready = database and layer and workers > 0 and tokenizers
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503
    )
