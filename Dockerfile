# Image for the Flywheel services in docker-compose.yml (API, ingestor, Flink nodes, MLflow,
# the loop, Airflow, the trainer).
FROM python:3.11-slim
# cpu (default) or a CUDA build of torch for a GPU node, e.g. --build-arg TORCH_VARIANT=cu128
ARG TORCH_VARIANT=cpu
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir torch==2.13.0 --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
    && pip install --no-cache-dir uv==0.13.9 \
    && grep -v '^torch==' requirements/requirements.lock > /tmp/lock.txt \
    && uv pip install --system --no-cache -r /tmp/lock.txt
COPY . .
RUN uv pip install --system --no-deps -e . && python scripts/fetch_jars.py
# services run as an unprivileged user that owns only the state volume
RUN useradd --create-home --uid 10001 flywheel && mkdir -p /state && chown flywheel:flywheel /state
USER flywheel
ENV FLINK_LOG_DIR=/state/flink-logs
ENTRYPOINT []
