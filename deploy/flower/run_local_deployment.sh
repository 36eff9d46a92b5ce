#!/usr/bin/env bash
# Seed 001's mixed-precision FedAvg as a real multi-process Flower deployment on one machine:
# one SuperLink, N SuperNodes (one process each, each with its data partition), then `flwr run`.
# On several machines run the same commands with the SuperLink's address instead of 127.0.0.1.
#   deploy/flower/run_local_deployment.sh [NUM_CLIENTS] [RUN_CONFIG]
# e.g. deploy/flower/run_local_deployment.sh 3 "method='mixed' rounds=5"
# An audited run (the server attacks its clients' updates; rows in the logs folder's audit.jsonl):
#   deploy/flower/run_local_deployment.sh 2 "method='base' rounds=2 client_examples=1 batch_size=1 audit=true"
set -euo pipefail
N=${1:-2}
RUN_CONFIG=${2:-"method='mixed' rounds=3"}
cd "$(dirname "$0")"
export FLWR_HOME=${FLWR_HOME:-$(mktemp -d)}  # the flwr CLI's config: where the SuperLink is
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local-deployment"

[superlink.local-deployment]
address = "127.0.0.1:8000"
insecure = true
TOML
LOGS=$(mktemp -d)
GROUPS_=()  # each service runs in its own process group, stopped with everything it started
trap 'for g in "${GROUPS_[@]}"; do kill -- -"$g" 2>/dev/null || true; done' EXIT
setsid flower-superlink --insecure > "$LOGS/superlink.log" 2>&1 &
GROUPS_+=($!)
sleep 5
for ((i = 0; i < N; i++)); do
  setsid flower-supernode --insecure --superlink 127.0.0.1:8000 --port $((9094 + i)) \
    --node-config "partition-id=$i num-partitions=$N" > "$LOGS/supernode$i.log" 2>&1 &
  GROUPS_+=($!)
done
sleep 5
flwr run . local-deployment --stream --run-config "num_clients=$N audit_path='$LOGS/audit.jsonl' $RUN_CONFIG"
echo "logs: $LOGS"
if [ -f "$LOGS/audit.jsonl" ]; then
  echo "audit: $LOGS/audit.jsonl"
  python -c "import sys; from dlg_utils.audit import audit_report, load_audit; print(audit_report(load_audit(sys.argv[1])))" "$LOGS/audit.jsonl"
fi
