"""What ops run and watch: the ops listener, metrics, logs and the token broker.

The ops listener serves health, readiness, Prometheus metrics, the assertion JWKS and the
token broker API on its own port. `metrics` and `logs` are imported by every layer; the
ops package itself imports only `proxy.store`, `proxy.config` and `proxy.asgi`.
"""
