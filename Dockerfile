# syntax=docker/dockerfile:1
# One image for every role: `bridge`, `worker`, or any `maskstream` command
# (see docker/entrypoint.sh). Two stages: the builder installs the pinned
# dependencies and the project's wheel into a virtualenv; the final stage is
# python:3.11-slim plus that virtualenv, with no compiler, no pip cache and
# no build context, running as an unprivileged user.

# The base of both stages. `make image` builds this file without a registry
# or a Docker engine, on a stand-in for python:3.11-slim made from Debian's
# packages (docker/build-local.sh).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder

# Only for builds behind a TLS-intercepting proxy or a private index: the
# builder stage's pip reads these if they are given (--build-arg); the final
# stage never sees them.
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
RUN python -m venv /opt/maskstream

# Dependencies first, exactly as locked (requirements.lock lists the whole
# runtime closure, so --no-deps installs nothing unpinned): this layer is
# rebuilt only when the lock changes, not on every source edit.
COPY requirements.lock ./
RUN /opt/maskstream/bin/pip install --no-deps --requirement requirements.lock

# Then the project itself, as a wheel; `pip check` fails the build if the
# lock ever misses a dependency of the project or of a locked package.
COPY pyproject.toml README.md ./
COPY bridge/ bridge/
COPY stream/ stream/
RUN /opt/maskstream/bin/pip wheel --no-deps --wheel-dir /src/dist . \
    && /opt/maskstream/bin/pip install --no-deps /src/dist/maskstream-*.whl \
    && /opt/maskstream/bin/pip check


FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="maskstream" \
      org.opencontainers.image.description="SQS -> Kafka -> Faust workers -> PostgreSQL, masking PII" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid, so orchestrators can check runAsNonRoot and operators
# can give the key-ring secret to exactly this user (see docs/operations.md).
# Its group has the same number (useradd --system would pick one below 1000),
# so the data directory's owner:group below names the user's own group.
ARG UID=10001
RUN groupadd --gid "${UID}" maskstream \
    && useradd --uid "${UID}" --gid "${UID}" --no-log-init --create-home \
        --home-dir /var/lib/maskstream --shell /usr/sbin/nologin maskstream

COPY --from=builder /opt/maskstream /opt/maskstream
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/maskstream-entrypoint

ENV PATH=/opt/maskstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MASKSTREAM_DATA_DIR=/var/lib/maskstream/faust-data

# seen_devices' RocksDB databases: on a volume, so a new container of the
# same worker reads only the changelog written since (not all of it).
RUN mkdir -p /var/lib/maskstream/faust-data \
    && chown "${UID}:${UID}" /var/lib/maskstream/faust-data
VOLUME /var/lib/maskstream/faust-data

USER ${UID}
WORKDIR /var/lib/maskstream

ENTRYPOINT ["maskstream-entrypoint"]
CMD ["--help"]
