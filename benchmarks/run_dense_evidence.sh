#!/usr/bin/env bash
# Runs the pre-registered evidence of issue 32 (benchmarks/preregistered/dense_small_data.md) in its
# order, one command at a time; a cut run resumes (each protocol keeps a ledger; a finished step is
# skipped). Output under benchmarks/results/dense/. Run it from an install of the commit that added the
# pre-registration, so edits to the working tree cannot reach the runs, e.g.
#   git worktree add /tmp/frozen-dense COMMIT && pip install --no-deps --target /tmp/frozen-dense-site /tmp/frozen-dense
#   (cd /tmp/frozen-dense && PYTHONPATH=/tmp/frozen-dense-site bash benchmarks/run_dense_evidence.sh)
# with benchmarks/results/dense linked to this checkout's.
#
#   bash benchmarks/run_dense_evidence.sh              # everything (about 1.5 hours on two CPU cores)
#   bash benchmarks/run_dense_evidence.sh S-augment    # only these steps
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/dense
FOLDER=$OUT/scenes
mkdir -p "$OUT"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(S-augment D-augment S-lr S-compress D-lr)
S=(--data "$FOLDER" --image-size 32 --epochs 30 --batch-size 32)
D=(--dataset fashion-denoise --train-size 500 --test-size 2000 --epochs 30 --batch-size 32)

# shellcheck source=steps.sh
source benchmarks/steps.sh

peak_rule() {  # peak_rule NAME ARGS...: zoo:peak-rule against onecycle, 10 paired seeds, no augmentation
  local file=$OUT/$1.json; shift
  if [ -f "$file" ]; then echo "== $file: done, skipped"; return; fi
  echo "== $file: evaluate $*  ($(date -u +%H:%M:%S))"
  policysearch evaluate "$@" --augment none --schedule onecycle,zoo:peak-rule --seeds 10 --seed 1000 --workers 2 --json \
    --no-progress > "$file.partial"
  mv "$file.partial" "$file"
}

[ -d "$FOLDER" ] || python benchmarks/make_scene_folder.py --out "$FOLDER" --train 500 --test 1000
for step in "${STEPS[@]}"; do
  case $step in
    S-augment) protocol S-augment augment "${S[@]}" ;;
    D-augment) protocol D-augment augment "${D[@]}" ;;
    S-lr) peak_rule S-lr "${S[@]}" ;;
    S-compress)
      teacher "$OUT/S-teacher.pt" "${S[@]}"
      protocol S-compress compress --checkpoint "$OUT/S-teacher.pt" --data "$FOLDER" --image-size 32 \
        --batch-size 32 --flops 0.5 ;;
    D-lr) peak_rule D-lr "${D[@]}" ;;
    *) echo "unknown step $step (S-augment D-augment S-lr S-compress D-lr)" >&2; exit 2 ;;
  esac
done
