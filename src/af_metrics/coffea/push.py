"""Authenticated push of run records to the facility's ``af-metrics serve``.

The facility learns who ran the analysis from the JupyterHub token of the user's server
(``JUPYTERHUB_API_TOKEN``), which it checks with the hub; the record's ``user`` field is ignored.
"""

from __future__ import annotations

import httpx

from af_metrics.coffea.spool import Outcome

PUSH_PATH = "/api/v1/analysis/runs"
PUSH_TIMEOUT = 3.0
REJECTED = {400, 413, 422}  # the record itself is wrong: sending it again cannot help


class PushClient:
    def __init__(self, url: str, token: str, timeout: float = PUSH_TIMEOUT) -> None:
        self.endpoint = url.rstrip("/") + PUSH_PATH
        # plain-http facilities skip loading the CA bundle (tens of ms of CPU per client)
        self._client = httpx.Client(timeout=timeout, headers={"Authorization": f"token {token}"},
                                    verify=self.endpoint.startswith("https://"))

    def send(self, line: str) -> Outcome:
        """POST one record; 'retry' when the facility or the hub cannot take it now."""
        try:
            response = self._client.post(self.endpoint, content=line, headers={"Content-Type": "application/json"})
        except httpx.HTTPError:
            return "retry"
        if response.is_success:
            return "sent"
        return "reject" if response.status_code in REJECTED else "retry"

    def close(self) -> None:
        self._client.close()
