#!/usr/bin/env bash
# A throwaway sshd for the current user on 127.0.0.1, everything it needs kept in one folder: try an
# SSH data remote without a server, and what tests/test_team_remote.py pushes to and pulls from.
#
#   scripts/sshd-local.sh start DIR PORT   # prints the remote's URL base: ssh://USER@127.0.0.1:PORT
#   scripts/sshd-local.sh stop DIR         # stops it; no process is left behind
#
# DIR ends up holding host_key (the server's), client_key (the key to log in with, no passphrase),
# known_hosts (for `ssh -o UserKnownHostsFile=DIR/known_hosts`; DVC checks no host key), sshd_config,
# sshd.pid and sshd.log.
# Needs /usr/sbin/sshd and ssh-keygen: scripts/install-sshd.sh installs them. Works as root and as a
# normal user whose account is not locked (with UsePAM no, sshd refuses a "!" or "*" password field).
set -euo pipefail

SSHD=/usr/sbin/sshd

usage() {
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
}

# Running: exists and has not exited (an exited sshd is a zombie until init reaps it).
running() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    local dir=$1 port=$2
    [ -x "$SSHD" ] || { echo "no $SSHD: run scripts/install-sshd.sh" >&2; exit 1; }
    if port_open "$port"; then
        echo "127.0.0.1:$port is already in use" >&2
        exit 1
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # sshd started by root wants its privilege-separation directory; a user's sshd runs without one.
    if [ "$(id -u)" -eq 0 ]; then mkdir -p -m 0755 /run/sshd; fi
    [ -f "$dir/host_key" ] || ssh-keygen -q -t ed25519 -N "" -C "sshd-local host" -f "$dir/host_key"
    [ -f "$dir/client_key" ] || ssh-keygen -q -t ed25519 -N "" -C "sshd-local client" -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    chmod 600 "$dir/authorized_keys"
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" >"$dir/known_hosts"
    # StrictModes no: DIR usually sits under /tmp, which sshd would otherwise refuse to trust.
    cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
AllowUsers $(id -un)
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
X11Forwarding no
Subsystem sftp internal-sftp
EOF
    rm -f "$dir/sshd.pid"
    "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log"
    for _ in $(seq 100); do
        if [ -s "$dir/sshd.pid" ] && port_open "$port"; then
            echo "ssh://$(id -un)@127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    echo "sshd did not start listening on 127.0.0.1:$port; its log:" >&2
    cat "$dir/sshd.log" >&2 || true
    stop "$dir"
    exit 1
}

stop() {
    local dir=$1 pid
    [ -s "$dir/sshd.pid" ] || return 0
    pid=$(cat "$dir/sshd.pid")
    # The listener and the sessions it forked (one per connection still open).
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$dir/sshd.pid"
}

case "${1:-}" in
    start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    *) usage ;;
esac
