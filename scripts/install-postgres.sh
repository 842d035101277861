#!/usr/bin/env bash
# Install the PostgreSQL server binaries that tests/test_tune.py starts a throwaway server with
# (two tuning workers sharing one Optuna study on PostgreSQL). Idempotent: does nothing when they exist.
set -euo pipefail

if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Only the binaries are needed: the test runs its own server in a temporary folder, so keep the
# package's default cluster from being started where there is a service manager.
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
