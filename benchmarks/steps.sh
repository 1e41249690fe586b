# Shared by the pre-registered runners (sourced, with OUT set): one step each, skipped when done, resumed
# when cut.

protocol() {  # protocol NAME COMMAND...: a product command with its defaults, resumed if cut
  local name=$1; shift
  local dir=$OUT/$name
  # done: protocol.json (augment, schedule; compress from 9a2eeb6 on) or compress's summary.json
  if [ -f "$dir/protocol.json" ] || [ -f "$dir/summary.json" ]; then echo "== $name: done, skipped"; return; fi
  local resume=()
  [ -d "$dir" ] && resume=(--resume)
  echo "== $name: $* --seed 0 --workers 2 --out $dir ${resume[*]}  ($(date -u +%H:%M:%S))"
  policysearch "$@" --seed 0 --workers 2 --out "$dir" "${resume[@]}"
}

teacher() {  # teacher FILE ARGS...: the network compress starts from
  local file=$1; shift
  if [ -f "$file" ]; then echo "== teacher $file: done, skipped"; return; fi
  echo "== teacher $file: train $*  ($(date -u +%H:%M:%S))"
  policysearch train "$@" --seed 0 --save "$file" --no-progress
}
