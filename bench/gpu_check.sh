#!/usr/bin/env bash
# One prepared GPU check (under 5 minutes on one H100/H200): the benchmark figures on CUDA, with the card's name.
# Usage on a machine with a CUDA build of torch: bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('card', torch.cuda.get_device_name())"
timeout 280 python bench/run.py --quick --device cuda
