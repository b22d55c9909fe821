"""The collector's retry schedule: exponential backoff while the hub is down."""

from __future__ import annotations

from af_metrics.collector import Collector
from af_metrics.config import Settings

NOW = 1_767_225_600.0


def test_backoff_doubles_while_the_hub_is_down_and_resets_when_it_answers(ledger) -> None:  # noqa: ANN001
    collector = Collector(Settings(ledger="sqlite://", poll_interval=30, backoff_max=10), ledger)
    delays = []
    for _ in range(6):
        collector.health["jupyterhub"].failed("hub down")
        delays.append(collector.next_delay())
    assert delays == [1, 2, 4, 8, 10, 10]
    collector.health["jupyterhub"].ok(NOW)
    assert collector.next_delay() == 30
