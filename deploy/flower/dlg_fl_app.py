"""Seed 001's federated runs as a Flower App for a multi-process deployment (see README).

The ServerApp and the clients' Mods read everything from the run config: ``method`` (base, dp,
mixed, int8, int16, mixed-wrong-mode), any ``dlg_utils.federated.FLConfig`` field, and the audit
(``audit = true`` and its ``audit_*`` options, ``dlg_utils.audit.audit_from_run``: the server
attacks its clients' updates; the clients report their samples for scoring when
``audit_truth`` is true). Every SuperNode needs ``dlg_utils`` installed and its data partition
in ``--node-config``.
"""
from dlg_utils.federated import FROM_RUN_CONFIG, client_app, server_app


def audited(strategy, method: str, run_config: dict):
    """``audit=true`` in the run config: the server attacks its clients' updates."""
    from dlg_utils.audit import audited_from_run  # the attacks: imported by the server only
    return audited_from_run(strategy, method, run_config)


server = server_app(wrap=audited)  # method, configuration and audit from the run config
# QuantizedUpdateMod with the policy of the run config's method; TrainedSamplesMod when it audits
client = client_app(FROM_RUN_CONFIG, truth=FROM_RUN_CONFIG)
