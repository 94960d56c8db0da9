# syntax=docker/dockerfile:1
# tierflow's image: every service of docker-compose.yml runs `tierflow <command>` from it.
#
#   docker build -t tierflow:local .                            # without the embedding model
#   docker build -t tierflow:local --build-arg WITH_EMBEDDINGS=1 .
#
# Everything is installed at build time; nothing is fetched when a container runs.
FROM python:3.11-slim

ARG WITH_EMBEDDINGS=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TIERFLOW_KB_DIR=/app/examples/kb

RUN groupadd --system tierflow \
    && useradd --system --gid tierflow --create-home --home-dir /home/tierflow tierflow \
    && install -d -o tierflow -g tierflow /var/lib/tierflow

WORKDIR /app

# Dependencies first (from pyproject.toml), so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python - <<'PY' > /tmp/requirements.txt
import os, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(project["dependencies"])
if os.environ.get("WITH_EMBEDDINGS", "0") == "1":
    deps += project["optional-dependencies"]["embeddings"]
print("\n".join(deps))
PY
RUN pip install -r /tmp/requirements.txt

COPY alembic.ini ./
COPY migrations ./migrations
COPY routing ./routing
COPY providers ./providers
COPY store ./store
COPY tasks ./tasks
COPY worker ./worker
COPY tierflow ./tierflow
COPY examples ./examples
RUN pip install --no-deps . \
    && python -c "import tierflow.worker.cli"

USER tierflow
WORKDIR /home/tierflow
ENTRYPOINT ["tierflow"]
CMD ["--help"]
