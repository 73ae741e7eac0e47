"""ASGI entry point: HTTP (Django), WebSocket (/ws/analyses/), and the `lens-inference` worker channel."""

import os

from lensweb.settings import default_module

os.environ.setdefault("DJANGO_SETTINGS_MODULE", default_module())

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # before importing consumers: it sets Django up

from lensweb.analyses.warmup import warm_tokenizers_soon  # noqa: E402

warm_tokenizers_soon()  # the first submission after a start finds the tokenizers read

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402

from lensweb.analyses.origin import SameOriginValidator  # noqa: E402
from lensweb.analyses.routing import websocket_urlpatterns, worker_channels  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Same origin (scheme, host and port) or CSRF_TRUSTED_ORIGINS: lensweb.analyses.origin.
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "channel": ChannelNameRouter(worker_channels),
    }
)
