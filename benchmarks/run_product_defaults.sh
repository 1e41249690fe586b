#!/usr/bin/env bash
# Runs the pre-registered evidence of issue 31 in its order, one command at a time; a cut run resumes where
# it stopped (each protocol keeps a ledger; a step whose protocol.json / JSON exists is skipped). Output
# under benchmarks/results/product/.
# - Z1-Z4, R1-R3 (benchmarks/preregistered/product_defaults.md): from an install of commit 9a2eeb6;
# - H2, H3, H5 (benchmarks/preregistered/held_out_decision.md), P1-P6 (zero_shot_cheap_probe.md), H1
#   (held_out_schedule.md), Q5, Q7-Q10 (zero_shot_power.md), D1-D3 (held_out_decision_seeds.md) and K5, K11-K16
#   (zero_shot_layer_kinds.md), E1-E3 (held_out_decision_bar.md), F1-F3 (held_out_decision_scatter.md): each
#   from an install of the commit that added its file.
# For example
#   git worktree add /tmp/frozen 9a2eeb6 && pip install --no-deps --target /tmp/frozen-site /tmp/frozen
#   (cd /tmp/frozen && PYTHONPATH=/tmp/frozen-site bash benchmarks/run_product_defaults.sh R1)
# with benchmarks/results/product linked to this checkout's.
#
#   bash benchmarks/run_product_defaults.sh            # Z1-Z4, R2, R3, R1 (hours on two CPU cores)
#   bash benchmarks/run_product_defaults.sh Z1 R2      # only these steps
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/product
FOLDER=$OUT/fashion-rgb32
mkdir -p "$OUT"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(Z1 Z2 Z3 Z4 R2 R3 R1)

# shellcheck source=steps.sh
source benchmarks/steps.sh

zero_shot() {  # zero_shot ID TASK SEEDS [FIRST_SEED]: the shipped zoo:peak-rule against onecycle, plain and at
  # equal images, on seeds FIRST_SEED (1000) onwards
  local file=$OUT/$1-zero-shot.json first=${4:-1000}
  if [ -f "$file" ]; then echo "== $1: done, skipped"; return; fi
  echo "== $1: zero-shot on $2, $3 seeds from $first ($(date -u +%H:%M:%S))"
  python benchmarks/schedule_zero_shot.py --task "$2" --controller zoo:peak-rule \
    --arms onecycle,onecycle@equal-images --seeds "$3" --seed "$first" --out "$file"
}

for step in "${STEPS[@]}"; do
  case $step in
    Z1|Z2|Z3|Z4) zero_shot "$step" "$step" 10 ;;
    # The cheaper probe's check (benchmarks/preregistered/zero_shot_cheap_probe.md): task Zn as Pn; P3's
    # digits test split (359 images) takes 90 seeds. From an install of the commit that added it.
    P3) zero_shot P3 Z3 90 ;;
    P1|P2|P4|P5|P6) zero_shot "$step" "Z${step#P}" 10 ;;
    # Seeds from each task's scatter (benchmarks/preregistered/zero_shot_power.md): Z5 again on fresh seeds, and
    # four new tasks. From an install of the commit that added it.
    Q5) zero_shot Q5 Z5 72 1100 ;;
    Q7) zero_shot Q7 Z7 20 ;;
    Q8) zero_shot Q8 Z8 24 ;;
    Q9) zero_shot Q9 Z9 93 ;;
    Q10) zero_shot Q10 Z10 100 ;;
    R1)
      R1=(--dataset fashion-mnist --train-size 2000 --model resnet --epochs 30)
      protocol R1-augment augment "${R1[@]}"
      protocol R1-schedule schedule "${R1[@]}"
      teacher "$OUT/R1-teacher.pt" "${R1[@]}"
      protocol R1-compress compress --checkpoint "$OUT/R1-teacher.pt" --train-size 2000 --flops 0.5 ;;
    R2)
      R2=(--dataset digits --train-size 500 --model cnn --epochs 60)
      protocol R2-augment augment "${R2[@]}"
      protocol R2-schedule schedule "${R2[@]}"
      teacher "$OUT/R2-teacher.pt" "${R2[@]}"
      protocol R2-compress compress --checkpoint "$OUT/R2-teacher.pt" --train-size 500 --flops 0.5 ;;
    R3)
      [ -d "$FOLDER" ] || python benchmarks/make_image_folder.py --out "$FOLDER"
      R3=(--data "$FOLDER" --model benchmarks/user_models.py:small_cnn --epochs 20)
      protocol R3-augment augment "${R3[@]}"
      protocol R3-schedule schedule "${R3[@]}"
      teacher "$OUT/R3-teacher.pt" "${R3[@]}"
      protocol R3-compress compress --checkpoint "$OUT/R3-teacher.pt" --data "$FOLDER" --flops 0.5 ;;
    # The held-out decision's check (benchmarks/preregistered/held_out_decision.md), from an install of the
    # commit that added it.
    H2)
      R2=(--dataset digits --train-size 500 --model cnn --epochs 60)
      protocol H2-augment augment "${R2[@]}"
      teacher "$OUT/R2-teacher.pt" "${R2[@]}"
      protocol H2-compress compress --checkpoint "$OUT/R2-teacher.pt" --train-size 500 --flops 0.5 ;;
    H3)
      [ -d "$FOLDER" ] || python benchmarks/make_image_folder.py --out "$FOLDER"
      R3=(--data "$FOLDER" --model benchmarks/user_models.py:small_cnn --epochs 20)
      protocol H3-augment augment "${R3[@]}"
      teacher "$OUT/R3-teacher.pt" "${R3[@]}"
      protocol H3-compress compress --checkpoint "$OUT/R3-teacher.pt" --data "$FOLDER" --flops 0.5 ;;
    H5) protocol H5-augment augment --dataset digits --train-size 1000 --model resnet --epochs 20 ;;
    # The schedule protocol with the held-out decision (benchmarks/preregistered/held_out_schedule.md).
    H1) protocol H1-schedule schedule --dataset fashion-mnist --train-size 2000 --model resnet --epochs 30 ;;
    # The rule that decides only for the kinds of nets its table gained on (benchmarks/preregistered/
    # zero_shot_layer_kinds.md): Z5 again on fresh seeds, and six new tasks with seeds from a pilot.
    K5) zero_shot K5 Z5 20 1200 ;;
    K11) zero_shot K11 Z11 20 ;;
    K12) zero_shot K12 Z12 20 ;;
    K13) zero_shot K13 Z13 64 ;;
    K14) zero_shot K14 Z14 100 ;;
    K15) zero_shot K15 Z15 20 ;;
    K16) zero_shot K16 Z16 100 ;;
    # Three seeds per finalist of the held-out decision (benchmarks/preregistered/held_out_decision_seeds.md).
    D1|D2|D3)
      case $step in
        D1) D=(--dataset fashion-mnist --train-size 1000 --model mlp --epochs 20) ;;
        D2) D=(--dataset fashion-mnist --train-size 3000 --model cnn --epochs 6) ;;
        D3) D=(--dataset digits --val-size 400 --model cnn --epochs 40) ;;
      esac
      protocol "$step-augment" augment "${D[@]}"
      protocol "$step-schedule" schedule "${D[@]}" ;;
    # A lower bar for the held-out decision (benchmarks/preregistered/held_out_decision_bar.md).
    E1|E2|E3)
      case $step in
        E1) E=(--dataset digits --train-size 600 --model mlp --epochs 30) ;;
        E2) E=(--dataset fashion-mnist --train-size 1500 --model vit --epochs 10) ;;
        E3) E=(--dataset fashion-mnist --train-size 1200 --model benchmarks/user_models.py:lenet --epochs 12) ;;
      esac
      protocol "$step-augment" augment "${E[@]}"
      protocol "$step-schedule" schedule "${E[@]}" ;;
    # A held-out decision that counts the seeds' scatter (benchmarks/preregistered/held_out_decision_scatter.md).
    F1|F2|F3)
      case $step in
        F1) F=(--dataset fashion-mnist --train-size 1000 --model benchmarks/user_models.py:lenet --epochs 15) ;;
        F2) F=(--dataset digits --model benchmarks/user_models.py:mlp_dropout --epochs 40) ;;
        F3) F=(--dataset fashion-mnist --train-size 1000 --model vit --epochs 8) ;;
      esac
      protocol "$step-augment" augment "${F[@]}"
      protocol "$step-schedule" schedule "${F[@]}" ;;
    *) echo "unknown step $step (Z1-Z4, R1-R3, H1-H3, H5, P1-P6, Q5, Q7-Q10, D1-D3, K5, K11-K16, E1-E3, F1-F3)" >&2; exit 2 ;;
  esac
done
