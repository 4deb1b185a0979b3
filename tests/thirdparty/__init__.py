"""Servers built on maintained third-party libraries (identity providers, apps' SSO
clients), so the proxy is tested against implementations that are not its own."""
