#!/usr/bin/env bash
# GPU checks in one go (used on a lent CUDA machine; any CUDA machine with scangen's dependencies works):
# simulates the quick cohort for two FMs, then runs the training-speed benchmark (32 and 128 patches
# per bag), the per-head throughput benchmark, whole training runs on the device with a CPU
# comparison, the training tests, ScanGen against baseline on the paper-size simulated cohort, and the
# grid checks (issue 12): runs per minute of the ensemble trainer against the same configs one by one
# (target >= 20x on a GPU) with the quick and the full set's training settings, plus the full set's
# estimate. With FULL_GRID=1 the full parameter set's grid is also trained end to end on the
# paper-size cohort and timed (long: run it when the device time allows).
# Every report is also written to the folder given as $1. A third argument `grid` runs only the
# simulation and the grid checks.
# Usage: bash benchmarks/run_device_checks.sh OUT_DIR [DEVICE] [all|grid]
set -euo pipefail
out=${1:?usage: run_device_checks.sh OUT_DIR [DEVICE] [all|grid]}
device=${2:-cuda}
only=${3:-all}
mkdir -p "$out"
store=$(mktemp -d)/quick-seed0
export PYTHONUNBUFFERED=1
python3 - "$store" <<'PY' 2>&1 | tee "$out/simulate.txt"
import sys, time
from scangen.simulate import simulate_cohort
t0 = time.perf_counter()
simulate_cohort(sys.argv[1], size="quick", seed=0, models=["uni-sim", "hoptimus0-sim"], registered_tiles=False)
print(f"simulated quick cohort (uni-sim, hoptimus0-sim) in {time.perf_counter() - t0:.1f} s")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt" || true
# Grid: ensemble vs one by one on the device, 32 runs each way (baseline + ScanGen x 16 seeds).
python3 benchmarks/bench_grid.py --store "$store" --fm uni-sim --device "$device" --seeds 16 --workers 1 4 8 2>&1 | tee "$out/bench_grid_quick.txt"
python3 benchmarks/bench_grid.py --store "$store" --fm uni-sim --device "$device" --seeds 16 --params full --workers 1 4 8 2>&1 | tee "$out/bench_grid_full_settings.txt"
if [[ "${FULL_GRID:-0}" == 1 ]]; then
    python3 benchmarks/bench_grid.py --end-to-end --params full --size paper 2>&1 | tee "$out/full_grid_end_to_end.txt"
fi
if [[ "$only" == grid ]]; then
    exit 0
fi
python3 benchmarks/bench_training.py --store "$store" --fm uni-sim --device "$device" 2>&1 | tee "$out/bench_training_32.txt"
python3 benchmarks/bench_training.py --store "$store" --fm uni-sim --device "$device" --max-patches 128 2>&1 | tee "$out/bench_training_128.txt"
python3 benchmarks/bench_models.py --store "$store" --fm hoptimus0-sim --device "$device" --train-steps 200 --repeats 3 2>&1 | tee "$out/bench_models.txt"
python3 benchmarks/bench_device_runs.py --store "$store" --device "$device" --compare cpu --csv "$out/quick_runs.csv" 2>&1 | tee "$out/bench_device_runs.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_losses.py tests/test_models_*.py tests/test_train_config.py tests/test_train_batching.py tests/test_train_trainer.py tests/test_train_bag_level.py tests/test_train_samplers.py tests/test_train_selection.py 2>&1 | tee "$out/pytest.txt"
# ScanGen against baseline at paper size (simulated), with the full set's training settings.
python3 benchmarks/bench_device_runs.py --size paper --fms uni-sim hoptimus0-sim --seeds 0 1 2 --params full \
    --device "$device" --repeats 1 --csv "$out/paper_runs.csv" 2>&1 | tee "$out/paper_runs.txt"
