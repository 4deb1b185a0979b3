# consent-proxy: a slim runtime image, built in two stages so that no compiler or build
# tool reaches the final image.
#
# BASE: any image with python3 (3.11, the version the tests run on) and its venv module.
# The default comes from a registry; without one, docker/debian-base.sh makes a base from
# Debian's packages. See README, "In a container".
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# PIP_NO_INDEX=1: install only from docker/wheels (made on the host), for hosts whose
# containers cannot reach a package index.
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/src/docker/wheels
WORKDIR /src
# The pinned dependencies first, in their own layer: code changes do not reinstall them.
COPY docker/ ./docker/
RUN python3 -m venv /opt/consent-proxy \
 && /opt/consent-proxy/bin/pip install --no-cache-dir -r docker/requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
# --no-deps: the lock above is the whole set; `pip check` fails the build if it is not.
RUN /opt/consent-proxy/bin/pip install --no-cache-dir --no-deps . \
 && /opt/consent-proxy/bin/pip check

FROM ${BASE}
# The state directory is the user's home, made empty (no shell dot-files in the volume).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/consent-proxy consent-proxy \
 && install -d -o consent-proxy -g consent-proxy -m 0750 /var/lib/consent-proxy
COPY --from=build /opt/consent-proxy /opt/consent-proxy
COPY docker/healthcheck.py /opt/consent-proxy/healthcheck.py
ENV PATH=/opt/consent-proxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONSENT_PROXY_CONFIG=/etc/consent-proxy/config.yaml
USER 10001
WORKDIR /var/lib/consent-proxy
# The proxy's state (the SQLite store): mount a volume here to keep it across containers.
VOLUME /var/lib/consent-proxy
# 8080: the proxy; 9090: the ops listener (health, readiness, metrics, JWKS, token broker).
# In the config: ops.host: 0.0.0.0 (or 127.0.0.1 to keep ops inside the container).
EXPOSE 8080 9090
# Mount the config at /etc/consent-proxy/config.yaml; pass secrets as env vars or files.
# The check asks /healthz on the ops listener the config names (ops.host, ops.port).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "/opt/consent-proxy/healthcheck.py"]
ENTRYPOINT ["consent-proxy"]
CMD ["run", "--host", "0.0.0.0", "--port", "8080"]
