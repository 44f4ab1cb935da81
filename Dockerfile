# syntax=docker/dockerfile:1
# One image for every stacdrop stage: `docker run IMAGE watch|process|publish|serve|backup|run`.
# Build: docker build -t stacdrop:latest .   (docker compose build does the same)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: wheels of stacdrop and of every dependency (rasterio's wheel bundles GDAL: no system GDAL) --
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stacdrop ./stacdrop
COPY watcher ./watcher
COPY processor ./processor
COPY publisher ./publisher
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- runtime ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# pg_dump/pg_restore for `stacdrop backup` / `restore`: from the PostgreSQL apt repository, because a
# pg_dump older than the server refuses to dump it (bookworm ships 15; the pgstac image may run a newer one).
ARG PG_CLIENT_MAJOR=17
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="stacdrop" \
      org.opencontainers.image.description="Rasters dropped into an inbox become COGs in object storage and items in a STAC catalog" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.documentation="docs/operations.md"

ADD --chmod=644 https://www.postgresql.org/media/keys/ACCC4CF8.asc /usr/share/keyrings/pgdg.asc
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN . /etc/os-release \
    && echo "deb [signed-by=/usr/share/keyrings/pgdg.asc] http://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
       > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_CLIENT_MAJOR}" \
    && rm -rf /var/lib/apt/lists/*

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/stacdrop-*.whl

# Non-root; /var/lib/stacdrop is the working directory (the processor's temporary COGs go to ./data/work),
# backups/ exists so that a named volume mounted there starts owned by this user.
RUN groupadd --system --gid 10001 stacdrop \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/stacdrop --create-home \
       --shell /usr/sbin/nologin stacdrop \
    && install -d -o 10001 -g 10001 /var/lib/stacdrop/backups /var/lib/stacdrop/data
USER 10001:10001
WORKDIR /var/lib/stacdrop
ENV PYTHONUNBUFFERED=1 \
    STACDROP_LOG_FORMAT=json

# The stage can reach its ledger and its bus (`stacdrop health --url ...` for the HTTP API).
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 CMD ["stacdrop", "health"]
ENTRYPOINT ["stacdrop"]
CMD ["run"]
