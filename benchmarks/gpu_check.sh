#!/usr/bin/env bash
# The trainer's GPU checks in one go, for the GPU machine (issue 6). Run from the repo root:
#
#     bash benchmarks/gpu_check.sh
#
# Needs python3 with NumPy, CuPy (and, for the reference, PyTorch) and the Chainer wheel at
# .whl/chainer-7.8.1-py3-none-any.whl, which it installs into /tmp/site. Writes everything into
# $OUT when set (else /tmp/gpu_check): benchmark.txt/.json (agreement after 50 steps, images/s
# table, thread sweep, 5-epoch accuracy, kernel profile, verdicts), train_fast.txt and
# train_seed.txt (the trainer itself, 5 epochs on the GPU, each loop), env.txt. Takes about 2-3
# minutes on an H100 with 16 cores; every part has its own time limit.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
start=$(date +%s)

"$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/chainer-*.whl \
    >"$OUT_DIR/pip.txt" 2>&1 || { cat "$OUT_DIR/pip.txt"; exit 1; }
# Chainer, and the run-side Run that the trainer logs through (stdlib only).
export PYTHONUNBUFFERED=1
export PYTHONPATH=/tmp/site:$PWD/backends/local/runtime${PYTHONPATH:+:$PYTHONPATH}

DATA=../shared/data/mnist-10k
[ -d "$DATA" ] || DATA=tests/data/mnist-10k

{
    nvidia-smi 2>&1 | head -20
    "$PY" -c 'import sys, numpy, cupy; print(sys.version); print("numpy", numpy.__version__); cupy.show_config()' 2>&1
    "$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())' 2>&1 | tail -1
    nproc; lscpu | grep -E "Model name|^CPU\(s\)"
} >"$OUT_DIR/env.txt" 2>&1

echo "== benchmark"
timeout 190 "$PY" benchmarks/trainer.py --data-dir "$DATA" --seconds 1.0 \
    --json "$OUT_DIR/benchmark.json" 2>&1 | tee "$OUT_DIR/benchmark.txt"
bench_rc=${PIPESTATUS[0]}

for loop in fast seed; do
    echo "== trainer, --loop $loop, 5 epochs on the GPU"
    timeout 45 "$PY" trainer/chainer_mnist.py --data-dir "$DATA" --epochs 5 --loop "$loop" \
        --output_dir "/tmp/gpu_check_model_$loop" 2>&1 | grep -v "^Attempted to log" \
        | tee "$OUT_DIR/train_$loop.txt"
done
"$PY" - "$OUT_DIR" <<'EOF' 2>&1 | tee "$OUT_DIR/models.txt"
import sys, numpy as np
fast, seed = (np.load('/tmp/gpu_check_model_%s/model.npz' % loop) for loop in ('fast', 'seed'))
print('model.npz keys equal:', sorted(fast.files) == sorted(seed.files))
for k in sorted(seed.files):
    print('  %-18s %-12s max |fast - seed| / max |seed| = %.2e' % (
        k, seed[k].shape, np.abs(fast[k] - seed[k]).max() / np.abs(seed[k]).max()))
EOF
echo "== done in $(( $(date +%s) - start )) s, benchmark exit $bench_rc (0: every verdict passed)"
exit "$bench_rc"
