# syntax=docker/dockerfile:1
# The receiver's image. Build:  docker build -t iot-receiver .
# Run (read-only root filesystem, as in Kubernetes):
#   docker run --read-only --tmpfs /tmp -p 8080:8080 \
#     -v "$PWD/my-config.yaml:/etc/receiver/config.yaml:ro" iot-receiver
# scripts/check-deploy.sh lints this file and replays its install steps in a clean venv.

# One exact base for both stages, so the venv's interpreter symlinks stay valid.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# uv only turns uv.lock into a hashed requirements file; pip installs from it.
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9 \
 && python -m venv /opt/venv
# Dependencies first, from the lock alone: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN uv export --frozen --no-dev --no-emit-project --format requirements-txt > requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements.txt
# Then the project itself, without touching the dependencies again.
COPY README.md ./
COPY receiver/ receiver/
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="iot-receiver" \
      org.opencontainers.image.description="IoT callback receiver: authenticated vendor callbacks in, CloudEvents on Kafka out." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECEIVER_STORE__PATH=/var/lib/receiver/events.db
# A fixed uid (10001) so Kubernetes' runAsUser and volume ownership can name it.
# /var/lib/receiver is the only place written (the embedded store); the default config
# (no sources, embedded store) lets the image start as is; mount the real one over it.
RUN groupadd --system --gid 10001 receiver \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin receiver \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/receiver \
 && install -d -m 0755 /etc/receiver \
 && printf 'kafka:\n  topic_prefix: iot\nsources: {}\n' > /etc/receiver/config.yaml
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/receiver
VOLUME ["/var/lib/receiver"]
EXPOSE 8080
# No curl in slim images: python's urllib raises (exit 1) on refusal or any non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
ENTRYPOINT ["receiver", "serve"]
CMD ["--config", "/etc/receiver/config.yaml", "--host", "0.0.0.0"]
