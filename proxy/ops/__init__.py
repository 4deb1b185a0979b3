"""What ops run and watch: the ops listener, metrics, logs and the token broker.

`metrics` and `logs` are leaves that every layer imports; they import nothing of the
project but `proxy.asgi` and `proxy.errors`. On top of them, the ops listener serves
health, readiness, Prometheus metrics, the assertion JWKS and the token broker API on its
own port; the broker reads the store and sees tokens only through the `TokenSource`
protocol of `proxy.identity.headers`, so ops never imports the consent journey. The
admins' overview page (`overview`) renders `summary`'s plain data, which the app hands in
from `proxy.consent.overview`; `preflight` is what `check` verifies before a deploy and
`access` the access log.
"""
