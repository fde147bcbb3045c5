# A GPU worker on a PyTorch CUDA base image. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t hpo-worker .
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md alembic.ini ./
COPY service service
COPY trainer trainer
COPY alembic alembic
# torch comes with the base image; pip keeps it because it satisfies `torch>=2.2`.
RUN pip install --no-cache-dir -e .

CMD ["hpo", "worker", "--device", "cuda"]
