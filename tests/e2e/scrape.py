"""Reading a server's Prometheus endpoint in tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "gauge", "scrape"]


class Samples:
    """Every sample of one scrape; ``value`` and ``total`` select by a subset of labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.rows = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
                     for s in family.samples]

    def select(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(have, value) for sample, have, value in self.rows
                if sample == name and all(have.get(k) == v for k, v in labels.items())]

    def total(self, name: str, **labels: str) -> float:
        return sum(value for _, value in self.select(name, **labels))

    def label_values(self, name: str, label: str) -> set[str]:
        return {have[label] for have, _ in self.select(name) if label in have}


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Samples(response.text)


def gauge(url: str, name: str, model: str) -> float:
    """The value of a per-model gauge (e.g. servekit_queue_depth), over every version and worker."""
    return scrape(url).total(name, model=model)
