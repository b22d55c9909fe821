"""HTTP side of ``af-metrics serve``: /metrics, the JSON API, health."""
