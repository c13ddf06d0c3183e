# syntax=docker/dockerfile:1
# Podgraft webhook server image.
#   docker build -t podgraft/podgraft:0.1.0 .
# The builder installs the locked runtime dependencies first (a layer reused until requirements.lock
# changes), then builds the project wheel and installs it without dependencies. The final stage is
# the Python base image plus that virtualenv, run as a numeric non-root user.
#
# Two bases run these same steps: python:3.11-slim (the default, for `docker build`), and the
# Debian bookworm base that `make image` makes locally with mmdebstrap (python3, python3-venv,
# ca-certificates) where no registry is reachable. So every step works on both: `python3`, not
# `python` (Debian has no `python`), and every pip runs inside a virtualenv (Debian's system
# Python refuses pip installs, PEP 668). The build frontend has a virtualenv of its own, so that
# nothing but the runtime dependencies and the wheel ends up in /opt/podgraft.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/podgraft \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir build==1.6.1

# Locked runtime dependencies only (no dev tools): the cached layer. The kubernetes client ships an
# asyncio copy of itself (kubernetes/aio, 68 MB with its bytecode) that Podgraft never imports.
COPY requirements.lock ./
RUN /opt/podgraft/bin/pip install --no-cache-dir -r requirements.lock \
    && rm -r /opt/podgraft/lib/python3*/site-packages/kubernetes/aio

# The project itself, as a wheel, without touching the dependency layer above.
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/build/bin/python -m build --wheel --outdir /tmp/dist . \
    && /opt/podgraft/bin/pip install --no-cache-dir --no-deps /tmp/dist/podgraft-*.whl \
    && /opt/podgraft/bin/pip check \
    && /opt/podgraft/bin/podgraft --version \
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
