# Sourced by scripts/demo and scripts/test: create .venv if missing and install hwl into it.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >"$VENV/pip-upgrade.log" 2>&1 || cat "$VENV/pip-upgrade.log" >&2
fi
STAMP="$VENV/.hwl-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    # torch is capped in pyproject.toml (<2.14) so pip takes the local CPU build. `client` (grpcio): the tests
    # run a campaign through Ray Client (ray://).
    LOG="$VENV/pip-install.log"
    if ! "$VENV/bin/pip" install -q -e "$ROOT[test,client]" >"$LOG" 2>&1; then
        grep -v "^WARNING: Location" "$LOG" >&2
        echo "pip install failed; full log in $LOG" >&2
        exit 1
    fi
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
