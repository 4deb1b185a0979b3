"""Stand-ins that make consent-proxy runnable and testable on one machine, offline."""
