"""A socket handshake while the channel layer (Redis) is away is refused cleanly: no 500, no traceback; the
page's socket says "reconnecting" and tries again (tests/web/test_redis_down.py stops a real Redis)."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer

from .test_consumers import socket

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("path", ["/ws/analyses/", "/ws/status/"])
async def test_a_handshake_with_the_layer_away_is_refused_not_a_server_error(
    alice, monkeypatch, caplog, path
):
    async def away(self, group, channel):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(type(get_channel_layer()), "group_add", away)  # in-memory, or Redis' in stage two
    async with socket(alice, path=path) as communicator:
        connected, code = await communicator.connect()
        assert not connected and code == 1013
    assert "the channel layer is away" in caplog.text
    assert "Traceback" not in caplog.text
