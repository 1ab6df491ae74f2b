#!/usr/bin/env bash
# Creates .venv (Python >= 3.12, as mitmproxy 12 needs) and installs Corral into it, on first use and
# again whenever pyproject.toml changes. Usage: scripts/bootstrap.sh [extras]   e.g. "test"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
extras="${1:-}"

python_ok() {  # a pyenv shim may exist and still fail, so run it
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local candidate
  if [ -n "${CORRAL_PYTHON:-}" ]; then
    python_ok "$CORRAL_PYTHON" && { echo "$CORRAL_PYTHON"; return 0; }
    echo "corral: CORRAL_PYTHON=$CORRAL_PYTHON is not a Python >= 3.12" >&2; return 1
  fi
  for candidate in python3.13 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
      command -v "$candidate"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for candidate in $(ls -d "$(pyenv root)"/versions/3.* 2>/dev/null | sort -rV); do
      if [ -x "$candidate/bin/python3" ] && python_ok "$candidate/bin/python3"; then
        echo "$candidate/bin/python3"; return 0
      fi
    done
  fi
  echo "corral: no Python >= 3.12 found (tried python3.13, python3.12, python3 and pyenv versions)." >&2
  echo "corral: install one (e.g. 'apt-get install python3.12' or 'pyenv install 3.13') or set CORRAL_PYTHON." >&2
  return 1
}

if [ ! -x "$venv/bin/python" ] || ! python_ok "$venv/bin/python"; then
  py="$(find_python)"
  echo "corral: creating $venv with $("$py" --version 2>&1)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi

stamp="$venv/.corral-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "corral: installing dependencies into .venv (first run takes a minute)" >&2
  spec="$root"
  [ -n "$extras" ] && spec="$root[$extras]"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -e "$spec" >&2
  touch "$stamp"
fi
