# GPU workers on a PyTorch CUDA base image: one worker process per visible GPU.
# Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t hpo-worker .
#   docker run --gpus all -e HPO_DATABASE_URL=postgresql+psycopg://... hpo-worker
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md alembic.ini ./
COPY service service
COPY trainer trainer
# torch comes with the base image; pip keeps it because it satisfies `torch>=2.2`.
RUN pip install --no-cache-dir -e .

# Healthy while a worker of this container heartbeats (HPO_WORKER_GRACE_SECONDS).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["hpo", "worker-health"]
# SIGTERM (docker stop): no new trials; the current ones get HPO_STOP_DEADLINE_SECONDS.
STOPSIGNAL SIGTERM
CMD ["hpo", "worker", "--gpus", "all"]
