#!/usr/bin/env bash
# The README's main job: the whole MAWS pipeline on this machine, on Fashion-MNIST.
#   1. set up (.venv, the Debian packages) with scripts/setup.sh;
#   2. write the demo corpus (Fashion-MNIST images with Instagram-style hashtag captions) and
#      the Fashion-MNIST evaluation dataset;
#   3. run pipelines/maws.py --local with the `demo` preset: the whole DAG (dataset build,
#      MAE, MAE→WSP, the WSP-from-scratch and MAE-alone baselines, the untrained control, LiT,
#      zero-shot, finetuning, linear probe, low-shot, report) under kfp.local with the local
#      launcher, ending with the report's table.
# Usage: scripts/demo.sh [WORK_DIR]   (default: ./demo-output; everything the run writes goes there)
# Extra pipeline parameters: MAWSFLOW_DEMO_PARAMS="name=value …" scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-demo-output}

scripts/setup.sh

mkdir -p "$work"
if [[ ! -f "$work/eval/test/manifest.json" ]]; then
  # The generator is deterministic; the test split's manifest is the last file it writes.
  echo "demo: writing the demo corpus and the evaluation dataset into $work"
  .venv/bin/mawsflow demo-corpus \
    --corpus-out "$work/corpus" --eval-out "$work/eval" \
    --num-images 5000 --eval-train-images 1000 --eval-test-images 500 \
    --samples-per-shard 1000 >/dev/null
fi

params=(
  preset=demo
  "raw_corpus=$work/corpus"
  "eval_dataset=$work/eval"
  eval_name=Fashion-MNIST
  zeroshot_templates=clothing
  shard_groups=2
  vocab_min_count=5
  loader_workers=0
  # Finetuning and the linear probe once per seed: the report shows mean ± std over three.
  "transfer_seeds=[0, 1, 2]"
  # Three seeds per K ∈ {1, 5, 10} instead of the paper's five, all of a model's nine runs in
  # one task: on a laptop each task pays a process start and the imports.
  "lowshot_seeds=[0, 1, 2]"
  lowshot_grouping=model
)
extra=()
read -r -a extra <<<"${MAWSFLOW_DEMO_PARAMS:-}"
args=()
for param in "${params[@]}" "${extra[@]}"; do args+=(--param "$param"); done

start=$SECONDS
.venv/bin/python pipelines/maws.py --local --baselines --control --work-dir "$work" "${args[@]}"
echo "demo: the pipeline ran in $((SECONDS - start)) s"
