#!/usr/bin/env bash
# Runs on every Cloud TPU VM worker, from the code directory; launch/launch.py sends it there
# with `gcloud ... ssh --worker=all`. Subcommands:
#   setup                   make the venv and install requirements.txt with the TPU build of jax,
#                           and launch/requirements-gcs.txt (gcsfs, for the gs:// workdir)
#   run NAME PYTHON_ARGS... start `python PYTHON_ARGS...` detached; output to $BT_LOG_DIR/NAME.log
#   logs [--follow] [--lines N] NAME   print this worker's log, each line prefixed with the host
#   stop                    stop the run this worker started (SIGTERM, then SIGKILL after 60 s)
set -euo pipefail

BT_VENV=${BT_VENV:-$HOME/bt_venv}
BT_LOG_DIR=${BT_LOG_DIR:-$HOME/bt_logs}
BT_PYTHON=${BT_PYTHON:-python3.11}
# torch is only needed for conversion; the CPU wheels keep the install small on TPU VMs.
BT_PIP_EXTRA_ARGS=${BT_PIP_EXTRA_ARGS:---extra-index-url https://download.pytorch.org/whl/cpu}
PID_FILE="$BT_LOG_DIR/current.pid"

die() {
  echo "tpu_worker.sh on $(hostname): $*" >&2
  exit 1
}

setup() {
  if ! command -v "$BT_PYTHON" >/dev/null 2>&1; then
    sudo apt-get update -q
    sudo apt-get install -y -q "$BT_PYTHON" "$BT_PYTHON-venv"
  fi
  [[ -x "$BT_VENV/bin/python" ]] || "$BT_PYTHON" -m venv "$BT_VENV"
  local requirements
  requirements=$(mktemp)
  # requirements.txt pins the CPU jax; the TPU build of the same version brings libtpu.
  sed -e 's/^jax==/jax[tpu]==/' requirements.txt >"$requirements"
  "$BT_VENV/bin/python" -m pip install -q --upgrade pip
  # The workdir is on gs:// (the launcher insists), whose file system needs gcsfs: one resolve for both.
  # shellcheck disable=SC2086  # BT_PIP_EXTRA_ARGS holds several words on purpose
  "$BT_VENV/bin/python" -m pip install -q -r "$requirements" -r launch/requirements-gcs.txt $BT_PIP_EXTRA_ARGS
  rm -f "$requirements"
  "$BT_VENV/bin/python" -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__)'
}

running_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid=$(<"$PID_FILE")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

run() {
  [[ $# -ge 2 ]] || die "usage: run NAME PYTHON_ARGS..."
  local name=$1 pid
  shift
  if pid=$(running_pid); then
    die "a run is still going (pid $pid); stop it first (launch.py tpu stop)"
  fi
  mkdir -p "$BT_LOG_DIR"
  ln -sfn "$name.log" "$BT_LOG_DIR/current.log"
  echo "=== $(date -u +%FT%TZ) start: $*" >>"$BT_LOG_DIR/$name.log"
  # setsid: the run gets its own process group (stop kills all of it) and survives the ssh session.
  nohup setsid "$BT_VENV/bin/python" "$@" >>"$BT_LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  echo "$(hostname): started pid $! -> $BT_LOG_DIR/$name.log"
}

logs() {
  local follow=0 lines=100 name=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --follow) follow=1 ;;
      --lines) lines=$2; shift ;;
      *) name=$1 ;;
    esac
    shift
  done
  local log="$BT_LOG_DIR/${name:-current}.log" host
  [[ -e "$log" ]] || die "no log $log"
  host=$(hostname)
  if [[ $follow == 1 ]]; then
    tail -n "$lines" -F "$log" | sed -u "s|^|[$host] |"
  else
    tail -n "$lines" "$log" | sed "s|^|[$host] |"
  fi
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    echo "$(hostname): nothing running"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  echo "$(hostname): stopped pid $pid"
}

command=${1:-}
[[ $# -gt 0 ]] && shift
case $command in
  setup) setup "$@" ;;
  run) run "$@" ;;
  logs) logs "$@" ;;
  stop) stop "$@" ;;
  *) die "usage: tpu_worker.sh {setup|run NAME ARGS...|logs [--follow] [--lines N] NAME|stop}" ;;
esac
