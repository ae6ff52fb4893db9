# The processor as a container: `processor serve` on $PORT (8000), non-root, with a health check.
# Migrations are their own command:  docker run --rm -e DATABASE_URL=… IMAGE processor migrate
#
#   docker build -t processor .
#   docker run -p 8000:8000 -e DATABASE_URL=… -e PROCESSOR_TOKEN=… -e PROCESSOR_URL=https://… processor
#
# BASE may point at any Debian-based image with Python 3.11+ (the tests build one offline).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/processor
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir processor sql && touch processor/__init__.py \
    && /opt/processor/bin/pip install . \
    && /opt/processor/bin/pip uninstall -y processor
COPY processor ./processor
COPY sql ./sql
RUN /opt/processor/bin/pip install --no-deps . && /opt/processor/bin/processor --version

FROM ${BASE}
RUN useradd --system --uid 10001 --create-home --home-dir /app processor \
    && mkdir -p /app/storage && chown processor /app/storage
COPY --from=build /opt/processor /opt/processor
ENV PATH=/opt/processor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    LOCAL_STORAGE_DIR=/app/storage
USER processor
WORKDIR /app
EXPOSE 8000
# PORT (default 8000) is read by `processor serve` and by the health check alike.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2).status != 200)"]
CMD ["processor", "serve", "--host", "0.0.0.0"]
