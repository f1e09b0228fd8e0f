#!/usr/bin/env bash
# Run the training and transfer steps end to end at tiny scale on whatever device is present
# (a GPU when there is one: bf16 autocast, CUDA kernels), then print each step's metrics.
# Usage: scripts/gpu_smoke.sh DATA_DIR OUT_DIR
#   DATA_DIR holds `ds/` (a build-dataset output) and `eval/` (evaluation shards), e.g. from
#   `mawsflow demo-corpus` + `mawsflow build-dataset all`.
set -euo pipefail
data=$1
out=$2
py=${PYTHON:-python3}
step() { echo "== mawsflow $*" >&2; "$py" -m mawsflow.cli "$@"; }
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
step mae --preset tiny --set data.train="$data/ds" --set output="$out/mae"
step wsp --preset tiny --set data.train="$data/ds" --set output="$out/wsp" \
  --set init=mae --set init_checkpoint="$out/mae"
step finetune --preset tiny --set init_checkpoint="$out/wsp" --set data.train="$data/eval" \
  --set output="$out/finetune" --test-set "$data/eval"
step lowshot --preset tiny --set init_checkpoint="$out/wsp" --set data.train="$data/eval" \
  --set output="$out/lowshot"
step linear-probe --model "$out/wsp" --dataset "$data/eval" --output "$out/linear-probe"
for name in mae wsp finetune lowshot linear-probe; do
  echo "$name: $(cat "$out/$name/metrics.json" | tr -d '\n' | cut -c1-600)"
done
