"""Targets from a YAML file the operator keeps: user -> list of scheduler dashboard URLs.

    alice:
      - http://10.0.0.5:8787
      - {url: http://10.0.0.6:8787, cluster: big}

The file is read again on every discovery, so edits take effect without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from af_metrics.discovery import DaskTarget, DiscoveryError

FILE_MAX = 16 * 1024 * 1024


@dataclass
class StaticFileProvider:
    path: Path
    name: str = "static"

    async def targets(self) -> list[DaskTarget]:
        try:
            if self.path.stat().st_size > FILE_MAX:
                raise DiscoveryError(f"{self.path} is larger than {FILE_MAX} bytes")
            data = yaml.safe_load(self.path.read_text())
        except OSError as exc:
            raise DiscoveryError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise DiscoveryError(f"{self.path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        return parse_static(data, str(self.path))


def parse_static(data: object, where: str) -> list[DaskTarget]:
    if data is None:
        return []
    if not isinstance(data, dict):
        raise DiscoveryError(f"{where}: expected a mapping of user -> list of URLs")
    out = []
    for user, entries in data.items():
        if isinstance(entries, (str, dict)):
            entries = [entries]
        if not isinstance(entries, list):
            raise DiscoveryError(f"{where}: user {user!r} needs a list of URLs")
        for entry in entries:
            if isinstance(entry, str):
                out.append(DaskTarget.make(str(user), "", entry))
            elif isinstance(entry, dict) and isinstance(entry.get("url"), str):
                out.append(DaskTarget.make(str(user), str(entry.get("cluster") or ""), entry["url"]))
            else:
                raise DiscoveryError(f"{where}: entry {entry!r} of user {user!r} is neither a URL nor {{url: ...}}")
    return out
