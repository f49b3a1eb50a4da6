# A throwaway MariaDB server for the MySQL backend tests (sourced by
# .ci/run; runnable alone from the checkout's root):
#
#   source .ci/mariadb.sh && mariadb_start   # exports SAFESTASH_TEST_MYSQL_URL
#   ...
#   mariadb_stop
#
#   bash .ci/mariadb.sh start   # prints the export lines (eval them), leaves it running
#   bash .ci/mariadb.sh stop DIR
#
# Debian's `mariadb-server` package (installed when missing; a service the
# package starts is stopped, so nothing listens on 3306), its own data
# directory in a temp dir (`mariadb-install-db`), a free port on 127.0.0.1,
# a socket in that dir, and durable settings: the redo log flushed at every
# commit and, with the binary log on, the binary log too. Besides the URL it
# exports what the fault tests need to kill and restart the server:
# SAFESTASH_TEST_MYSQL_DATADIR, SAFESTASH_TEST_MYSQL_CMD (the server's
# command line, one argument a line) and SAFESTASH_TEST_MYSQL_PIDFILE.

mariadb_install() {
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server mariadb-client >/dev/null 2>&1 || {
            apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y mariadb-server mariadb-client >/dev/null
        }
        # The package may start its own service: not ours, and not wanted.
        service mariadb stop >/dev/null 2>&1 || true
    fi
}

mariadb_start() {
    mariadb_install
    local tmp port bin i
    tmp=$(mktemp -d /tmp/safestash-mariadb.XXXXXX)
    MARIADB_TMP=$tmp
    bin=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    mariadb-install-db --no-defaults --user=root --datadir="$tmp/data" \
        --auth-root-authentication-method=normal \
        --skip-test-db >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; return 1; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # One argument a line: the tests restart the server with the same line.
    cat >"$tmp/cmd" <<CMD
$bin
--no-defaults
--user=root
--datadir=$tmp/data
--port=$port
--bind-address=127.0.0.1
--socket=$tmp/mysqld.sock
--pid-file=$tmp/mysqld.pid
--log-error=$tmp/error.log
--innodb-flush-log-at-trx-commit=1
--log-bin=$tmp/data/binlog
--sync-binlog=1
--innodb-buffer-pool-size=64M
--max-connections=400
CMD
    mapfile -t cmd <"$tmp/cmd"
    "${cmd[@]}" >/dev/null 2>&1 &
    echo $! >"$tmp/server.pid"
    for i in $(seq 1 150); do
        if mariadb --no-defaults -uroot --protocol=socket -S "$tmp/mysqld.sock" \
            -e 'CREATE DATABASE IF NOT EXISTS safestash_test' >/dev/null 2>&1; then
            break
        fi
        [ "$i" = 150 ] && { cat "$tmp/error.log"; echo "mariadbd did not start"; return 1; }
        sleep 0.2
    done
    export SAFESTASH_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/safestash_test"
    export SAFESTASH_TEST_MYSQL_DATADIR="$tmp/data"
    export SAFESTASH_TEST_MYSQL_CMD="$tmp/cmd"
    export SAFESTASH_TEST_MYSQL_PIDFILE="$tmp/mysqld.pid"
    export SAFESTASH_TEST_MYSQL_SOCKET="$tmp/mysqld.sock"
    echo "server: MariaDB $(mariadb --no-defaults -uroot -S "$tmp/mysqld.sock" -N -e 'SELECT VERSION()') at $SAFESTASH_TEST_MYSQL_URL (data $tmp/data)"
}

# Stops the server of `mariadb_start` (or of the directory given) and
# removes its directory. The tests may have restarted it: its pid file says
# which process is the server now.
mariadb_stop() {
    local tmp=${1:-${MARIADB_TMP:-}} pid
    [ -n "$tmp" ] && [ -d "$tmp" ] || return 0
    for pid in $(cat "$tmp/mysqld.pid" "$tmp/server.pid" 2>/dev/null | sort -u); do
        kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 100); do
        local alive=0
        for pid in $(cat "$tmp/mysqld.pid" "$tmp/server.pid" 2>/dev/null | sort -u); do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in $(cat "$tmp/mysqld.pid" "$tmp/server.pid" 2>/dev/null | sort -u); do
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
    unset MARIADB_TMP
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    case "${1:-}" in
        start)
            mariadb_start >&2
            echo "export SAFESTASH_TEST_MYSQL_URL='$SAFESTASH_TEST_MYSQL_URL'"
            echo "export SAFESTASH_TEST_MYSQL_DATADIR='$SAFESTASH_TEST_MYSQL_DATADIR'"
            echo "export SAFESTASH_TEST_MYSQL_CMD='$SAFESTASH_TEST_MYSQL_CMD'"
            echo "export SAFESTASH_TEST_MYSQL_PIDFILE='$SAFESTASH_TEST_MYSQL_PIDFILE'"
            echo "export SAFESTASH_TEST_MYSQL_SOCKET='$SAFESTASH_TEST_MYSQL_SOCKET'"
            ;;
        stop) mariadb_stop "${2:?usage: mariadb.sh stop DIR}" ;;
        *) echo "usage: bash .ci/mariadb.sh start|stop DIR" >&2; exit 2 ;;
    esac
fi
