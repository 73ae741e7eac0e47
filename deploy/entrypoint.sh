#!/bin/sh
# The container's roles:  serve (default): migrate, the demo user if LENSWEB_DEMO_PASSWORD is set, then daphne;
# worker: `runworker lens-inference`; anything else runs as given (e.g. `python manage.py createsuperuser`).
set -eu

case "${1:-serve}" in
    serve)
        python manage.py migrate --noinput
        if [ -n "${LENSWEB_DEMO_PASSWORD:-}" ]; then
            # Production refuses to start if the demo user still has the published password (lensweb-demo).
            python manage.py ensure_demo_user
        fi
        exec python manage.py serve
        ;;
    worker)
        exec python manage.py runworker lens-inference
        ;;
    *)
        exec "$@"
        ;;
esac
