#!/usr/bin/env bash
# Headless Chromium for the report test (tests/test_report.py opens reports/report.html in it).
# Idempotent: does nothing when /usr/bin/chromium exists. Uses sudo only when not already root.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-browser.sh: not root and no sudo; install Debian's chromium package by hand." >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends chromium
