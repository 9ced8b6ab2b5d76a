"""Deploying Blueprint to Kubernetes: the `blueprint rollout` blue-green command.

`state` reads a release (helm values, Deployments, the rollout's own record in
helm history) into plain data; `plan` decides the next helm value changes from
it, refusing unsafe ones; `verify` probes a preview over gRPC; `runner` runs
helm and kubectl; `commands` strings them into actions; `rollout` is the
argparse wiring the `blueprint` command registers.
"""
