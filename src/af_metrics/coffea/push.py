"""Authenticated push of run records to the facility's ``af-metrics serve``.

The facility learns who ran the analysis from the JupyterHub token of the user's server
(``JUPYTERHUB_API_TOKEN``), which it checks with the hub; the record's ``user`` field is ignored.
"""

from __future__ import annotations

import httpx

from af_metrics.coffea.spool import Outcome

PUSH_PATH = "/api/v1/analysis/runs"
PUSH_TIMEOUT = 3.0
# not about this record: the service, the hub or the token may be fine later; stop and keep everything
WAIT = {401, 403, 408, 429, 502, 503, 504}


class PushClient:
    def __init__(self, url: str, token: str, timeout: float = PUSH_TIMEOUT) -> None:
        self.endpoint = url.rstrip("/") + PUSH_PATH
        # plain-http facilities skip loading the CA bundle (tens of ms of CPU per client)
        self._client = httpx.Client(timeout=timeout, headers={"Authorization": f"token {token}"},
                                    verify=self.endpoint.startswith("https://"))

    def send(self, line: str) -> Outcome:
        """POST one record: 'retry' when the facility or the hub cannot take anything now, 'reject' when
        the facility refuses this record (4xx), 'failed' when it broke on this record (5xx)."""
        try:
            response = self._client.post(self.endpoint, content=line, headers={"Content-Type": "application/json"})
        except httpx.HTTPError:
            return "retry"
        if response.is_success:
            return "sent"
        code = response.status_code
        if code in WAIT:
            return "retry"
        return "reject" if code < 500 else "failed"

    def close(self) -> None:
        self._client.close()
