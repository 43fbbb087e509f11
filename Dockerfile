# One image for the gateway and the simulated partners (different commands in docker-compose.yml).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsodium23 curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY gateway ./gateway
COPY connectors ./connectors
COPY audit ./audit
COPY escalation ./escalation
COPY migrations ./migrations
COPY policies ./policies
RUN pip install --no-cache-dir -e . \
 && useradd --system --uid 10001 wgs \
 && mkdir -p /var/lib/wgs && chown wgs /var/lib/wgs
USER wgs
ENV WGS_DATA_DIR=/var/lib/wgs
EXPOSE 8000
CMD ["wgs-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
