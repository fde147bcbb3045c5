# The API service: `hpo serve --workers 0` (no GPU needed). Build from the repository root:
#   docker build -f docker/service.Dockerfile -t hpo-service .
FROM python:3.11-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HPO_HOST=0.0.0.0 HPO_PORT=8000
# The API imports the trainer's parameter registry, hence torch: the CPU build is enough
# here and a fraction of the size of the default CUDA wheels.
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md alembic.ini ./
COPY service service
COPY trainer trainer
# `hpo db upgrade` reads the migrations from the installed package.
RUN pip install --no-cache-dir -e .

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health')"
CMD ["hpo", "serve", "--workers", "0"]
