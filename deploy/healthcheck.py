"""The image's HEALTHCHECK (exit 0: healthy). A web container answers GET /healthz on its own port; a worker
container (PID 1 runs `runworker`, or the argument `worker`) has a worker that reported within
LENSWEB_STALE_AFTER. Plain HTTP to 127.0.0.1: SECURE_REDIRECT_EXEMPT lets /healthz answer without HTTPS, and
the Host header is one that ALLOWED_HOSTS accepts (Django answers 400 to any other)."""

import os
import sys
import urllib.request


def probe_host(allowed_hosts: str) -> str:
    """A Host header that ALLOWED_HOSTS (comma-separated, as the settings read it) accepts."""
    for entry in allowed_hosts.split(","):
        entry = entry.strip()
        if entry and entry != "*":
            return entry.lstrip(".")  # ".example.org" matches example.org itself
    return "localhost"  # "*" (or nothing: the development default allows localhost)


def web_alive() -> bool:
    port = os.environ.get("PORT") or "8000"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz",
        headers={"Host": probe_host(os.environ.get("ALLOWED_HOSTS", ""))},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # raises on 4xx/5xx
        return response.status == 200


def worker_alive() -> bool:
    import socket
    from datetime import timedelta

    import django

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the app, as manage.py
    from lensweb.settings import default_module

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", default_module())
    django.setup()
    from django.conf import settings
    from django.utils import timezone

    from lensweb.analyses.models import WorkerRecord

    since = timezone.now() - timedelta(seconds=settings.LENSWEB_STALE_AFTER)
    alive = WorkerRecord.objects.filter(host=socket.gethostname(), last_heartbeat__gte=since)
    return alive.exclude(state__in=[WorkerRecord.State.STOPPED, WorkerRecord.State.LOST]).exists()


def role() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    try:
        with open("/proc/1/cmdline", "rb") as cmdline:
            return "worker" if b"runworker" in cmdline.read() else "web"
    except OSError:
        return "web"


if __name__ == "__main__":
    try:
        healthy = worker_alive() if role() == "worker" else web_alive()
    except Exception as error:  # any failure is "unhealthy"; say why in `docker inspect`
        print(f"unhealthy: {error}", file=sys.stderr)
        healthy = False
    sys.exit(0 if healthy else 1)
