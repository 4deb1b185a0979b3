# consent-proxy: a slim runtime image, built in two stages so that no compiler or build
# tool reaches the final image.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN python -m venv /opt/consent-proxy \
 && /opt/consent-proxy/bin/pip install --no-cache-dir .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/consent-proxy --create-home consent-proxy
COPY --from=build /opt/consent-proxy /opt/consent-proxy
ENV PATH=/opt/consent-proxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONSENT_PROXY_CONFIG=/etc/consent-proxy/config.yaml
USER 10001
WORKDIR /var/lib/consent-proxy
# 8080: the proxy; 9090: the ops listener (health, readiness, metrics, JWKS, token broker).
# In the config: ops.host: 0.0.0.0 (or 127.0.0.1 to keep ops inside the container).
EXPOSE 8080 9090
# Mount the config at /etc/consent-proxy/config.yaml; pass secrets as env vars or files.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
ENTRYPOINT ["consent-proxy"]
CMD ["run", "--host", "0.0.0.0", "--port", "8080"]
