#!/usr/bin/env bash
# Creates .venv (Python >= 3.12, as mitmproxy 12 needs) and installs what Corral needs into it, on first
# use and again whenever pyproject.toml changes. One progress line per step; the installer's own output
# goes to .venv/install.log, which a failure points to.
#   scripts/bootstrap.sh          runtime dependencies only (./corral runs the checkout: python -m addon.cli)
#   scripts/bootstrap.sh test     editable install with the test/lint extras (make venv)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
log="$venv/install.log"
extras="${1:-}"

say() { echo "corral: $*" >&2; }

python_ok() {  # a pyenv shim may exist and still fail, so run it
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local candidate
  if [ -n "${CORRAL_PYTHON:-}" ]; then
    python_ok "$CORRAL_PYTHON" && { echo "$CORRAL_PYTHON"; return 0; }
    say "CORRAL_PYTHON=$CORRAL_PYTHON is not a Python >= 3.12"; return 1
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
  say "no Python >= 3.12 found (tried python3.13, python3.12, python3 and pyenv versions)."
  say "install one (e.g. 'apt-get install python3.12' or 'pyenv install 3.13') or set CORRAL_PYTHON."
  return 1
}

logged() {  # run a step with its output in the log; on failure show where, and the last lines
  echo "+ $*" >>"$log"
  if ! "$@" >>"$log" 2>&1; then
    say "failed: $*"
    say "the installer's output is in $log; its last lines:"
    tail -n 12 "$log" | sed 's/^/    /' >&2
    exit 1
  fi
}

fresh() { [ -f "$1" ] && [ ! "$root/pyproject.toml" -nt "$1" ]; }
stamp="$venv/.corral-installed${extras:+-$extras}"
# Done already; the runtime is also satisfied by an install with extras (make venv).
if python_ok "$venv/bin/python" && { fresh "$stamp" || { [ -z "$extras" ] && fresh "$venv/.corral-installed-test"; }; }; then
  exit 0
fi

started=$SECONDS
if [ ! -x "$venv/bin/python" ] || ! python_ok "$venv/bin/python"; then
  py="$(find_python)"
  say "[1/2] creating .venv with $("$py" --version 2>&1)"
  rm -rf "$venv"
  "$py" -m venv "$venv" >/dev/null
fi
: >"$log"

pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)
if [ -n "$extras" ]; then
  say "[2/2] installing Corral with [$extras] into .venv (output: .venv/install.log)"
  logged "${pip[@]}" -e "$root[$extras]"
else
  # The runtime needs only the dependencies: ./corral runs the checkout itself (python -m addon.cli), so
  # nothing is built (no isolated build environment, no setuptools download).
  deps=()
  while IFS= read -r dep; do deps+=("$dep"); done < <("$venv/bin/python" -c '
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$root/pyproject.toml")
  say "[2/2] installing ${#deps[@]} dependencies (mitmproxy and its own) into .venv (output: .venv/install.log)"
  logged "${pip[@]}" "${deps[@]}"
fi
touch "$stamp"
say "installed in $((SECONDS - started)) s"
