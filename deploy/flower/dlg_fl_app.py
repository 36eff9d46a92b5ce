"""Seed 001's federated runs as a Flower App for a multi-process deployment (see README).

The ServerApp and the clients' Mod read everything from the run config: ``method`` (base, dp,
mixed, int8, int16, mixed-wrong-mode) and any ``dlg_utils.federated.FLConfig`` field. Every
SuperNode needs ``dlg_utils`` installed and its data partition in ``--node-config``.
"""
from dlg_utils.federated import FROM_RUN_CONFIG, client_app, server_app

server = server_app()  # method and configuration from the run config
client = client_app(FROM_RUN_CONFIG)  # QuantizedUpdateMod with the policy of the run config's method
