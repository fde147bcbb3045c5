# GPU workers: one worker process per visible GPU. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t hpo-worker .
#   docker run --gpus all -e HPO_DATABASE_URL=postgresql+psycopg://... -e PGPASSWORD=... hpo-worker
FROM python:3.11-slim

# The same TORCH_VERSION as docker/service.Dockerfile (compose passes one value to both); the
# CUDA build of it, whose wheels bring the CUDA libraries (the host needs only the driver and
# the NVIDIA Container Toolkit).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HPO_DATA_DIR=/var/lib/hpo \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md /tmp/src/
COPY service /tmp/src/service
COPY trainer /tmp/src/trainer
# Installed as a wheel, not editable; pip keeps the torch above.
RUN pip install /tmp/src && rm -rf /tmp/src

# An unprivileged user (numeric, so `runAsNonRoot` checks can verify it); the data dir holds
# the dataset cache and downloaded image datasets.
RUN groupadd --system --gid 10001 hpo \
    && useradd --system --uid 10001 --gid hpo --create-home --home-dir /home/hpo hpo \
    && mkdir -p /var/lib/hpo && chown 10001:10001 /var/lib/hpo
USER 10001
WORKDIR /var/lib/hpo

# Healthy while a worker of this container heartbeats (HPO_WORKER_GRACE_SECONDS).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["hpo", "worker-health"]
# SIGTERM (docker stop): no new trials; the current ones get HPO_STOP_DEADLINE_SECONDS.
STOPSIGNAL SIGTERM
CMD ["hpo", "worker", "--gpus", "all"]
