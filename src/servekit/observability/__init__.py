"""Observability: logging (``logging``), the access log (``access``), Prometheus metrics
(``metrics``: every metric object; ``exposition``: the metrics server) and the one place a
request is recorded (``requests``).

Nothing here is imported by this package's ``__init__``: importing prometheus-client
decides, once per process, where metric values live (see ``exposition``).
"""
