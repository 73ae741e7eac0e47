from django.urls import path

from .consumers import AnalysisConsumer, LensWorkerConsumer
from .notify import WORKER_CHANNEL

websocket_urlpatterns = [path("ws/analyses/", AnalysisConsumer.as_asgi())]

# Background consumers by channel name (channel layer messages, not sockets).
worker_channels = {WORKER_CHANNEL: LensWorkerConsumer.as_asgi()}
