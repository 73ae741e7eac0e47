from django.urls import path

from .consumers import AnalysisConsumer, LensWorkerConsumer
from .notify import WORKER_CHANNEL
from .status_socket import StatusConsumer

websocket_urlpatterns = [
    path("ws/analyses/", AnalysisConsumer.as_asgi()),
    path("ws/status/", StatusConsumer.as_asgi()),
]

# Background consumers by channel name (channel layer messages, not sockets).
worker_channels = {WORKER_CHANNEL: LensWorkerConsumer.as_asgi()}
