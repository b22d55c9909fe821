"""Prometheus configuration generated from Python data: scrape jobs, recording and alerting
rules, and promtool unit tests for every rule (``af-metrics prometheus config|rules|rules-tests``).
"""
