"""consent-proxy: Office 365 calendar and contacts consent for apps that already use SSO."""

__version__ = "0.1.0"
