#!/usr/bin/env bash
# Installs what Broker's tests use, only what is missing: Debian packages (openssl and curl
# for the black-box tests, pebble for the ACME tests, chromium and Node.js for the browser
# tests, DejaVu for the plots, Python's venv for schemathesis), the browser tests' npm
# packages, and schemathesis from the
# Python package index into a virtualenv under target/. Never downloads a browser of its own:
# playwright-core drives Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The font broker-bench-plot draws its text with.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# The ACME tests' RFC 8555 test server and its mock DNS (tests/acme.rs).
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
# schemathesis runs in a virtualenv (Debian splits venv and ensurepip into python3-venv).
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "error: root is needed to install ${missing[*]} (apt-get install ${missing[*]})" >&2
      exit 1
    }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "installing the browser tests' npm packages"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

scripts/install-schemathesis.sh
scripts/install-nats.sh
