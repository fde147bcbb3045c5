# The API service: `hpo serve --workers 0` (no GPU needed). Build from the repository root:
#   docker build -f docker/service.Dockerfile -t hpo-service .
FROM python:3.11-slim

# The same TORCH_VERSION as docker/worker.Dockerfile (compose passes one value to both).
# The API imports the trainer's parameter registry, hence torch: the CPU build is enough
# here and a fraction of the size of the CUDA wheels.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HPO_HOST=0.0.0.0 HPO_PORT=8000 HPO_DATA_DIR=/var/lib/hpo
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md /tmp/src/
COPY service /tmp/src/service
COPY trainer /tmp/src/trainer
# Installed as a wheel, not editable: the migrations ship in the package (`hpo db upgrade`);
# pip keeps the torch above, which satisfies the project's requirement.
RUN pip install /tmp/src && rm -rf /tmp/src

# An unprivileged user (numeric, so `runAsNonRoot` checks can verify it).
RUN groupadd --system --gid 10001 hpo \
    && useradd --system --uid 10001 --gid hpo --create-home --home-dir /home/hpo hpo \
    && mkdir -p /var/lib/hpo && chown 10001:10001 /var/lib/hpo
USER 10001
WORKDIR /var/lib/hpo

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health')"
CMD ["hpo", "serve", "--workers", "0"]
