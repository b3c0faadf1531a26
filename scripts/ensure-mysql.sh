#!/usr/bin/env bash
# Find (or, on a disposable root box, provision) a MySQL-compatible server for
# the DB test suite.
#
# Contract: on success print exactly one line on stdout -- the SQLAlchemy URL to
# export as TIDB_MEMORY_TEST_URL -- and exit 0. All diagnostics go to stderr.
# On failure exit non-zero with instructions; never hand back "no database" so
# the DB tests cannot be skipped silently.
#
# Order:
#   a) $TIDB_MEMORY_TEST_URL, if set (must connect; no fallback if it does not)
#   b) root@127.0.0.1:3306 with an empty password, database `test`
#   c) mariadbd/mysqld installed but not running: start it, then (b)
#   d) not installed, running as root with apt-get: install mariadb-server, then (c)
#   e) otherwise: fail with instructions
#
# Env knobs: PROBE_PYTHON (default .venv/bin/python; needs pymysql),
#            ENSURE_MYSQL_WAIT (seconds to wait for a started server, default 30).
set -euo pipefail

# Keep stdout clean for the URL: fd 3 is the real stdout, everything else -> stderr.
exec 3>&1 1>&2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROBE_PYTHON=${PROBE_PYTHON:-$ROOT/.venv/bin/python}
WAIT=${ENSURE_MYSQL_WAIT:-30}
PORT=3306
DB="test"
LOCAL_URL="mysql+aiomysql://root@127.0.0.1:$PORT/$DB"

# Exit codes of probe_mysql.py (keep in sync).
OK=0 UNREACHABLE=2 DENIED=3 NO_DRIVER=5

say() { echo "ensure-mysql: $*"; }

die() {
  say "ERROR: $*"
  cat <<EOF

The tidb-memory test suite needs a MySQL-compatible server (MariaDB, MySQL or TiDB).
Pick one:
  * Local MariaDB (Debian/Ubuntu):
      sudo apt-get install -y mariadb-server && sudo service mariadb start
      sudo mariadb -e "CREATE DATABASE IF NOT EXISTS test;
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
  * Any other server / TiDB (e.g. tiup playground, port 4000):
      export TIDB_MEMORY_TEST_URL='mysql+aiomysql://USER:PASSWORD@HOST:4000/test'
Then re-run: make test
EOF
  exit 1
}

emit() { echo "$1" >&3; exit 0; }

probe() { "$PROBE_PYTHON" "$ROOT/scripts/probe_mysql.py" "$@"; }

# Read one option from the server's my.cnf files (e.g. socket, datadir).
mysqld_opt() {
  local name=$1 default=$2 value=""
  if command -v my_print_defaults >/dev/null; then
    value=$(my_print_defaults --mysqld 2>/dev/null | sed -n "s/^--$name=//p" | tail -n1)
  fi
  echo "${value:-$default}"
}

find_server_binary() {
  local candidate
  for candidate in /usr/sbin/mariadbd /usr/sbin/mysqld "$(command -v mariadbd || true)" \
    "$(command -v mysqld || true)"; do
    if [[ -n $candidate && -x $candidate ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# Probe the local server; sets $rc to probe_mysql.py's exit code.
probe_local() {
  rc=0
  probe check "$LOCAL_URL" --create-db 2>/dev/null || rc=$?
}

start_server() {
  local bin=$1 socket datadir user errlog
  socket=$(mysqld_opt socket /run/mysqld/mysqld.sock)
  datadir=$(mysqld_opt datadir /var/lib/mysql)
  user=$(mysqld_opt user mysql)
  errlog=$(mysqld_opt log-error /var/log/mysql/error.log)

  # /run is a tmpfs in containers: the socket/pid directory may be gone.
  mkdir -p "$(dirname "$socket")"
  chown "$user:" "$(dirname "$socket")" 2>/dev/null || true

  # A fresh package install normally initialises the datadir; be safe anyway.
  if [[ ! -d $datadir/mysql ]]; then
    local installer
    installer=$(command -v mariadb-install-db || command -v mysql_install_db || true)
    [[ -n $installer ]] || die "$datadir is not initialised and no mariadb-install-db found"
    say "initialising $datadir with $installer"
    local initlog
    initlog=$(mktemp)
    "$installer" --user="$user" --datadir="$datadir" >"$initlog" 2>&1 ||
      { cat "$initlog"; die "$installer failed"; }
    rm -f "$initlog"
  fi

  if command -v pgrep >/dev/null && pgrep -x "$(basename "$bin")" >/dev/null; then
    say "$(basename "$bin") is already running; waiting for it to accept connections"
  elif command -v start-stop-daemon >/dev/null; then
    say "starting $bin via start-stop-daemon"
    start-stop-daemon --start --oknodo --background --exec "$bin"
  elif command -v mysqld_safe >/dev/null; then
    say "starting $bin via mysqld_safe"
    nohup mysqld_safe >/dev/null 2>&1 </dev/null &
  else
    die "found $bin but neither start-stop-daemon nor mysqld_safe to start it"
  fi

  # Wait until something answers on 3306 (any answer other than "unreachable").
  local waited=0
  while :; do
    probe_local
    [[ $rc -ne $UNREACHABLE ]] && break
    # Give up at the deadline, or early if the daemon has already died.
    local why=""
    if ((waited >= WAIT)); then
      why="nothing answered on 127.0.0.1:$PORT within ${WAIT}s"
    elif ((waited >= 3)) && command -v pgrep >/dev/null &&
      ! pgrep -x "$(basename "$bin")" >/dev/null && ! pgrep -x mysqld_safe >/dev/null; then
      why="it exited during startup"
    fi
    if [[ -n $why ]]; then
      [[ -r $errlog ]] && { say "last lines of $errlog:"; tail -n 20 "$errlog"; }
      die "started $bin but $why"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "server answered after ${waited}s"

  # A stock MariaDB only lets OS root in via the unix socket; open up the
  # dev-box convention (root@127.0.0.1, no password) on this server we own.
  if [[ $rc -eq $DENIED ]]; then
    say "root@127.0.0.1 refused; bootstrapping over $socket"
    probe bootstrap --socket "$socket" --db "$DB" --port "$PORT" ||
      die "could not bootstrap root@127.0.0.1 on the server we started"
    probe_local
  fi
}

# --- prerequisites -----------------------------------------------------------
if [[ ! -x $PROBE_PYTHON ]]; then
  die "$PROBE_PYTHON not found; run \`make install\` first (it provides pymysql)"
fi
if ! "$PROBE_PYTHON" -c 'import pymysql' 2>/dev/null; then
  die "pymysql is not importable by $PROBE_PYTHON; run \`make install\` first"
fi

# --- (a) explicit URL: trust it or fail, never fall back ---------------------
if [[ -n ${TIDB_MEMORY_TEST_URL:-} ]]; then
  say "checking TIDB_MEMORY_TEST_URL"
  probe check "$TIDB_MEMORY_TEST_URL" ||
    die "TIDB_MEMORY_TEST_URL is set but does not connect (see above). Fix it or unset it to use a local server."
  emit "$TIDB_MEMORY_TEST_URL"
fi

# --- (b) the local dev-box server ---------------------------------------------
say "trying $LOCAL_URL"
rc=0
probe check "$LOCAL_URL" --create-db || rc=$?
[[ $rc -eq $OK ]] && emit "$LOCAL_URL"
if [[ $rc -ne $UNREACHABLE ]]; then
  # Something is listening but won't let us in: it's not ours to reconfigure.
  die "a server answers on 127.0.0.1:$PORT but root (empty password) cannot use database '$DB' (error above)"
fi

# --- (c)/(d) start, or install and start, a local MariaDB ---------------------
if ((EUID != 0)); then
  die "nothing listens on 127.0.0.1:$PORT and starting/installing a server needs root"
fi

if ! bin=$(find_server_binary); then
  command -v apt-get >/dev/null || die "no MySQL/MariaDB server installed and no apt-get to install one"
  say "no MySQL/MariaDB server installed; installing mariadb-server with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 || die "apt-get update failed"
  apt-get install -y -q mariadb-server >&2 || die "apt-get install mariadb-server failed"
  bin=$(find_server_binary) || die "mariadb-server installed but no mariadbd/mysqld binary found"
fi

start_server "$bin"
[[ $rc -eq $OK ]] && emit "$LOCAL_URL"
[[ $rc -eq $NO_DRIVER ]] && die "pymysql vanished from $PROBE_PYTHON"
probe check "$LOCAL_URL" --create-db || true # show the actual error on stderr
die "started a local server but root@127.0.0.1:$PORT still cannot use database '$DB'"
