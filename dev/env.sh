# shellcheck shell=bash
# Gives this shell the demo's environment: `source dev/env.sh` (after `source .venv/bin/activate`).
# AIRFLOW_HOME, the DAG / plugin / spec / filter folders, the lake (CJA_AUDIENCES_HOME) and the
# emulator connections (for `make emulator` on 127.0.0.1:8765); see dev/env.py.
_cja_repo="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_cja_python="${VIRTUAL_ENV:-$_cja_repo/.venv}/bin/python"
eval "$(cd "$_cja_repo" && "$_cja_python" -m dev.env)"
unset _cja_repo _cja_python
