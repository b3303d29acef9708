# Image for the Flywheel services in docker-compose.yml (feedback API, ingestor, jobs).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir uv==0.13.9 \
    && grep -v '^torch==' requirements/requirements.lock > /tmp/lock.txt \
    && uv pip install --system --no-cache -r /tmp/lock.txt
COPY . .
RUN uv pip install --system --no-deps -e . && python scripts/fetch_jars.py
ENV FLINK_LOG_DIR=/state/flink-logs
ENTRYPOINT []
