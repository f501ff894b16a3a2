#!/usr/bin/env bash
# recstack: `./run.sh` sets up .venv and runs the whole pipeline on the default data;
# `./run.sh test` sets up and runs the checks and tests; `./run.sh lab` serves the notebooks in JupyterLab;
# `./run.sh --help` lists the stages.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
# GPU machines get the CUDA alternative (faiss-gpu-cu12 instead of faiss-cpu; never both).
# Override with RECSTACK_REQUIREMENTS=requirements.txt|requirements-gpu.txt.
if [ -z "${RECSTACK_REQUIREMENTS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    RECSTACK_REQUIREMENTS=requirements-gpu.txt
  else
    RECSTACK_REQUIREMENTS=requirements.txt
  fi
fi

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "recstack needs Python >= 3.11"'
    echo "[setup] creating $VENV" >&2
    "$PY" -m venv "$VENV"
  fi
  # re-install only when the requirements (or the package metadata) change
  local stamp
  stamp=$(cat "$RECSTACK_REQUIREMENTS" pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$RECSTACK_REQUIREMENTS $stamp" ]; then
    echo "[setup] installing $RECSTACK_REQUIREMENTS into $VENV (once per change of the file)" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$RECSTACK_REQUIREMENTS"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    echo "$RECSTACK_REQUIREMENTS $stamp" > "$VENV/.installed"
  fi
}

run_tests() {
  local py="$VENV/bin/python"
  echo "[test] ruff" >&2
  "$VENV/bin/ruff" check src tests bench
  "$VENV/bin/ruff" format --check src tests bench
  echo "[test] import-linter (data flows one way)" >&2
  "$VENV/bin/lint-imports" --no-cache
  echo "[test] pytest" >&2
  set +e
  "$py" -m pytest "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    echo "[test] pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
  fi
  exit "$rc"
}

# offline by design: models load from local paths, never from a hub
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

case "${1:-}" in
  -h|--help|help)
    setup
    exec "$VENV/bin/python" -m recstack --help
    ;;
  test)
    shift
    setup
    run_tests "$@"
    ;;
  lab)
    shift
    setup
    # the project's kernel, registered inside .venv (never in ~/.local), named as the notebooks name it
    if [ ! -f "$VENV/share/jupyter/kernels/recstack/kernel.json" ]; then
      "$VENV/bin/python" -m ipykernel install --sys-prefix --name recstack --display-name "recstack (.venv)" >&2
    fi
    # no "get notified about Jupyter news?" prompt: the lab's settings defaults (jupyter/overrides.json)
    mkdir -p "$VENV/share/jupyter/lab/settings"
    cp jupyter/overrides.json "$VENV/share/jupyter/lab/settings/overrides.json"
    # offline: no news feed, no update check, a read-only extension manager (jupyter/jupyter_lab_config.json);
    # no browser: open the URL it prints (extra arguments pass through, e.g. --port=8899)
    root=()
    [ "$(id -u)" -eq 0 ] && root=(--allow-root)  # containers often run as root; Jupyter refuses it otherwise
    exec "$VENV/bin/jupyter" lab --config="$PWD/jupyter/jupyter_lab_config.json" --no-browser \
      --ServerApp.root_dir="$PWD/notebooks" "${root[@]}" "$@"
    ;;
  "")
    setup
    # the whole pipeline on the default (real) data, one config per track
    for cfg in configs/mmctr_movielens.yaml configs/tencentgr_movielens.yaml; do
      "$VENV/bin/python" -m recstack all --config "$cfg"
    done
    ;;
  *)
    setup
    exec "$VENV/bin/python" -m recstack "$@"
    ;;
esac
