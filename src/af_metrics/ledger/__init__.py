"""The ledger: durable, idempotent facility facts."""
