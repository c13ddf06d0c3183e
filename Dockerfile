# syntax=docker/dockerfile:1
# Podgraft webhook server image.
#   docker build -t podgraft/podgraft:0.1.0 .
# The builder installs the locked runtime dependencies first (a layer reused until requirements.lock
# changes), then builds the project wheel, its engine compiled with mypyc (setup.py), and installs it
# without dependencies. The final stage is the slim Python image plus that virtualenv, run as a
# numeric non-root user: no compiler, no mypy.
# tests/chart/test_image.py performs the same install steps on the test machine.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/podgraft

# Locked runtime dependencies only (no dev tools): the cached layer.
COPY requirements.lock ./
RUN /opt/podgraft/bin/pip install --no-cache-dir -r requirements.lock

# What compiling the engine takes, in this stage only: gcc, and a build virtualenv with mypy and the
# runtime dependencies (mypyc reads their types).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc=4:12.2.0-3 libc6-dev=2.36-9+deb12u14 \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-build.lock ./
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir -r requirements.lock -r requirements-build.lock

# The project itself, as a wheel, without touching the dependency layer above.
COPY pyproject.toml setup.py README.md ./
COPY app ./app
RUN PODGRAFT_COMPILE=1 /opt/build/bin/python -m build --wheel --no-isolation --outdir /tmp/dist . \
    && /opt/podgraft/bin/pip install --no-cache-dir --no-deps /tmp/dist/podgraft-*.whl \
    && /opt/podgraft/bin/pip check \
    && /opt/podgraft/bin/python -c "import app.engine.mutate as m; assert m.__file__.endswith('.so'), m.__file__" \
    && /opt/podgraft/bin/podgraft --help > /dev/null \
    && /opt/podgraft/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="podgraft" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that injects init containers, sidecars, volumes and env from policies" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/podgraft/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PODGRAFT_HOST=0.0.0.0
COPY --from=builder /opt/podgraft /opt/podgraft
# 65532 is the conventional "nonroot" UID/GID; the chart's securityContext uses the same numbers.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["podgraft"]
CMD ["serve"]
