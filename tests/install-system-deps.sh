#!/bin/sh
# System packages the test suite drives for real; installed only when missing, so a
# second run changes nothing. Needs root (or sudo) and Debian's package registry.
set -eu

missing=""
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$missing postgresql"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
# The README's commands make a virtual environment: Debian's python3 needs python3-venv.
python3 -c "import ensurepip" >/dev/null 2>&1 || missing="$missing python3-venv"

if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # shellcheck disable=SC2086 # one word per package
    $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# Node's ws package for the Node client tests, pinned by tests/node/package-lock.json.
cd "$(dirname "$0")/node"
[ -d node_modules/ws ] || npm ci --no-audit --no-fund --loglevel=error
