"""Accounting: HTCondor and Kubernetes usage attributed to hub users, per-user totals, usage records."""
