#!/usr/bin/env bash
# scripts/lib/stack.sh — owns the private server stack of one data folder:
# RabbitMQ 3.10 (with its own epmd), Redis 7 and MariaDB 10.11, run as plain
# processes (no systemd) on 127.0.0.1, with every file they write (data, logs,
# pid files, sockets, config) under DIR. Ports are picked free at the first
# start and kept in DIR/ports.env, so restarts reuse them. Two DIRs never
# collide (own ports, own epmd, own RabbitMQ node name).
#
# Usage:
#   stack.sh start DIR                  start all three (running ones are left alone),
#                                       wait until they answer, create the paynotify
#                                       database and user, write DIR/stack.env
#   stack.sh stop DIR                   stop what DIR's pid files name, wait for exit
#   stack.sh start-one DIR SERVER       SERVER: rabbitmq | redis | mariadb
#   stack.sh stop-one DIR SERVER        clean shutdown (SIGTERM)
#   stack.sh kill-one DIR SERVER        crash (SIGKILL, no shutdown work), for fault tests
#   stack.sh status DIR                 one line per server; exit 0 if all are up
#   stack.sh ctl DIR ARGS...            rabbitmqctl ARGS against DIR's node
#
# Files under DIR:
#   ports.env    STACK_* ports, node name and socket path (persisted, sourced)
#   stack.env    `export` lines for PAYNOTIFY_*_URL and STACK_* (written by start)
#   run/         epmd.pid rabbitmq.pid (wrapper) rabbitmq-beam.pid redis.pid
#                mariadb.pid mariadb.sock
#   log/         epmd.log rabbitmq.log (stdout) rabbitmq/ (node logs) redis.log
#                mariadb.log mariadb-install.log
#   rabbitmq/    home/ (Erlang cookie) mnesia/ rabbitmq.conf advanced.config
#                enabled_plugins rabbitmq-env.conf
#   redis/       redis.conf and its data (appendonly)
#   mariadb/     my.cnf data/
set -euo pipefail

SERVERS=(rabbitmq redis mariadb)
RABBIT_BIN=/usr/lib/rabbitmq/bin

say() { echo "stack: $*" >&2; }
die() {
    echo "stack: error: $*" >&2
    exit 1
}

usage() {
    sed -n '/^# Usage:/,/^# Files under/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

now_ms() { date +%s%3N; }
elapsed() { awk -v ms=$(($(now_ms) - $1)) 'BEGIN { printf "%.1f s", ms / 1000 }'; }

# ---------------------------------------------------------------- processes

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local pid=$1 state
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || echo Z)
    [ "$state" != Z ]
}

# pidfile_alive FILE PATTERN: FILE names a live process whose command line
# contains PATTERN (guards against a pid reused after a reboot).
pidfile_alive() {
    local file=$1 pattern=$2 pid
    [ -s "$file" ] || return 1
    pid=$(cat "$file" 2>/dev/null) || return 1
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

# launch PIDFILE LOG CMD...: runs CMD detached (own session, stdin /dev/null,
# output appended to LOG, without our lock fd) and writes its pid to PIDFILE.
launch() {
    local pidfile=$1 log=$2
    shift 2
    rm -f "$pidfile"
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
        </dev/null >>"$log" 2>&1 9>&- &
    for _ in $(seq 1 100); do
        [ -s "$pidfile" ] && return 0
        sleep 0.01
    done
    die "could not start $1"
}

# stop_pids TIMEOUT_S PID...: SIGTERM, wait up to TIMEOUT_S, then SIGKILL.
stop_pids() {
    local timeout=$1
    shift
    local pid live deadline
    for pid in "$@"; do
        pid_alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$(($(now_ms) + timeout * 1000))
    while :; do
        live=()
        for pid in "$@"; do
            pid_alive "$pid" && live+=("$pid")
        done
        [ ${#live[@]} -eq 0 ] && return 0
        [ "$(now_ms)" -lt "$deadline" ] || break
        sleep 0.1
    done
    say "still running after ${timeout}s, killing: ${live[*]}"
    kill -KILL "${live[@]}" 2>/dev/null || true
    sleep 0.2
}

pid_of() { cat "$1" 2>/dev/null || true; }

# tcp_open PORT: something accepts connections on 127.0.0.1:PORT.
tcp_open() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# ---------------------------------------------------------------- ports

# pick_ports SIZE...: prints one base port per SIZE such that each block
# [base, base+SIZE) is free on 127.0.0.1, below the ephemeral range, and
# distinct from every block printed and from the ports in $AVOID_PORTS.
pick_ports() {
    python3 - "$@" <<'EOF'
import os, random, socket
import sys

sizes = [int(a) for a in sys.argv[1:]]
avoid = {int(p) for p in os.environ.get("AVOID_PORTS", "").split() if p}
try:
    eph_lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    eph_lo = 32768
lo, hi = 10000, max(eph_lo - 1, 20000)

def free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()

out = []
for size in sizes:
    for _ in range(2000):
        base = random.randrange(lo, hi - size)
        block = range(base, base + size)
        if any(p in avoid for p in block):
            continue
        if all(free(p) for p in block):
            avoid.update(block)
            out.append(base)
            break
    else:
        sys.exit("no free port block of size %d" % size)
print(" ".join(map(str, out)))
EOF
}

save_ports() {
    local tmp="$DIR/ports.env.tmp"
    cat >"$tmp" <<EOF
# Written by scripts/lib/stack.sh at the first start; reused by every restart.
STACK_RABBIT_NODE=$STACK_RABBIT_NODE
STACK_EPMD_PORT=$STACK_EPMD_PORT
STACK_RABBIT_PORT=$STACK_RABBIT_PORT
STACK_RABBIT_DIST_PORT=$STACK_RABBIT_DIST_PORT
STACK_RABBIT_CTL_DIST_MIN=$STACK_RABBIT_CTL_DIST_MIN
STACK_RABBIT_CTL_DIST_MAX=$STACK_RABBIT_CTL_DIST_MAX
STACK_REDIS_PORT=$STACK_REDIS_PORT
STACK_MYSQL_PORT=$STACK_MYSQL_PORT
STACK_MYSQL_SOCKET=$STACK_MYSQL_SOCKET
EOF
    mv "$tmp" "$DIR/ports.env"
}

all_ports() {
    echo "${STACK_EPMD_PORT:-} ${STACK_RABBIT_PORT:-} ${STACK_RABBIT_DIST_PORT:-}" \
        "${STACK_REDIS_PORT:-} ${STACK_MYSQL_PORT:-}"
    if [ -n "${STACK_RABBIT_CTL_DIST_MIN:-}" ]; then
        seq "$STACK_RABBIT_CTL_DIST_MIN" "$STACK_RABBIT_CTL_DIST_MAX"
    fi
}

# fresh_ports SERVER: picks new ports for SERVER and persists them.
fresh_ports() {
    local p
    case $1 in
    rabbitmq)
        unset STACK_EPMD_PORT STACK_RABBIT_PORT STACK_RABBIT_DIST_PORT \
            STACK_RABBIT_CTL_DIST_MIN STACK_RABBIT_CTL_DIST_MAX
        read -r -a p < <(AVOID_PORTS="$(all_ports)" pick_ports 1 1 1 11)
        STACK_EPMD_PORT=${p[0]}
        STACK_RABBIT_PORT=${p[1]}
        STACK_RABBIT_DIST_PORT=${p[2]}
        STACK_RABBIT_CTL_DIST_MIN=${p[3]}
        STACK_RABBIT_CTL_DIST_MAX=$((p[3] + 10))
        ;;
    redis)
        unset STACK_REDIS_PORT
        STACK_REDIS_PORT=$(AVOID_PORTS="$(all_ports)" pick_ports 1)
        ;;
    mariadb)
        unset STACK_MYSQL_PORT
        STACK_MYSQL_PORT=$(AVOID_PORTS="$(all_ports)" pick_ports 1)
        ;;
    esac
    FRESH[$1]=1
    save_ports
}

load_ports() {
    STACK_RABBIT_NODE='' STACK_EPMD_PORT='' STACK_RABBIT_PORT='' STACK_RABBIT_DIST_PORT=''
    STACK_RABBIT_CTL_DIST_MIN='' STACK_RABBIT_CTL_DIST_MAX='' STACK_REDIS_PORT=''
    STACK_MYSQL_PORT='' STACK_MYSQL_SOCKET=''
    if [ -f "$DIR/ports.env" ]; then
        # shellcheck disable=SC1091
        . "$DIR/ports.env"
    fi
}

# ensure_ports: fills in whatever ports.env lacks (first start).
ensure_ports() {
    if [ -z "$STACK_RABBIT_NODE" ]; then
        # Unique per folder: two stacks never share a node name (or an epmd).
        STACK_RABBIT_NODE="paynotify-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)@localhost"
    fi
    if [ -z "$STACK_MYSQL_SOCKET" ]; then
        STACK_MYSQL_SOCKET="$DIR/run/mariadb.sock"
        # sun_path holds 108 bytes; deep folders get a short path in /tmp.
        if [ ${#STACK_MYSQL_SOCKET} -gt 100 ]; then
            STACK_MYSQL_SOCKET="/tmp/paynotify-$(printf '%s' "$DIR" | cksum | cut -d' ' -f1).sock"
        fi
    fi
    save_ports
    [ -n "$STACK_RABBIT_PORT" ] && [ -n "$STACK_EPMD_PORT" ] && [ -n "$STACK_RABBIT_CTL_DIST_MIN" ] ||
        fresh_ports rabbitmq
    [ -n "$STACK_REDIS_PORT" ] || fresh_ports redis
    [ -n "$STACK_MYSQL_PORT" ] || fresh_ports mariadb
}

# ---------------------------------------------------------------- rabbitmq

rabbit_env() {
    local r="$DIR/rabbitmq"
    export HOME="$r/home"
    export RABBITMQ_NODENAME="$STACK_RABBIT_NODE"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$STACK_RABBIT_PORT"
    export RABBITMQ_DIST_PORT="$STACK_RABBIT_DIST_PORT"
    export ERL_EPMD_PORT="$STACK_EPMD_PORT"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_CTL_DIST_PORT_MIN="$STACK_RABBIT_CTL_DIST_MIN"
    export RABBITMQ_CTL_DIST_PORT_MAX="$STACK_RABBIT_CTL_DIST_MAX"
    export RABBITMQ_MNESIA_BASE="$r/mnesia"
    export RABBITMQ_LOG_BASE="$DIR/log/rabbitmq"
    export RABBITMQ_CONFIG_FILE="$r/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$r/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins"
    export RABBITMQ_CONF_ENV_FILE="$r/rabbitmq-env.conf"
    export RABBITMQ_PID_FILE="$DIR/run/rabbitmq-beam.pid"
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none"
}

rabbit_files() {
    local r="$DIR/rabbitmq"
    mkdir -p "$r/home" "$r/mnesia" "$DIR/log/rabbitmq"
    cat >"$r/rabbitmq.conf" <<EOF
# Written by scripts/lib/stack.sh on every start.
listeners.tcp.default = 127.0.0.1:$STACK_RABBIT_PORT
log.console = false
log.file.level = info
EOF
    [ -f "$r/advanced.config" ] || echo '[].' >"$r/advanced.config"
    echo '[].' >"$r/enabled_plugins"
    : >"$r/rabbitmq-env.conf"
}

rabbitmq_running() {
    pidfile_alive "$DIR/run/epmd.pid" epmd &&
        pidfile_alive "$DIR/run/rabbitmq-beam.pid" beam
}

# rabbitmq_answers: the broker speaks AMQP on its port (Connection.Start frame).
rabbitmq_answers() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "AMQP\0\0\x09\x01" >&3
        IFS= read -r -d "" -t 2 -n 1 b <&3 || exit 1
        [ "$b" = $'"'"'\x01'"'"' ]' "$STACK_RABBIT_PORT" 2>/dev/null
}

rabbitmq_launch() {
    rabbit_files
    (
        rabbit_env
        if ! pidfile_alive "$DIR/run/epmd.pid" epmd; then
            launch "$DIR/run/epmd.pid" "$DIR/log/epmd.log" \
                epmd -port "$STACK_EPMD_PORT" -address 127.0.0.1
        fi
        # The node must find our epmd, or erl would start a stray one of its own.
        for _ in $(seq 1 100); do
            tcp_open "$STACK_EPMD_PORT" && break
            pid_alive "$(pid_of "$DIR/run/epmd.pid")" || exit 1
            sleep 0.05
        done
        tcp_open "$STACK_EPMD_PORT" || exit 1
        rm -f "$DIR/run/rabbitmq-beam.pid"
        launch "$DIR/run/rabbitmq.pid" "$DIR/log/rabbitmq.log" "$RABBIT_BIN/rabbitmq-server"
    )
}

rabbitmq_alive() {
    pid_alive "$(pid_of "$DIR/run/rabbitmq.pid")" &&
        pid_alive "$(pid_of "$DIR/run/epmd.pid")"
}

rabbitmq_stop() {
    local beam wrapper epmd
    beam=$(pid_of "$DIR/run/rabbitmq-beam.pid")
    wrapper=$(pid_of "$DIR/run/rabbitmq.pid")
    epmd=$(pid_of "$DIR/run/epmd.pid")
    pidfile_alive "$DIR/run/rabbitmq-beam.pid" beam || beam=
    pidfile_alive "$DIR/run/rabbitmq.pid" rabbitmq-server || wrapper=
    pidfile_alive "$DIR/run/epmd.pid" epmd || epmd=
    # TERM to the node is a clean shutdown (~1.3 s); the wrapper exits with it.
    if [ -n "$beam" ]; then
        stop_pids 30 "$beam"
    fi
    if [ -n "$wrapper" ]; then
        stop_pids 10 "$wrapper"
    fi
    if [ -n "$epmd" ]; then
        stop_pids 5 "$epmd"
    fi
    rm -f "$DIR/run/rabbitmq-beam.pid" "$DIR/run/rabbitmq.pid" "$DIR/run/epmd.pid"
}

# ---------------------------------------------------------------- redis

redis_running() { pidfile_alive "$DIR/run/redis.pid" redis-server; }
redis_alive() { pid_alive "$(pid_of "$DIR/run/redis.pid")"; }
redis_answers() {
    [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$STACK_REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

redis_launch() {
    mkdir -p "$DIR/redis"
    cat >"$DIR/redis/redis.conf" <<EOF
# Written by scripts/lib/stack.sh on every start.
port $STACK_REDIS_PORT
bind 127.0.0.1
protected-mode yes
daemonize no
dir $DIR/redis
logfile $DIR/log/redis.log
save ""
appendonly yes
appendfsync everysec
EOF
    launch "$DIR/run/redis.pid" "$DIR/log/redis.log" redis-server "$DIR/redis/redis.conf"
}

redis_stop() {
    local pid
    pid=$(pid_of "$DIR/run/redis.pid")
    if redis_running; then
        stop_pids 20 "$pid"
    fi
    rm -f "$DIR/run/redis.pid"
}

# ---------------------------------------------------------------- mariadb

mariadb_running() { pidfile_alive "$DIR/run/mariadb.pid" mariadbd; }
mariadb_alive() { pid_alive "$(pid_of "$DIR/run/mariadb.pid")"; }
# Root logs in through the socket (unix_socket auth); TCP must accept too.
mariadb_answers() {
    timeout 5 mariadb-admin --no-defaults --socket="$STACK_MYSQL_SOCKET" -u root \
        --connect-timeout=2 ping >/dev/null 2>&1 && tcp_open "$STACK_MYSQL_PORT"
}

mariadb_launch() {
    local m="$DIR/mariadb" user
    user=$(id -un)
    mkdir -p "$m/data"
    cat >"$m/my.cnf" <<EOF
# Written by scripts/lib/stack.sh on every start.
[mariadbd]
user = $user
datadir = $m/data
port = $STACK_MYSQL_PORT
bind-address = 127.0.0.1
socket = $STACK_MYSQL_SOCKET
pid-file = $m/data/mariadbd.pid
log-error = $DIR/log/mariadb.log
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
max_connections = 500
innodb_buffer_pool_size = 128M
EOF
    local cmd="exec mariadbd --defaults-file=\"\$0\""
    if [ ! -f "$m/.installed" ]; then
        # First start: make the system tables, then run the server (same pid).
        rm -rf "$m/data"
        mkdir -p "$m/data"
        cmd="mariadb-install-db --defaults-file=\"\$0\" --auth-root-authentication-method=socket \
            --skip-test-db >>\"\$1\" 2>&1 && touch \"\$2\" && $cmd"
    fi
    launch "$DIR/run/mariadb.pid" "$DIR/log/mariadb.log" \
        bash -c "$cmd" "$m/my.cnf" "$DIR/log/mariadb-install.log" "$m/.installed"
}

mariadb_setup() {
    mariadb --no-defaults --socket="$STACK_MYSQL_SOCKET" -u root <<'EOF'
CREATE DATABASE IF NOT EXISTS paynotify CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'paynotify'@'127.0.0.1' IDENTIFIED BY 'paynotify';
CREATE USER IF NOT EXISTS 'paynotify'@'localhost' IDENTIFIED BY 'paynotify';
GRANT ALL PRIVILEGES ON `paynotify`.* TO 'paynotify'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `paynotify\_%`.* TO 'paynotify'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `paynotify`.* TO 'paynotify'@'localhost';
GRANT ALL PRIVILEGES ON `paynotify\_%`.* TO 'paynotify'@'localhost';
EOF
}

mariadb_stop() {
    local pid
    pid=$(pid_of "$DIR/run/mariadb.pid")
    if mariadb_running; then
        stop_pids 60 "$pid"
    fi
    rm -f "$DIR/run/mariadb.pid"
}

# ---------------------------------------------------------------- start/stop

server_port() {
    case $1 in
    rabbitmq) echo "$STACK_RABBIT_PORT" ;;
    redis) echo "$STACK_REDIS_PORT" ;;
    mariadb) echo "$STACK_MYSQL_PORT" ;;
    esac
}

server_log() {
    case $1 in
    rabbitmq) ls -t "$DIR"/log/rabbitmq/*.log 2>/dev/null | head -1 || echo "$DIR/log/rabbitmq.log" ;;
    *) echo "$DIR/log/$1.log" ;;
    esac
}

# wait_ready SERVER TIMEOUT_S: 0 once it answers; 1 if it died or timed out.
wait_ready() {
    local s=$1 timeout=$2 deadline
    deadline=$(($(now_ms) + timeout * 1000))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        if "${s}_answers"; then
            return 0
        fi
        "${s}_alive" || return 1
        sleep 0.2
    done
    return 1
}

show_log() {
    local log
    log=$(server_log "$1")
    say "last lines of $log:"
    tail -n 20 "$log" >&2 2>/dev/null || true
    if [ "$1" = rabbitmq ]; then tail -n 20 "$DIR/log/rabbitmq.log" >&2 2>/dev/null || true; fi
    if [ "$1" = mariadb ]; then tail -n 20 "$DIR/log/mariadb-install.log" >&2 2>/dev/null || true; fi
}

write_env() {
    local tmp="$DIR/stack.env.tmp"
    cat >"$tmp" <<EOF
# Written by scripts/lib/stack.sh start; source it.
# (amqp-tools read the trailing "/" as the empty vhost: give them ".../%2f".)
export PAYNOTIFY_AMQP_URL=amqp://guest:guest@127.0.0.1:$STACK_RABBIT_PORT/
export PAYNOTIFY_REDIS_URL=redis://127.0.0.1:$STACK_REDIS_PORT/0
export PAYNOTIFY_MYSQL_URL=mysql://paynotify:paynotify@127.0.0.1:$STACK_MYSQL_PORT/paynotify
export STACK_DIR=$DIR
export STACK_RABBIT_PORT=$STACK_RABBIT_PORT
export STACK_REDIS_PORT=$STACK_REDIS_PORT
export STACK_MYSQL_PORT=$STACK_MYSQL_PORT
export STACK_MYSQL_SOCKET=$STACK_MYSQL_SOCKET
export STACK_RABBIT_NODE=$STACK_RABBIT_NODE
EOF
    mv "$tmp" "$DIR/stack.env"
}

# start_servers SERVER...: launches those not running, waits for all.
start_servers() {
    local t0 s attempt
    t0=$(now_ms)
    local -a launched=()
    for s in "$@"; do
        if "${s}_running"; then
            continue
        fi
        "${s}_stop" # clears a half-dead leftover (e.g. epmd without a node)
        say "starting $s on 127.0.0.1:$(server_port "$s")"
        "${s}_launch" || true
        launched+=("$s")
    done
    # The broker boots slowest: report the others first.
    local -a order=()
    for s in redis mariadb rabbitmq; do
        [[ " $* " == *" $s "* ]] && order+=("$s")
    done
    for s in "${order[@]}"; do
        attempt=1
        while ! wait_ready "$s" 90; do
            if [ -n "${FRESH[$s]:-}" ] && [ "$attempt" -lt 3 ] && ! "${s}_alive"; then
                # Ports picked now may have been taken since: pick again.
                "${s}_stop"
                fresh_ports "$s"
                attempt=$((attempt + 1))
                say "$s did not start; retrying on 127.0.0.1:$(server_port "$s")"
                "${s}_launch" || true
                continue
            fi
            show_log "$s"
            die "$s did not come up (logs in $DIR/log)"
        done
        if [ ${#launched[@]} -gt 0 ] && [[ " ${launched[*]} " == *" $s "* ]]; then
            say "$s ready on 127.0.0.1:$(server_port "$s") after $(elapsed "$t0")"
        fi
    done
    local want_db=0
    for s in "$@"; do [ "$s" = mariadb ] && want_db=1; done
    if [ "$want_db" = 1 ]; then
        mariadb_setup || die "could not create the paynotify database/user"
    fi
}

stop_servers() {
    local s
    local -a pids=()
    # Stop in parallel: each *_stop waits for its own processes.
    for s in "$@"; do
        "${s}_stop" &
        pids+=($!)
    done
    local rc=0 p
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return $rc
}

# kill_server SERVER: SIGKILL its processes (a crash), then clear its pid files.
kill_server() {
    local f pids=()
    case $1 in
    rabbitmq) f=(rabbitmq-beam rabbitmq epmd) ;;
    *) f=("$1") ;;
    esac
    local n pid
    for n in "${f[@]}"; do
        pid=$(pid_of "$DIR/run/$n.pid")
        pid_alive "$pid" && pids+=("$pid")
    done
    if [ ${#pids[@]} -gt 0 ]; then
        kill -KILL "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 1 100); do
            local any=0
            for pid in "${pids[@]}"; do pid_alive "$pid" && any=1; done
            [ "$any" = 1 ] || break
            sleep 0.05
        done
    fi
    "${1}_stop" # the wrapper or anything else left
}

check_server() {
    case $1 in
    rabbitmq | redis | mariadb) ;;
    *) die "unknown server '$1' (rabbitmq, redis or mariadb)" ;;
    esac
}

status() {
    local s rc=0 pid
    for s in "${SERVERS[@]}"; do
        pid=$(pid_of "$DIR/run/$s.pid")
        if "${s}_running" && "${s}_answers"; then
            echo "$s up 127.0.0.1:$(server_port "$s") pid $pid"
        else
            echo "$s down"
            rc=1
        fi
    done
    return $rc
}

# ---------------------------------------------------------------- main

[ $# -ge 2 ] || usage
CMD=$1
if [ ! -d "$2" ]; then
    case $CMD in
    start | start-one) mkdir -p "$2" ;;
    status)
        for s in "${SERVERS[@]}"; do echo "$s down"; done
        exit 1
        ;;
    stop | stop-one | kill-one) exit 0 ;;
    *) die "no stack in $2" ;;
    esac
fi
DIR=$(cd "$2" && pwd -P)
shift 2
mkdir -p "$DIR/run" "$DIR/log"
declare -A FRESH=()

# One stack.sh at a time per DIR. The servers are started without fd 9.
exec 9>"$DIR/.lock"
flock 9

load_ports
case $CMD in
start)
    [ $# -eq 0 ] || usage
    ensure_ports
    start_servers "${SERVERS[@]}"
    write_env
    say "up; environment in $DIR/stack.env"
    ;;
stop)
    [ $# -eq 0 ] || usage
    stop_servers "${SERVERS[@]}"
    say "stopped"
    ;;
start-one)
    [ $# -eq 1 ] || usage
    check_server "$1"
    ensure_ports
    start_servers "$1"
    write_env
    ;;
stop-one)
    [ $# -eq 1 ] || usage
    check_server "$1"
    stop_servers "$1"
    say "$1 stopped"
    ;;
kill-one)
    [ $# -eq 1 ] || usage
    check_server "$1"
    kill_server "$1"
    say "$1 killed"
    ;;
status)
    [ $# -eq 0 ] || usage
    [ -n "$STACK_RABBIT_PORT" ] || {
        for s in "${SERVERS[@]}"; do echo "$s down"; done
        exit 1
    }
    status
    ;;
ctl)
    [ -n "$STACK_RABBIT_PORT" ] && rabbitmq_running || die "rabbitmq is not running in $DIR"
    rabbit_env
    exec 9>&-
    exec "$RABBIT_BIN/rabbitmqctl" "$@"
    ;;
*) usage ;;
esac
