#!/usr/bin/env bash
# Install the OpenSSH server and client that tests/test_team_remote.py uses: it starts a throwaway sshd
# on 127.0.0.1 (scripts/sshd-local.sh) and pushes and pulls the study through a DVC SSH remote.
# Idempotent: does nothing when sshd and ssh exist.
set -euo pipefail

if [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Only the binaries are needed: the test runs its own sshd in a temporary folder. Where there is no
# service manager (containers, CI) the package's own service is not started.
$SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
