"""Reading Ray's Prometheus endpoint in tests: our samples (`ray_almquist_*`), summed over Ray's own labels."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]  # (sample name, labels) -> value


def scrape(port: int) -> Series:
    """Every almquist sample on the endpoint, Ray's own labels included (one series per worker)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("ray_almquist_")
        for sample in family.samples
    }


def total(series: Series, name: str, **labels: str) -> float:
    """The sum over every series of `name` carrying `labels` (over workers and the labels not given)."""
    wanted = set(labels.items())
    return sum(value for (sample, tags), value in series.items() if sample == name and wanted <= tags)


def settled(port: int, ready: Callable[[Series], bool] = lambda _: True, timeout_s: float = 90) -> Series:
    """A scrape once `ready` holds and two scrapes a few report intervals apart agree: every worker has reported
    what it recorded (each reports on its own clock)."""
    deadline = time.monotonic() + timeout_s
    previous = None
    while True:
        current = scrape(port)
        if ready(current) and current == previous:
            return current
        assert time.monotonic() < deadline, f"metrics did not settle in {timeout_s} s: {sorted(current)[:20]}"
        previous = current
        time.sleep(2.5)  # the fixture reports every second
