#!/usr/bin/env bash
# Every chapter of the book on one GPU, against a time budget, with the time each one took.
#
#   bash benchmarks/gpu_notebooks.sh                   # PROFILE=demo on the GPU: the whole book in under 10 minutes
#   PROFILE=smoke bash benchmarks/gpu_notebooks.sh     # dry run (a CPU is enough: seconds per chapter)
#   PROFILE=gpu BUDGET_S=4800 bash benchmarks/gpu_notebooks.sh   # the one-GPU profile: about an hour, projected
#
# Why demo and not paper: PROFILE=paper pre-trains for the paper's 300k steps (about 7 hours on one
# H200 at 0.084 s/step, README), which no 10-minute run can hold. demo is the book's own size; on a GPU
# its data build, its pre-training and every chapter fit in the budget, and the times show where a GPU
# helps. The same steps as `make book`, timed one by one:
#   1. the report corpus and the rendered radiographs (refers-lite data reports / data build);
#   2. the profile's pre-trained REFERS that the chapters share (refers_lite.experiments.pretrained_refers);
#   3. every notebooks/*.ipynb with papermill (-p PROFILE -p DATA_DIR -p RUNS_DIR), JOBS at a time.
# Each step runs under `timeout` with what is left of BUDGET_S (default 570 s): a step that would
# overrun is stopped and reported, notebooks not started in time are reported as skipped, and the
# script ends inside the budget whatever happens. Exit status: 0 when every step finished.
#
# Needs: the project's dependencies in the Python it runs (`pip install -e ".[dev,book]"` into an
# environment with a CUDA torch, or this checkout's .venv) and the assets (`make assets`).
# Settings (environment): PROFILE, BUDGET_S, JOBS (default 2), PYTHON, NOTEBOOKS (default: every
# notebooks/*.ipynb), OUT (default _build/gpu_notebooks/out: report.txt, times.tsv and notebooks.tgz
# with the executed notebooks and every step's log), WORK (default _build/gpu_notebooks: the data,
# the runs, the notebooks' working folders).
set -u -o pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-demo}
BUDGET_S=${BUDGET_S:-570}
JOBS=${JOBS:-2}
WORK=${WORK:-_build/gpu_notebooks}
OUT=${OUT:-$WORK/out}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
NOTEBOOKS=${NOTEBOOKS:-$(ls notebooks/*.ipynb)}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)
DATA_DIR="$WORK/data/synthetic"
RUNS_DIR="$WORK/runs"
rm -rf "$WORK/executed" "$WORK/logs"
mkdir -p "$RUNS_DIR" "$WORK/executed" "$WORK/logs"
TIMES="$OUT/times.tsv"
printf "step\tseconds\tstatus\n" > "$TIMES"
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }

# run NAME COMMAND...: one timed step under what is left of the budget; its output goes to $WORK/logs/NAME.log
run() {
  local name=$1; shift
  local budget t0 rc status
  budget=$(left)
  if [ "$budget" -lt 5 ]; then
    printf "%s\t-\tskipped (budget spent)\n" "$name" >> "$TIMES"; echo "== $name: skipped (budget spent)"; return 1
  fi
  echo "== $name (at most ${budget} s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$budget" "$@" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="stopped at the budget (${budget} s)" ;;
    *) status="failed (exit $rc; logs/$name.log)"; tail -n 15 "$WORK/logs/$name.log" ;;
  esac
  printf "%s\t%s\t%s\n" "$name" "$(( $(date +%s) - t0 ))" "$status" >> "$TIMES"
  echo "== $name: $(( $(date +%s) - t0 )) s, $status"
  [ $rc -eq 0 ]
}

{
  echo "profile $PROFILE, budget $BUDGET_S s, $JOBS notebook(s) at a time, python $PYTHON"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no NVIDIA GPU visible"
  $PYTHON -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
} | tee "$OUT/report.txt"

ok=1
run data_reports $PYTHON -m refers_lite data reports --out "$WORK/data/iu_xray" || ok=0
run data_build $PYTHON -m refers_lite data build --profile "$PROFILE" --out "$DATA_DIR" --workers "$(nproc)" || ok=0
run pretrained_refers $PYTHON -c "from refers_lite.experiments import pretrained_refers as p; \
print(p('$PROFILE', '$DATA_DIR', out='$RUNS_DIR/experiments/$PROFILE', progress=False))" || ok=0

# The notebooks, JOBS at a time, each in a fresh working folder.
notebook() {
  local nb=$1 name
  name=$(basename "$nb" .ipynb)
  rm -rf "$WORK/nb_$name" && mkdir -p "$WORK/nb_$name"
  run "$name" $PYTHON -m papermill --no-progress-bar --cwd "$WORK/nb_$name" -k python3 -p PROFILE "$PROFILE" \
      -p DATA_DIR "$DATA_DIR" -p RUNS_DIR "$RUNS_DIR" "$nb" "$WORK/executed/$name.ipynb"
}
if [ $ok = 1 ]; then
  for nb in $NOTEBOOKS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
    notebook "$nb" &
  done
  wait  # every notebook's status is in times.tsv
else
  for nb in $NOTEBOOKS; do printf "%s\t-\tskipped (data or pre-training failed)\n" "$(basename "$nb" .ipynb)" >> "$TIMES"; done
fi

{
  echo
  echo "total $(( $(date +%s) - start )) s of a $BUDGET_S s budget"
  column -t -s $'\t' "$TIMES" 2>/dev/null || cat "$TIMES"
} | tee -a "$OUT/report.txt"
tar czf "$OUT/notebooks.tgz" -C "$WORK" executed logs
grep -q -v -P "\tok$" <(tail -n +2 "$TIMES") && ok=0
[ $ok = 1 ]
