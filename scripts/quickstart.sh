#!/usr/bin/env bash
# The README's first command: set up the machine, fetch MNIST, train chainer_mnist in Docker
# through amlocal's stages, and print where the model is.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh

amlocal=.venv/bin/amlocal
$amlocal datasets fetch mnist -o data/mnist

# The run streams to the terminal; with --json its last line is the run record.
output=$(mktemp)
trap 'rm -f "$output"' EXIT
$amlocal run trainer --script chainer_mnist.py --experiment chainer-mnist \
    --executor docker --input mnist=data/mnist --json \
    -- --epochs "${EPOCHS:-5}" --data-dir '$AZUREML_DATAREFERENCE_mnist' | tee "$output"
run_id=$(tail -n 1 "$output" | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["id"])')

echo
$amlocal runs metrics "$run_id"
$amlocal runs download "$run_id" --prefix outputs/model.npz -o "models/$run_id" >/dev/null
echo "Model: models/$run_id/outputs/model.npz (kept in the run history at $(
    $amlocal runs show "$run_id" --json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["run_dir"])')/outputs/model.npz)"
