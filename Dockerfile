# One image for the gateway and the simulated partners (different commands in docker-compose.yml).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsodium23 curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY deploy/constraints.txt ./deploy/constraints.txt
COPY gateway ./gateway
COPY connectors ./connectors
COPY audit ./audit
COPY escalation ./escalation
COPY migrations ./migrations
COPY policies ./policies
# -c: the exact versions of every runtime dependency the tests ran with (regenerate: see the file's header),
# so a rebuild does not pick up whatever was released since.
# The data directory holds the gateway's keys and the partners' databases: the runtime user's alone (0700; a
# volume mounted there starts with this mode and owner).
RUN pip install --no-cache-dir -c deploy/constraints.txt -e . \
 && useradd --system --user-group --uid 10001 wgs \
 && install -d -m 0700 -o wgs -g wgs /var/lib/wgs
USER wgs
ENV WGS_DATA_DIR=/var/lib/wgs
EXPOSE 8000
# Liveness, not readiness: a runtime that restarts unhealthy containers should restart a gateway that no
# longer answers HTTP, not one whose database, schema or policy server is unavailable (a restart cannot fix
# those, and `serve` refuses to start without them). docker-compose.yml overrides this for the gateway with
# /health/ready, which only orders the start of the services that depend on it (compose restarts nothing
# for being unhealthy), and gives the partner services, which run this image on other ports, their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/health/live"]
CMD ["wgs-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
