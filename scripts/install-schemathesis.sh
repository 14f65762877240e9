#!/usr/bin/env bash
# Installs schemathesis, the OpenAPI fuzzer `make api-test` runs, into a virtualenv of the
# project's own (target/schemathesis-venv), only when that version is not there yet. Nothing is
# installed into the system's Python.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: a new version may check more, so it is taken on purpose, never by chance.
VERSION=4.32.5
VENV=target/schemathesis-venv
PYTHON=${PYTHON:-python3}

if [ -x "$VENV/bin/schemathesis" ] &&
  [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || {
  echo "error: $PYTHON is needed to run schemathesis (apt-get install python3 python3-venv)" >&2
  exit 1
}

echo "installing schemathesis $VERSION into $VENV"
rm -rf "$VENV"
if ! "$PYTHON" -m venv "$VENV" >/dev/null; then
  rm -rf "$VENV"
  echo "error: could not create a Python virtualenv in $VENV (on Debian: apt-get install python3-venv)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "schemathesis==$VERSION"; then
  rm -rf "$VENV"
  echo "error: could not install schemathesis==$VERSION from the Python package index" >&2
  echo "       (is https://pypi.org reachable? set PIP_INDEX_URL for a mirror)" >&2
  exit 1
fi
