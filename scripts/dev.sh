#!/usr/bin/env bash
# Sets up the project (virtual environment, Python packages, Azurite and axe-core from npm; for
# `setup` and `test` also Debian's chromium, which the browser tests drive) and then runs the
# product locally (`run`), the whole test suite (`test`) or just the linters (`lint`).
# Idempotent: a second call only reinstalls what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY="$VENV/bin/python"

log() { printf '==> %s\n' "$*" >&2; }

find_python() {
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required (python3.11 not found)" >&2; return 1
}

stamp_matches() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# pip, quietly. A pip configured with local mirrors (extra-index-url file://...) warns once per
# package a mirror lacks; those lines are dropped, everything else pip says is shown.
pip_install() {
  local python="$1" requirements="$2"
  { "$python" -m pip install --quiet --disable-pip-version-check -r "$requirements" 2>&1 1>&3 \
      | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2; } 3>&1
}

setup() {
  local python requirements_sha node_sha
  if [ ! -x "$PY" ]; then
    python="$(find_python)"
    log "creating virtual environment $VENV ($("$python" --version))"
    "$python" -m venv "$VENV"
  fi
  requirements_sha="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
  if ! stamp_matches "$VENV/.requirements.sha" "$requirements_sha"; then
    log "installing Python packages (requirements-dev.txt)"
    pip_install "$PY" requirements-dev.txt
    echo "$requirements_sha" > "$VENV/.requirements.sha"
  fi
  command -v npm >/dev/null 2>&1 || { echo "error: Node.js 20 with npm is required for Azurite" >&2; exit 1; }
  node_sha="$(sha256sum package-lock.json | cut -d' ' -f1)"
  if [ ! -x node_modules/.bin/azurite ] || ! stamp_matches node_modules/.package-lock.sha "$node_sha"; then
    log "installing Azurite and axe-core from npm (package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$node_sha" > node_modules/.package-lock.sha
  fi
  # The infrastructure checks (checkov, pycep-parser) pin packages the test tools cannot share,
  # so they live in a venv of their own inside .venv.
  local infra_sha
  infra_sha="$(sha256sum requirements-infra.txt | cut -d' ' -f1)"
  if [ ! -x "$VENV/infra/bin/checkov" ] || ! stamp_matches "$VENV/infra/.requirements.sha" "$infra_sha"; then
    log "installing the infrastructure checks (requirements-infra.txt) into $VENV/infra"
    [ -x "$VENV/infra/bin/python" ] || "$PY" -m venv "$VENV/infra"
    pip_install "$VENV/infra/bin/python" requirements-infra.txt
    echo "$infra_sha" > "$VENV/infra/.requirements.sha"
  fi
  # The Bicep parser the tests read the templates with: a newer pycep-parser than checkov's pin,
  # one that parses `extension` declarations, so it gets a venv of its own too.
  local parse_sha
  parse_sha="$(sha256sum requirements-infra-parse.txt | cut -d' ' -f1)"
  if [ ! -x "$VENV/infra-parse/bin/python" ] || ! stamp_matches "$VENV/infra-parse/.requirements.sha" "$parse_sha"; then
    log "installing the Bicep parser (requirements-infra-parse.txt) into $VENV/infra-parse"
    [ -x "$VENV/infra-parse/bin/python" ] || "$PY" -m venv "$VENV/infra-parse"
    pip_install "$VENV/infra-parse/bin/python" requirements-infra-parse.txt
    echo "$parse_sha" > "$VENV/infra-parse/.requirements.sha"
  fi
}

# Debian's Chromium, which the browser tests (tests/browser) drive through Playwright; Playwright's
# own browser download is never used. $1: the browser's path (a stand-in path tries this out).
CHROMIUM=/usr/bin/chromium
ensure_chromium() {
  local browser="${1:-$CHROMIUM}" output sudo=""
  [ -x "$browser" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo"
    else
      echo "error: $browser is missing; the browser tests need Debian's chromium package. As root:" >&2
      echo "  apt-get update && apt-get install -y --no-install-recommends chromium fonts-liberation" >&2
      return 1
    fi
  fi
  log "installing Debian's chromium (apt-get; the browser tests' headless browser)"
  output="$(mktemp)"
  if ! { $sudo apt-get update -qq &&
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium fonts-liberation; } >"$output" 2>&1; then
    tail -n 30 "$output" >&2
    rm -f "$output"
    echo "error: apt-get could not install chromium (its last lines are above)" >&2
    return 1
  fi
  rm -f "$output"
  [ -x "$browser" ] || { echo "error: chromium is installed, but $browser is missing" >&2; return 1; }
}

lint() {
  log "ruff"
  "$PY" -m ruff check .
  "$PY" -m ruff format --check .
  log "mypy"
  "$PY" -m mypy
  log "import rules (lint-imports)"
  "$VENV/bin/lint-imports" --no-cache --no-logo
}

case "${1:-}" in
  setup) setup; ensure_chromium ;;
  lint) setup; lint ;;
  test)
    setup
    ensure_chromium
    lint
    log "pytest (starts its own Azurite and local services)"
    "$PY" -m pytest "${@:2}"
    ;;
  run)
    setup
    if [ ! -f local.settings.json ]; then
      log "creating local.settings.json from local.settings.example.json"
      cp local.settings.example.json local.settings.json
    fi
    exec "$PY" scripts/local_stack.py "${@:2}"
    ;;
  *) echo "usage: scripts/dev.sh setup|run|test|lint" >&2; exit 2 ;;
esac
