"""The data plane: carry requests to the app and answers back, streaming, knowing no identity.

The public listener's HTTP/1.1 protocol with its limits (on uvicorn's), the forwarder and
its response rewriting, the pooled HTTP/1.1 upstream client, the WebSocket relay, the
request-header rules (hop-by-hop, X-Forwarded-*, protected names) and the error pages for
431/408/502/504. It may import `proxy.config`, `proxy.asgi`, `proxy.errors`,
`proxy.ops.metrics`/`proxy.ops.logs` and uvicorn; never identity, consent or the store.
"""
