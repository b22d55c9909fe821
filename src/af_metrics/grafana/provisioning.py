"""Grafana provisioning files: a file provider for the dashboards and, optionally, the
Prometheus data source, so that a Grafana started with them shows the dashboards at once.
"""

from __future__ import annotations

DEFAULT_PATH = "/var/lib/grafana/dashboards/af-metrics"
FOLDER = "af-metrics"


def dashboard_provider(path: str = DEFAULT_PATH) -> dict:
    """``provisioning/dashboards/af-metrics.yml``: load every JSON file under ``path``."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "af-metrics",
                "orgId": 1,
                "folder": FOLDER,
                "folderUid": FOLDER,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,  # regenerate with 'af-metrics grafana' instead of editing
                "updateIntervalSeconds": 60,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }


def prometheus_datasource(url: str, scrape_interval: str = "30s") -> dict:
    """``provisioning/datasources/af-metrics.yml``: the Prometheus the dashboards read."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus (af-metrics)",
                "uid": "af-metrics-prometheus",
                "type": "prometheus",
                "access": "proxy",
                "url": url,
                "isDefault": False,
                "jsonData": {"timeInterval": scrape_interval},  # so $__rate_interval spans enough scrapes
            }
        ],
    }
