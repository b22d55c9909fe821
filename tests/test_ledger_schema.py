"""The migrations make exactly the tables ``ledger/schema.py`` declares, on both backends, and a
ledger keeps the time zone it was first opened in."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from af_metrics.ledger.schema import metadata
from af_metrics.ledger.store import Ledger, LedgerError


def test_migrations_match_the_declared_schema(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_the_first_open_records_the_time_zone_and_later_opens_must_agree(ledger_url: str) -> None:
    first = Ledger.open(ledger_url, tz="America/Chicago")
    first.engine.dispose()
    with pytest.raises(LedgerError, match="keeps days in time zone 'America/Chicago', the configuration says 'UTC'"):
        Ledger.open(ledger_url, tz="UTC")
    with pytest.raises(LedgerError, match="America/Chicago"):
        Ledger.open(ledger_url, tz="UTC", migrate=False)  # read-only opens check too
    again = Ledger.open(ledger_url, tz="America/Chicago", migrate=False)
    assert again.tz == "America/Chicago"
    again.engine.dispose()
