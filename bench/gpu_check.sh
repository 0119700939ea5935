#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes on one H100/H200): the benchmark figures on CUDA, with the card's name;
# then the sharded path on CUDA: the planted model on 48 images in one process and as Ray tasks (one GPU each,
# one task per GPU; two tasks in turn where there is one GPU), and the two results folders compared table by
# table (bench/compare_tables.py; on CUDA the products are bf16 and sums run in another order, hence 1e-4).
# Usage on a machine with a CUDA build of torch (and ray for the sharded part): bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('card', torch.cuda.get_device_name())"
timeout 280 python bench/run.py --quick --device cuda
if ! python -c "import ray" 2>/dev/null; then
    echo "sharded check skipped: ray is not installed"
    exit 0
fi
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
workers=$(( gpus > 1 ? gpus : 2 ))
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run=(--model equivar_core.planted:planted --layers relu1,relu2 --n-images 48 --batch-size 8 --device cuda --quiet)
( export HOME="$out"                                   # the local Ray cluster's session files stay in $out
  timeout 150 python -m pipelines.cli run --out "$out/one" "${run[@]}" --workers 1
  timeout 200 python -m pipelines.cli run --out "$out/sharded" "${run[@]}" --workers "$workers" )
echo "sharded on CUDA: $workers Ray tasks on $gpus GPU(s) against one process"
python bench/compare_tables.py "$out/one" "$out/sharded" --atol 1e-4
