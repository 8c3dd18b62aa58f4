#!/usr/bin/env bash
# The trainer's GPU checks in one go, for the GPU machine (issue 6). Run from the repo root:
#
#     bash benchmarks/gpu_check.sh
#
# Needs python3 with NumPy, CuPy (and, for the reference, PyTorch) and the Chainer wheel at
# .whl/chainer-7.8.1-py3-none-any.whl, which it installs into /tmp/site. Writes everything into
# $OUT when set (else /tmp/gpu_check): benchmark.txt/.json (agreement after 50 steps, images/s
# table, thread sweep, 5-epoch accuracy, kernel profile, verdicts), train_fast.txt and
# train_seed.txt (the trainer itself, 5 epochs on the GPU, each loop), env.txt (with the CUDA
# runtime CuPy loaded, and from where), amlocal_run.txt (the trainer through amlocal's process
# executor, where $PY can import amlocal). Takes about 2-3 minutes on an H100 with 16 cores; every
# part has its own time limit.
#
# PYTHON may be a virtual environment's python with CuPy's CUDA libraries as PyPI wheels
# (nvidia-cuda-runtime-cu11, nvidia-cublas-cu11, nvidia-cuda-nvrtc-cu11, as in docker/chainer-gpu):
# their lib folders then go on LD_LIBRARY_PATH (which the process executor passes to the run), for
# the dynamic linker to find them as it finds them in the image through its ld.so cache.
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

wheel_libs=$("$PY" -c 'import glob, sysconfig
print(":".join(sorted(glob.glob(sysconfig.get_paths()["purelib"] + "/nvidia/*/lib"))))' 2>/dev/null)
if [ -n "$wheel_libs" ]; then
    export LD_LIBRARY_PATH=$wheel_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

DATA=../shared/data/mnist-10k
[ -d "$DATA" ] || DATA=tests/data/mnist-10k

{
    nvidia-smi 2>&1 | head -20
    "$PY" -c 'import sys, numpy, cupy; print(sys.version); print("numpy", numpy.__version__); cupy.show_config()' 2>&1
    "$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())' 2>&1 | tail -1
    nproc; lscpu | grep -E "Model name|^CPU\(s\)"
} >"$OUT_DIR/env.txt" 2>&1
# The CUDA runtime CuPy loaded: the version CuPy runs on, the shared one it opens, and their files.
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT_DIR/env.txt"
import cupy
from pathlib import Path
try:
    runtime, shared = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.get_local_runtime_version()
    import cupy.cuda.cublas, cupy.cuda.nvrtc  # noqa: F401 - loaded for the listing below
    cupy.cuda.nvrtc.getVersion()
except Exception as error:  # noqa: BLE001 - reported, the rest goes on
    print("CUDA runtime: not loaded:", error)
else:
    loaded = sorted({line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                     if any(name in line for name in ("libcudart", "libcublas", "libnvrtc"))})
    print("CUDA runtime CuPy loaded: %d.%d (shared libcudart %d.%d); libraries: %s" % (
        runtime // 1000, runtime % 1000 // 10, shared // 1000, shared % 1000 // 10,
        ", ".join(loaded) or "linked into CuPy"))
EOF

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
echo "== the trainer through amlocal's process executor, --gpu_id 0"
if "$PY" -c 'import amlocal.cli.main' 2>/dev/null; then
    AMLOCAL_HOME=/tmp/gpu_check_amlocal timeout 120 "$PY" -m amlocal run trainer \
        --executor process --gpu --script chainer_mnist.py \
        --input "mnist=$DATA" -- --gpu_id 0 --epochs 1 --data-dir '$AZUREML_DATAREFERENCE_mnist' \
        2>&1 | tee "$OUT_DIR/amlocal_run.txt"
else
    echo "skipped: $PY cannot import amlocal" | tee "$OUT_DIR/amlocal_run.txt"
fi
"$PY" - "$OUT_DIR/benchmark.json" <<'EOF' 2>&1 | tee -a "$OUT_DIR/benchmark.txt"
import json, sys
rows = {row["what"]: row for row in json.load(open(sys.argv[1])).get("throughput", [])}
fast, seed = (rows.get(name, {}).get("128") for name in ("fast loop, GPU auto", "seed loop, GPU"))
print("batch 128 on the GPU: fast loop %s images/s, seed loop %s images/s" % (
    "{:,.0f}".format(fast) if fast else "not measured", "{:,.0f}".format(seed) if seed else "not measured"))
EOF
echo "== done in $(( $(date +%s) - start )) s, benchmark exit $bench_rc (0: every verdict passed)"
exit "$bench_rc"
