# syntax=docker/dockerfile:1
# Podgraft webhook server image.
#   docker build -t podgraft/podgraft:0.1.0 .
# The builder installs the locked runtime dependencies first (a layer reused until requirements.lock
# changes), then builds the project wheel, its engine compiled with mypyc (setup.py), and installs it
# without dependencies. The final stage is the Python base image plus that virtualenv, run as a
# numeric non-root user: no compiler, no mypy, no pip.
#
# Two pairs of bases run these same steps: python:3.11 for the builder (it has gcc and Python's
# headers, which mypyc needs) and python:3.11-slim for the image (the defaults, for `docker build`);
# and the Debian bookworm bases that `make image` makes locally with mmdebstrap where no registry is
# reachable (python3, python3-venv, ca-certificates; the builder's also gcc and python3-dev). So
# every step works on both: `python3`, not `python` (Debian has no `python`), and every pip runs
# inside a virtualenv (Debian's system Python refuses pip installs, PEP 668). The build tools have a
# virtualenv of their own, so that nothing but the runtime dependencies and the wheel ends up in
# /opt/podgraft. Builder and image must carry the same Python (the compiled modules are for it).

ARG PYTHON_IMAGE=python:3.11-slim
ARG BUILDER_IMAGE=python:3.11

FROM ${BUILDER_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Locked runtime dependencies only (no dev tools): the cached layer. The kubernetes client ships an
# asyncio copy of itself (kubernetes/aio, 68 MB with its bytecode) that Podgraft never imports.
COPY requirements.lock ./
RUN python3 -m venv /opt/podgraft \
    && /opt/podgraft/bin/pip install --no-cache-dir -r requirements.lock \
    && rm -r /opt/podgraft/lib/python3*/site-packages/kubernetes/aio

# What compiling the engine takes, in this stage only: a build virtualenv with build, mypy and the
# runtime dependencies (mypyc reads their types).
COPY requirements-build.lock ./
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir -r requirements.lock -r requirements-build.lock

# The project itself, as a wheel, without touching the dependency layers above.
COPY pyproject.toml setup.py README.md ./
COPY app ./app
RUN PODGRAFT_COMPILE=1 /opt/build/bin/python -m build --wheel --no-isolation --outdir /tmp/dist . \
    && /opt/podgraft/bin/pip install --no-cache-dir --no-deps /tmp/dist/podgraft-*.whl \
    && /opt/podgraft/bin/pip check \
    && /opt/podgraft/bin/python -I -c "import app.engine.mutate as m; assert m.__file__.endswith('.so'), m.__file__" \
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
