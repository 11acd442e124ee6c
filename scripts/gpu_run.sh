#!/usr/bin/env bash
# Full mode end to end on a machine with an NVIDIA GPU, and what it measures, in one command.
#
#   scripts/gpu_run.sh              # on the GPU machine (make gpu-run does the same)
#   scripts/gpu_run.sh --rehearse   # on any machine: every step at its smallest, on the CPU
#
# Steps, each writing into benchmarks/results/ (the file names carry the GPU's name):
#   1. every notebook in full mode (scripts/dryrun.py --full): time, peak memory of the host
#      and of each training run on the GPU, achieved TFLOP/s and the share of the GPU's peak;
#   2. training throughput of the course's networks (images/s, TFLOP/s, MFU in bf16);
#   3. post-processing on the GPU against the CPU (same calls, outputs compared);
#   4. the model zoo's full-mode training (budget zoo-gpu) into checkpoints/zoo-gpu, scored:
#      the generalists, then the whole-cell model (notebook 10b);
#   5. benchmarks/RESULTS.md written again from every results file.
# A step that fails stops the run (set -e); the results written until then stay.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory setup
PY=.venv/bin/python
export COURSE_STATIC_FIGURES=1 JUPYTER_PATH="$PWD/.venv/share/jupyter"
log() { echo "[gpu_run $(date +%H:%M:%S)] $*"; }

if [ "${1:-}" = "--rehearse" ]; then
    log "rehearsal on the CPU: nothing it measures is a GPU figure, and it writes no GPU file"
    log "1. one notebook in the full-mode dry run (results kept in _build/rehearse only)"
    $PY scripts/dryrun.py --one notebooks/00_setup_and_data.ipynb --out "$PWD/_build/rehearse"
    log "2. throughput, smoke sizes"
    $PY benchmarks/train_throughput.py --quick
    log "3. post-processing, the CPU on both sides"
    $PY benchmarks/bench_postprocess_device.py --rehearse
    log "4. the zoo's training loop, one epoch on two images"
    $PY scripts/train_zoo.py --methods stardist --budget gpu --epochs 1 --patches 8 \
        --n-train 2 --n-val 2 --n-test 2 --out "$PWD/_build/rehearse/models" \
        --checkpoints "$PWD/_build/rehearse/checkpoints" --device cpu
    $PY scripts/train_zoo.py --data usiigaci --methods cellpose --budget gpu --epochs 1 \
        --patches 8 --n-train 4 --n-val 1 --n-test 1 --out "$PWD/_build/rehearse/models" \
        --checkpoints "$PWD/_build/rehearse/checkpoints" --device cpu
    log "rehearsal done"
    exit 0
fi

if ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA GPU here: run scripts/gpu_run.sh --rehearse to try the steps on the CPU" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
log "1. every notebook in full mode"
COURSE_MODE=full $PY scripts/dryrun.py --full
log "2. training throughput"
$PY benchmarks/train_throughput.py --device cuda
log "3. post-processing on the GPU against the CPU"
$PY benchmarks/bench_postprocess_device.py --device cuda
log "4. the zoo's full-mode training"
$PY scripts/train_zoo.py --budget gpu --device cuda --checkpoints "$PWD/checkpoints/zoo-gpu" \
    --out "$PWD/_build/zoo-gpu"
$PY scripts/train_zoo.py --budget gpu --device cuda --checkpoints "$PWD/checkpoints/zoo-gpu" \
    --out "$PWD/_build/zoo-gpu" --data usiigaci --methods cellpose
log "5. RESULTS.md"
$PY benchmarks/make_results.py
log "done: see benchmarks/RESULTS.md"
