"""Observability: logging today; metrics and tracing build on it."""
