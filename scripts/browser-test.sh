#!/usr/bin/env bash
# Opens a lab report in a real (headless) Chromium and checks it: every chart drawn, the summary
# table filled in, nothing fetched from the network; saves a full-page screenshot.
#
#   scripts/browser-test.sh REPORT.html OUT.png
#
# Installs what is missing: Debian's chromium (apt-get, when run as root) and playwright-core
# (npm, into tests/browser/node_modules). Set CHROMIUM to use another Chromium binary.
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 REPORT.html OUT.png" >&2
  exit 2
fi
report=$(realpath "$1")
out=$(realpath -m "$2")
cd "$(dirname "$0")/.."

chromium_bin=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium_bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (apt-get)"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    echo "chromium is required at $chromium_bin (apt-get install chromium, or set CHROMIUM)" >&2
    exit 1
  fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are required (apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "==> npm install (tests/browser)"
  (cd tests/browser && npm install --no-audit --no-fund --no-package-lock)
fi

mkdir -p "$(dirname "$out")"
CHROMIUM="$chromium_bin" node tests/browser/report.mjs "$report" "$out"
