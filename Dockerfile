# syntax=docker/dockerfile:1
# Podgraft webhook server image.
#   docker build -t podgraft/podgraft:0.1.0 .
# The builder installs the locked runtime dependencies first (a layer reused until requirements.lock
# changes), then builds the project wheel and installs it without dependencies. The final stage is
# the slim Python image plus that virtualenv, run as a numeric non-root user.
# tests/chart/test_image.py performs the same install steps on the test machine.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/podgraft \
    && python -m pip install --no-cache-dir build==1.6.1

# Locked runtime dependencies only (no dev tools): the cached layer.
COPY requirements.lock ./
RUN /opt/podgraft/bin/pip install --no-cache-dir -r requirements.lock

# The project itself, as a wheel, without touching the dependency layer above.
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m build --wheel --outdir /tmp/dist . \
    && /opt/podgraft/bin/pip install --no-cache-dir --no-deps /tmp/dist/podgraft-*.whl \
    && /opt/podgraft/bin/pip check \
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
