# syntax=docker/dockerfile:1
# tabserve: serving image. Three stages: export the built-in examples (scikit-learn lives only here),
# build a virtualenv with the serving dependencies, then a slim runtime with neither compilers nor
# scikit-learn. Mount your own repository over /models to serve your models instead (read-only is fine:
# `-v "$PWD/models:/models:ro"`). Runs as a numeric non-root user and works with a read-only root
# filesystem (`--read-only --tmpfs /tmp`; /tmp holds the metrics of several workers). `make image`
# builds it with docker or podman, also where no registry can be reached (scripts/image.sh).

FROM python:3.11-slim AS exporter
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/requirements-export.txt ./
RUN pip install --requirement requirements-export.txt
COPY pyproject.toml README.md contract.py ./
COPY export ./export
COPY serve ./serve
COPY loadtest ./loadtest
RUN pip install --no-deps . && python -m export examples --out /models

FROM python:3.11-slim AS builder
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Only the serving dependencies (numpy, onnxruntime, orjson, starlette, uvicorn, click), pinned to the
# versions the tests ran with; docker/requirements-*.txt are `pip freeze` of clean virtualenvs.
COPY docker/requirements-serve.txt ./
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --requirement requirements-serve.txt
COPY pyproject.toml README.md contract.py ./
COPY export ./export
COPY serve ./serve
COPY loadtest ./loadtest
# pip and setuptools are build tools: 26 MB the running server never imports.
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

FROM python:3.11-slim
# A numeric user, so Kubernetes' runAsNonRoot can verify it without resolving names.
RUN groupadd --system --gid 10001 tabserve && useradd --system --uid 10001 --gid 10001 --no-create-home tabserve
COPY --from=builder /opt/venv /opt/venv
COPY --from=exporter --chown=10001:10001 /models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    SERVE_HOST=0.0.0.0 \
    SERVE_PORT=8000 \
    SERVE_MODEL_DIR=/models
USER 10001:10001
EXPOSE 8000 8001
# Reads the same SERVE_* settings as the server, so it checks the port and scheme really served.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["python", "-m", "serve.healthcheck"]
# Exec form: the server is PID 1 and gets SIGTERM itself (it drains, then exits; no shell in between).
CMD ["python", "-m", "serve"]
