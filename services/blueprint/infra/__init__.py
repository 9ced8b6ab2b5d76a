"""What services stand on: SQL (engines, replicas, shards, migrations), cache, queue, ids.

Each subpackage is imported on its own (`blueprint.infra.sql`, `blueprint.infra.ids`, …),
so a process loads only the pieces it uses.
"""
