"""Observability assets generated from code: Grafana dashboards and the SLO rules.

`python scripts/observability/generate.py` writes them; `--check` fails when the
committed files differ from what this code produces (CI runs it).
"""
