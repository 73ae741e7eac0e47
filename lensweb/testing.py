"""Helpers the test settings point at. Nothing in the running app imports this module."""

import json

from channels.layers import InMemoryChannelLayer


class JSONRoundTripChannelLayer(InMemoryChannelLayer):
    """In-memory layer whose messages cross a serialisation boundary, like the Redis layer's do:
    tuples become lists, non-JSON values fail loudly in tests instead of in production."""

    async def send(self, channel, message):
        await super().send(channel, json.loads(json.dumps(message)))
