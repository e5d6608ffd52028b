# syntax=docker/dockerfile:1.7
# Every image of the project, one target each (build from the repository root):
#   docker build --target scorer   -t fraud-detector/scorer:dev .    # fraud-scorer, fraud-sink, fraud-cases
#   docker build --target operator -t fraud-detector/operator:dev .  # fraud-operator
#   docker build --target tools    -t fraud-detector/tools:dev .     # fraud-train, fraud-produce (kind)
#   docker build --target console  -t fraud-detector/console:dev .   # fraud-console (docs/console.md)
# python:3.11-slim, multi-stage (the virtualenv is built in one stage and copied into a clean
# slim base), non-root (uid 10001), nothing written outside /tmp and the model volume, so the
# root filesystem can be read-only. Production images install only the product distribution
# with their extras; the development kit (devtools/) goes into the tools image alone.
ARG PYTHON=python:3.11.11-slim-bookworm

FROM ${PYTHON} AS source
# Everything comes from uv.lock (hashed), installed by uv (itself pinned by hash); each image
# takes its extras only. tests/test_packaging.py runs these very `uv sync` lines.
ENV UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv UV_LINK_MODE=copy
WORKDIR /src
COPY scripts/uv-bootstrap.txt /tmp/uv-bootstrap.txt
RUN python -m pip install --no-cache-dir --disable-pip-version-check --no-deps --require-hashes \
      --target /opt/uv -r /tmp/uv-bootstrap.txt
ENV PATH=/opt/uv/bin:$PATH
COPY pyproject.toml uv.lock README.md ./
COPY runtime runtime
COPY scorer scorer
COPY sinks sinks
COPY training training
COPY operator operator
COPY rules rules
COPY console console
COPY devtools devtools

FROM source AS build-scorer
RUN uv sync --locked --no-dev --no-editable --extra scorer --extra sinks --extra s3 --extra gcs

FROM source AS build-operator
RUN uv sync --locked --no-dev --no-editable --extra operator

FROM source AS build-console
RUN uv sync --locked --no-dev --no-editable --extra console

FROM source AS build-tools
RUN uv sync --locked --no-dev --no-editable --package fraud-detector-devtools

FROM ${PYTHON} AS base
LABEL org.opencontainers.image.source="https://github.com/fraud-detector/fraud-detector"
RUN groupadd --gid 10001 fraud && useradd --uid 10001 --gid fraud --no-create-home --shell /usr/sbin/nologin fraud
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001

FROM base AS scorer
LABEL org.opencontainers.image.title="fraud-detector scorer"
COPY --from=build-scorer /opt/venv /opt/venv
EXPOSE 9102 9103
ENTRYPOINT ["fraud-scorer"]
CMD ["--config", "/etc/fraud/scorer.yaml"]

FROM base AS operator
LABEL org.opencontainers.image.title="fraud-detector operator"
COPY --from=build-operator /opt/venv /opt/venv
EXPOSE 8080 8081
ENTRYPOINT ["fraud-operator"]

FROM base AS tools
LABEL org.opencontainers.image.title="fraud-detector tools"
COPY --from=build-tools /opt/venv /opt/venv
ENTRYPOINT ["fraud-produce"]

FROM base AS console
LABEL org.opencontainers.image.title="fraud-detector console"
COPY --from=build-console /opt/venv /opt/venv
EXPOSE 8080
ENTRYPOINT ["fraud-console"]
CMD ["--config", "/etc/fraud/console.yaml"]
