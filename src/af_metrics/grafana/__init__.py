"""Grafana dashboards and provisioning built from code (``af-metrics grafana``)."""
