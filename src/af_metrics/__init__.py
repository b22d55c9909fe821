"""af-metrics: how an analysis facility is used, by whom, and how well."""

__version__ = "0.1.0"
