#!/usr/bin/env bash
# GPU reproducibility check (issue 15, README "Reproducibility"): both default configs from embed's outputs on,
# twice with deterministic=true (PAIRS=det) or twice without (PAIRS=def), side by side on one GPU; prints each
# submission's sha256, the valid figures and the stage times. Folders are prepared on a CPU machine up to
# `embed` (its MiniLM is too large to travel) and carried in .gpu/ (64 MiB a call: one pair per call):
#   mkdir -p .gpu/in_det && cp -r input/movielens input/movielens_tgr .gpu/in_det/
#   find .gpu/in_det -exec touch -h -d '2026-01-01 00:00:00' {} +
#   ./run.sh embed -c configs/<cfg>.yaml deterministic=true output_root=$PWD/.gpu/out input_root=$PWD/.gpu/in_det
#   (the same into .gpu/nd and .gpu/in_nd without deterministic=true for the default pair), then on the GPU
#   PAIRS=det bash bench/device_determinism.sh   # or PAIRS=def; PYTHONPATH must reach the dependencies
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/device_determinism}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
run() {  # run <name> <prepared output folder> <its input folder> [overrides]: both tracks, one after the other, in /tmp/<name>
  local name=$1 src=$2; shift 2
  local inp=$1; shift
  rm -rf "/tmp/$name" "/tmp/in_$name" && cp -r "$src" "/tmp/$name" && cp -r "$inp" "/tmp/in_$name"
  # the mtimes prepare's input fingerprint reads, as set before the CPU run: build, prepare, embed are skipped
  find "/tmp/in_$name" -exec touch -h -d '2026-01-01 00:00:00' {} +
  for cfg in mmctr_movielens tencentgr_movielens; do
    python3 -m recstack all --config "configs/$cfg.yaml" output_root="/tmp/$name" input_root="/tmp/in_$name" "$@" \
      >"$OUT/$name.$cfg.log" 2>&1 || echo "FAILED $name $cfg (rc $?)"
  done
}
t0=$(date +%s)
PAIRS=${PAIRS:-det}
names=()
if [[ " $PAIRS " == *" det "* ]]; then
  run detA .gpu/out .gpu/in_det deterministic=true & run detB .gpu/out .gpu/in_det deterministic=true &
  names+=(detA detB)
fi
if [[ " $PAIRS " == *" def "* ]]; then  # the default (deterministic=false) build lives in .gpu/in_nd
  OMP_NUM_THREADS=4 run defA .gpu/nd .gpu/in_nd & OMP_NUM_THREADS=4 run defB .gpu/nd .gpu/in_nd &
  names+=(defA defB)
fi
wait
echo "${names[*]}: $(( $(date +%s) - t0 )) s"
for name in "${names[@]}"; do
  echo "== $name"; (cd "/tmp/$name" && find . -path '*/ensemble/*' \( -name 'prediction.*' -o -name 'submission.*' \) \
    -exec sha256sum {} + | sort -k2)
  grep -h "stage(s) in\|ensemble   \|valid" "$OUT/$name".*.log | head -n 12
  grep -h "skipped" "$OUT/$name".*.log | cut -c1-60
  grep -h -i "deterministic implementation\|nondeterministic" "$OUT/$name".*.log | sort | uniq -c | head -n 5
done
python3 - <<'PY'
import json, os, pathlib
for name in [n for n in ("detA", "defA") if os.path.isdir(f"/tmp/{n}")]:
    for m in sorted(pathlib.Path(f"/tmp/{name}").glob("*/*/*/manifest.json")):
        d = json.loads(m.read_text())
        print(name, m.parent.relative_to(f"/tmp/{name}"), d.get("duration_s"))
PY
