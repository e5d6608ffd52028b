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
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY scorer scorer
COPY sinks sinks
COPY training training
COPY operator operator
COPY rules rules
COPY console console
COPY devtools devtools
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-compile "pip==25.3"

FROM source AS build-scorer
RUN /opt/venv/bin/pip install --no-compile ".[scorer,sinks]"

FROM source AS build-operator
RUN /opt/venv/bin/pip install --no-compile ".[operator]"

FROM source AS build-console
RUN /opt/venv/bin/pip install --no-compile ".[console]"

FROM source AS build-tools
RUN /opt/venv/bin/pip install --no-compile ".[training,sinks]" ./devtools

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
