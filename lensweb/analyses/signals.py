"""What the core announces to the apps above it, which it must not import (the cache, the request log).
Receivers connect in their AppConfig.ready(); senders never know who listens."""

from django.dispatch import Signal

# An analysis reached a final state (done, failed, cancelled), inside the transaction that ended it:
# kwargs `job`. The result cache stores a done result and completes or releases its followers.
job_ended = Signal()

# The owner shared an analysis by link (`public=True`) or took the link back (`public=False`): kwargs
# `analysis`, `public`. Its text is then no longer private: the result cache may answer everyone from it.
shared_by_link = Signal()

# What a view or consumer knows about the request it serves (a refusal's reason, a socket cancel):
# kwargs are request-log fields. Outside a logged request it goes nowhere.
request_noted = Signal()
socket_request = Signal()


def note_request(**facts) -> None:
    request_noted.send(sender=None, **facts)
