# lensweb: web server and/or worker; the same image runs both (compose.yaml runs them with PostgreSQL + Redis):
#   docker run -p 127.0.0.1:8000:8000 --env-file .env lensweb          web, SQLite in the volume, worker inside
#   docker run --env-file .env -e DATABASE_URL=… -e REDIS_URL=… lensweb           web only
#   docker run --env-file .env -e DATABASE_URL=… -e REDIS_URL=… lensweb worker    a worker
# Production settings: set SECRET_KEY, ALLOWED_HOSTS and LENSWEB_CLIENT_IP_HEADER (or LENSWEB_BEHIND_PROXY=false);
# see README "Deploying". CPU torch by default; GPU hosts: --build-arg VARIANT=cuda (CUDA 12.8 wheels), or any
# --build-arg TORCH_SPEC="torch==… --index-url …".
# The build steps live in deploy/build.sh; tests/deploy/test_image.py runs them outside a container.
FROM python:3.11-slim

ARG VARIANT=cpu
ARG TORCH_SPEC=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LENSWEB_ENV=production \
    DJANGO_SETTINGS_MODULE=lensweb.settings.production \
    DATABASE_URL=sqlite:////var/lib/lensweb/db.sqlite3 \
    LENSWEB_MODEL_CACHE=/var/lib/lensweb/models \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
COPY deploy/build.sh ./deploy/
# Its own layer: torch changes rarely and is most of the image.
RUN VARIANT="$VARIANT" TORCH_SPEC="$TORCH_SPEC" sh deploy/build.sh torch
COPY pyproject.toml README.md manage.py ./
COPY deploy ./deploy
COPY inference ./inference
COPY lensweb ./lensweb
COPY templates ./templates
COPY static ./static
# Install, then collectstatic into /app/staticfiles (production's STATIC_ROOT) with the production settings.
RUN sh deploy/build.sh project demo-package static

# Never root at run time; the volume holds what the container writes.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/lensweb --no-create-home lensweb \
    && mkdir -p /var/lib/lensweb/models \
    && chown -R lensweb:lensweb /var/lib/lensweb
USER lensweb
# The demo model, converted now so that containers start in seconds; a new named volume starts with it.
RUN sh deploy/build.sh demo
# Model cache (LENSWEB_MODEL_CACHE) and, without DATABASE_URL, the SQLite database.
VOLUME ["/var/lib/lensweb"]

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["python", "deploy/healthcheck.py"]
ENTRYPOINT ["sh", "deploy/entrypoint.sh"]
CMD ["serve"]
