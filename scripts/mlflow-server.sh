#!/usr/bin/env bash
# A team's MLflow tracking server: runs, params and metrics in PostgreSQL, artifacts uploaded and
# downloaded through the server itself (--serve-artifacts), so a client needs only its http:// URI.
#
#   scripts/mlflow-server.sh [start|stop|status] [options] [-- more `mlflow server` options]
#
# start (the default) is idempotent: it reuses the folder's PostgreSQL cluster and `mlflow` database,
# starts only what is not running, and returns once http://HOST:PORT/health answers. On failure it
# stops whatever it started. PostgreSQL always listens on 127.0.0.1 only, with a generated password
# kept in DIR/pgpass; --host decides where the MLflow server listens.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ACTION=start
DIR=${SYNTHMIX_MLFLOW_DIR:-$REPO/.mlflow-server}
HOST=${SYNTHMIX_MLFLOW_HOST:-127.0.0.1}
PORT=${SYNTHMIX_MLFLOW_PORT:-5000}
PG_PORT=${SYNTHMIX_MLFLOW_PG_PORT:-5433}
WORKERS=${SYNTHMIX_MLFLOW_WORKERS:-2}
WAIT=${SYNTHMIX_MLFLOW_WAIT:-120}
EXTRA=()

usage() {
    cat <<EOF
Usage: scripts/mlflow-server.sh [start|stop|status] [options] [-- more \`mlflow server\` options]

  start      start PostgreSQL and the MLflow server (the default); reuses what exists
  stop       stop both
  status     say what runs; exit 0 only when the MLflow server answers

Options (environment variable in brackets):
  --dir DIR        folder for the database cluster, artifacts, logs [SYNTHMIX_MLFLOW_DIR] ($DIR)
  --host HOST      interface the MLflow server binds [SYNTHMIX_MLFLOW_HOST] ($HOST);
                   0.0.0.0 serves the team (add -- --allowed-hosts NAME for a public host name)
  --port PORT      MLflow server port [SYNTHMIX_MLFLOW_PORT] ($PORT)
  --pg-port PORT   PostgreSQL port, on 127.0.0.1 only [SYNTHMIX_MLFLOW_PG_PORT] ($PG_PORT)
  --workers N      MLflow server worker processes [SYNTHMIX_MLFLOW_WORKERS] ($WORKERS)
  --wait SECONDS   how long start waits for the server to answer [SYNTHMIX_MLFLOW_WAIT] ($WAIT)
EOF
}

die() {
    echo "mlflow-server: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        start | stop | status) ACTION=$1 ;;
        --dir | --host | --port | --pg-port | --workers | --wait)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --dir) DIR=$2 ;;
                --host) HOST=$2 ;;
                --port) PORT=$2 ;;
                --pg-port) PG_PORT=$2 ;;
                --workers) WORKERS=$2 ;;
                --wait) WAIT=$2 ;;
            esac
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        --)
            shift
            EXTRA=("$@")
            break
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
for number in "$PORT" "$PG_PORT" "$WORKERS" "$WAIT"; do
    [[ $number =~ ^[0-9]+$ ]] || die "'$number' is not a number (see --help)"
done

if [ "$ACTION" != start ] && [ ! -d "$DIR" ]; then
    echo "mlflow-server: nothing runs from $DIR (no such folder)"
    [ "$ACTION" = stop ] && exit 0 || exit 3
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
cd "$DIR" # the postgres user must be able to stand here (checked below when we are root)
PGDATA=$DIR/postgres
PGPASS=$DIR/pgpass
PIDFILE=$DIR/mlflow.pid
# Where this machine reaches the server: a wildcard address is reached on loopback.
case "$HOST" in
    0.0.0.0 | :: | "") LOCAL_HOST=127.0.0.1 ;;
    *:*) LOCAL_HOST="[$HOST]" ;;
    *) LOCAL_HOST=$HOST ;;
esac
URL="http://$LOCAL_HOST:$PORT"

# --- PostgreSQL --------------------------------------------------------------------------------------

PG_BIN=""
if command -v initdb >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(readlink -f "$(command -v initdb)")")
elif compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    PG_BIN=$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n 1)")
fi
AS_PG=() # PostgreSQL refuses to run as root: as root, run it as the `postgres` user
if [ "$(id -u)" -eq 0 ]; then
    AS_PG=(runuser -u postgres --)
fi

need_postgres() {
    [ -n "$PG_BIN" ] || die "PostgreSQL binaries (initdb, pg_ctl) not found: run scripts/install-postgres.sh"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 ||
            die "running as root, and there is no 'postgres' user to run PostgreSQL as (scripts/install-postgres.sh creates it)"
        "${AS_PG[@]}" test -x "$DIR" ||
            die "the postgres user cannot enter $DIR: choose a --dir under folders every user may enter"
    fi
}

pg_running() {
    [ -s "$PGDATA/PG_VERSION" ] && "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

init_cluster() {
    if [ -e "$PGDATA" ] && [ -n "$(ls -A "$PGDATA")" ]; then
        die "$PGDATA is not empty but holds no PostgreSQL cluster: move it away and start again"
    fi
    echo "mlflow-server: creating a PostgreSQL cluster in $PGDATA"
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    local password pwfile
    password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    pwfile=$(mktemp)
    echo "$password" >"$pwfile"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$PGDATA" "$pwfile"
    fi
    if ! "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A scram-sha-256 --pwfile="$pwfile" \
        -E UTF8 --no-instructions >"$DIR/initdb.log" 2>&1; then
        rm -rf "$pwfile" "$PGDATA"
        die "initdb failed; its output is in $DIR/initdb.log"
    fi
    rm -f "$pwfile"
    (umask 077 && echo "127.0.0.1:*:*:postgres:$password" >"$PGPASS")
}

start_postgres() {
    if pg_running; then
        local port
        port=$(sed -n 4p "$PGDATA/postmaster.pid")
        [ "$port" = "$PG_PORT" ] ||
            die "this folder's PostgreSQL already runs on port $port: stop it first, or pass --pg-port $port"
        return
    fi
    touch "$DIR/postgres.log"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$DIR/postgres.log"
    fi
    if ! "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgres.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=''" >/dev/null; then
        tail -n 5 "$DIR/postgres.log" >&2 || true
        die "PostgreSQL did not start on 127.0.0.1:$PG_PORT (is the port taken?); its log is $DIR/postgres.log"
    fi
    STARTED_PG=1
}

stop_postgres() {
    if pg_running; then
        "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
        echo "mlflow-server: PostgreSQL stopped"
    fi
}

create_database() {
    local psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1)
    local found
    found=$(PGPASSFILE=$PGPASS "${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'mlflow'") ||
        die "cannot connect to PostgreSQL on 127.0.0.1:$PG_PORT as postgres (password in $PGPASS)"
    if [ "$found" != 1 ]; then
        PGPASSFILE=$PGPASS "${psql[@]}" -d postgres -c "CREATE DATABASE mlflow" >/dev/null
        echo "mlflow-server: created database 'mlflow'"
    fi
}

# --- the MLflow server -------------------------------------------------------------------------------

# The server runs in its own session: its pid is its process group, which holds its workers too.
# A pid is this folder's server when its whole command line (never one cut to a terminal's width:
# /proc, else `ps -ww`) is `mlflow server` with this folder's artifact store.
command_line() {
    if [ -r "/proc/$1/cmdline" ]; then
        tr '\0' ' ' <"/proc/$1/cmdline"
    else
        ps -ww -o args= -p "$1" 2>/dev/null
    fi
}

recorded_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && echo "$pid"
}

mlflow_pid() {
    local pid args
    pid=$(recorded_pid) || return 1
    args=$(command_line "$pid") || return 1
    [[ $args == *" server "* && $args == *"--artifacts-destination $DIR/artifacts "* ]] && echo "$pid"
}

healthy() {
    "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/health" \
        >/dev/null 2>&1
}

stop_group() {
    local pid=$1
    kill -TERM -- "-$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 -- "-$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
}

stop_mlflow() {
    local pid
    if pid=$(mlflow_pid); then
        stop_group "$pid"
        echo "mlflow-server: MLflow server stopped"
    elif pid=$(recorded_pid) && kill -0 "$pid" 2>/dev/null; then
        # never forget a process we cannot identify: keep its pid file and say what runs there
        echo "mlflow-server: $PIDFILE names pid $pid, which runs but is not this folder's MLflow server ($(command_line "$pid" | cut -c 1-160)); left it and the pid file alone. Stop that process yourself if it is the server, or delete $PIDFILE if it is not, then rerun." >&2
        return 1
    fi
    rm -f "$PIDFILE" "$DIR/mlflow.url"
}

find_mlflow() {
    if [ -x "$REPO/.venv/bin/mlflow" ]; then
        MLFLOW=$REPO/.venv/bin/mlflow
    else
        MLFLOW=$(command -v mlflow) || die "mlflow not found: run make setup"
    fi
    PY=$(dirname "$MLFLOW")/python
    "$PY" -c 'import psycopg2' 2>/dev/null ||
        die "psycopg2 is missing beside mlflow: pip install -e '.[team]' (make setup installs it)"
}

mlflow_port_free() {
    if ! mlflow_pid >/dev/null && (exec 3<>"/dev/tcp/$LOCAL_HOST/$PORT") 2>/dev/null; then
        die "port $PORT is already in use on $LOCAL_HOST: pass --port with a free one"
    fi
}

start_mlflow() {
    if mlflow_pid >/dev/null; then
        healthy || die "an MLflow server of $DIR runs (pid $(cat "$PIDFILE")) but $URL/health does not answer: stop it first"
        echo "mlflow-server: already running at $URL"
        return
    fi
    rm -f "$PIDFILE"
    mkdir -p "$DIR/artifacts"
    # MLflow's job runner (GenAI scorers, prompt optimisation) adds ~8 processes and over 1 GB of
    # memory that synthmix never uses: off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
        PGPASSFILE=$PGPASS setsid "$MLFLOW" server \
        --backend-store-uri "postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/mlflow" \
        --artifacts-destination "$DIR/artifacts" --serve-artifacts \
        --host "$HOST" --port "$PORT" --workers "$WORKERS" "${EXTRA[@]}" \
        >"$DIR/mlflow.log" 2>&1 </dev/null &
    STARTED_MLFLOW=$!
    echo "$STARTED_MLFLOW" >"$PIDFILE"
    echo "$URL" >"$DIR/mlflow.url"
    local deadline=$((SECONDS + WAIT))
    until healthy; do
        if ! kill -0 "$STARTED_MLFLOW" 2>/dev/null; then
            tail -n 15 "$DIR/mlflow.log" >&2 || true
            die "the MLflow server exited; its log is $DIR/mlflow.log"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "the MLflow server did not answer $URL/health in ${WAIT}s; its log is $DIR/mlflow.log"
        sleep 0.5
    done
}

# A failed start stops what it started: no stray server is left behind.
STARTED_PG=0
STARTED_MLFLOW=""
on_exit() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        if [ -n "$STARTED_MLFLOW" ]; then
            stop_group "$STARTED_MLFLOW"
            rm -f "$PIDFILE" "$DIR/mlflow.url"
        fi
        if [ "$STARTED_PG" = 1 ]; then
            "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

case "$ACTION" in
    start)
        need_postgres
        find_mlflow
        mlflow_port_free
        [ -s "$PGDATA/PG_VERSION" ] || init_cluster
        [ -s "$PGPASS" ] || die "$PGPASS (the database password) is missing: restore it, or start with an empty --dir"
        start_postgres
        create_database
        start_mlflow
        echo "mlflow-server: MLflow at $URL (UI and API), runs in PostgreSQL on 127.0.0.1:$PG_PORT, artifacts in $DIR/artifacts"
        echo "  export MLFLOW_TRACKING_URI=$URL"
        if [ "$LOCAL_HOST" != "$HOST" ]; then
            echo "  from other machines: http://$(hostname -f 2>/dev/null || hostname):$PORT"
        fi
        ;;
    stop)
        unidentified=0
        stop_mlflow || unidentified=1
        if [ -n "$PG_BIN" ]; then
            stop_postgres
        fi
        exit "$unidentified"
        ;;
    status)
        if [ -n "$PG_BIN" ] && pg_running; then
            echo "PostgreSQL: running ($PGDATA, port $(sed -n 4p "$PGDATA/postmaster.pid"))"
        else
            echo "PostgreSQL: not running ($PGDATA)"
        fi
        if pid=$(mlflow_pid); then
            find_mlflow
            URL=$(cat "$DIR/mlflow.url" 2>/dev/null || echo "$URL")
            if healthy; then
                echo "MLflow server: running at $URL (pid $pid)"
                exit 0
            fi
            echo "MLflow server: pid $pid, but $URL/health does not answer"
        else
            echo "MLflow server: not running"
        fi
        exit 3
        ;;
esac
