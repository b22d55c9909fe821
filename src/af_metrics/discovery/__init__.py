"""Where per-user Dask schedulers are found: pluggable providers, merged into one target list.

A provider returns ``DaskTarget`` records (user, cluster, dashboard base URL). ``Discovery``
asks every configured provider; a provider that fails keeps its last good list (so a hub or
gateway outage does not look like every cluster stopping) and is reported in ``health``; so is
a provider that raises anything else (a bug or an unforeseen answer must not cost the cycle).
Target fields are bounded: they become label values and ledger columns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from af_metrics.collector import SourceHealth
from af_metrics.sources.dask import describe

log = logging.getLogger("af_metrics.discovery")

USER_MAX = 255  # characters of a user name (the ledger's column)
CLUSTER_MAX = 128  # characters of a cluster label; longer names are cut
URL_MAX = 1024  # characters of a dashboard URL (the ledger's column)


class DiscoveryError(RuntimeError):
    """A provider could not list targets; the message is one line."""


@dataclass(frozen=True, slots=True, order=True)
class DaskTarget:
    """One user's scheduler dashboard. ``url`` is the base URL: ``url + "/metrics"`` is scraped."""

    user: str
    cluster: str
    url: str

    @classmethod
    def make(cls, user: str, cluster: str, url: str) -> "DaskTarget":
        """A target with a checked http(s) URL (no trailing slash); DiscoveryError otherwise."""
        url = url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DiscoveryError(f"scheduler URL {url!r} of user {user!r} is not an http(s) URL")
        if len(url) > URL_MAX:
            raise DiscoveryError(f"scheduler URL {url[:60]!r}... of user {user[:60]!r} is longer than {URL_MAX} characters")
        if not user:
            raise DiscoveryError(f"scheduler URL {url!r} has no user")
        if len(user) > USER_MAX:
            raise DiscoveryError(f"user name {user[:60]!r}... is longer than {USER_MAX} characters")
        return cls(user, (cluster or parts.netloc)[:CLUSTER_MAX], url)


class Provider(Protocol):
    name: str

    async def targets(self) -> list[DaskTarget]: ...


@dataclass
class Discovery:
    """Every configured provider, merged; last good answer kept per provider."""

    providers: Sequence[Provider]
    health: dict[str, SourceHealth] = field(default_factory=dict)
    _last: dict[str, list[DaskTarget]] = field(default_factory=dict)

    async def targets(self) -> list[DaskTarget]:
        for provider in self.providers:
            health = self.health.setdefault(provider.name, SourceHealth())
            try:
                self._last[provider.name] = await provider.targets()
                health.ok(time.time())
            except DiscoveryError as exc:
                health.failed(f"dask discovery {provider.name}: {exc}")
            except Exception as exc:  # any other failure of one provider is that provider's alone
                log.debug("dask discovery %s failed", provider.name, exc_info=True)
                health.failed(f"dask discovery {provider.name}: {describe(exc)}")
        return sorted({t for found in self._last.values() for t in found})
