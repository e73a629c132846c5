#!/usr/bin/env bash
# Throwaway PostgreSQL clusters (15 by default, or any major from 14 to 18)
# for the tests and the demo.
#
# As a command:
#   scripts/pg.sh start <dir> <port>   create a cluster in <dir>, start it on
#                                      127.0.0.1:<port>, print its URL on stdout
#   scripts/pg.sh stop <dir>           stop it (fast) and remove <dir>
#   scripts/pg.sh status <dir>         exit 0 if the cluster in <dir> is up
#   scripts/pg.sh standby <primary dir> <dir> <port> <slot>
#                                      a physical standby of the cluster in
#                                      <primary dir>, streaming through the
#                                      new physical slot <slot>; prints its URL
#   scripts/pg.sh promote <dir>        promote the standby in <dir>
#   scripts/pg.sh install              install the server of PG_VERSION if missing
#
# Sourced (`source scripts/pg.sh`), it defines the same as functions:
#   pg_start <dir> <port>, pg_stop <dir>, pg_status <dir>, pg_url <port> [db],
#   pg_start_standby <primary dir> <dir> <port> <slot>, pg_promote <dir>,
#   pg_ensure_installed, pg_port_in_use <port>, pg_free_port, pg_psql <dir> [args]
#
# The cluster: wal_level=logical, 50 replication slots and WAL senders, 200
# connections, listening on 127.0.0.1 only, Unix socket in <dir>, superuser
# `postgres` with password `postgres`, scram-sha-256 over TCP (also for
# replication connections), trust over the Unix socket. The server log is
# <dir>/postgres.log.
#
# initdb refuses to run as root: when we are root, <dir> is given to the
# `postgres` OS user and the server runs as that user. Otherwise everything
# runs as the current user.
#
# Environment:
#   PG_VERSION           the major: 15 (default, Debian's postgresql-15) or 14,
#                        16, 17, 18 (pinned builds fetched into a cache by
#                        scripts/lib/pg_versions.sh)
#   PG_BIN               server binaries (default: those of PG_VERSION)
#   PG_START_TIMEOUT     seconds to wait for the server to accept connections (60)
#   PG_STOP_TIMEOUT      seconds to wait for a fast shutdown before killing (20)
#   PG_EXTRA_CONF        extra postgresql.conf lines appended at creation

# shellcheck source=scripts/system-packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/system-packages.sh"
# shellcheck source=scripts/lib/pg_versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/pg_versions.sh"

PG_VERSION="${PG_VERSION:-$PG_DEBIAN_MAJOR}"
if [ -z "${PG_BIN:-}" ]; then
	PG_BIN="$(pg_bin_dir "$PG_VERSION")" || PG_BIN=/nonexistent
fi
PG_START_TIMEOUT="${PG_START_TIMEOUT:-60}"
PG_STOP_TIMEOUT="${PG_STOP_TIMEOUT:-20}"
# A file in every cluster dir we create: `stop` and the stale-dir cleanup only
# ever delete a directory that has it.
PG_MARKER=".cdc-throwaway-cluster"

_pg_log() { printf 'pg.sh: %s\n' "$*" >&2; }
_pg_die() {
	_pg_log "error: $*"
	return 1
}

_pg_is_root() { [ "$(id -u)" = 0 ]; }

# Runs a command as the user that owns the clusters: `postgres` when we are
# root, ourselves otherwise. Always from `/`, which that user can read.
_pg_as_owner() {
	if _pg_is_root; then
		if command -v runuser >/dev/null 2>&1; then
			(cd / && runuser -u postgres -- "$@")
		else
			local cmd
			cmd="$(printf '%q ' "$@")"
			(cd / && su postgres -s /bin/bash -c "$cmd")
		fi
	else
		"$@"
	fi
}

# Installs the server of PG_VERSION and the client (psql, pg_isready) when
# they are missing: Debian's packages (the `postgres` list of
# scripts/system-packages.sh), and for a major other than 15 its pinned
# build (scripts/lib/pg_versions.sh).
pg_ensure_installed() {
	if [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] &&
		command -v psql >/dev/null 2>&1 && command -v pg_isready >/dev/null 2>&1; then
		return 0
	fi
	syspkg_ensure postgres || return 1
	if [ "$PG_BIN" = "$(pg_bin_dir "$PG_VERSION" 2>/dev/null)" ]; then
		pg_fetch "$PG_VERSION" || return 1
	fi
	[ -x "$PG_BIN/postgres" ] || {
		_pg_die "no PostgreSQL server binaries in PG_BIN=$PG_BIN"
		return 1
	}
}

# _pg_isready <port>: the server's own pg_isready, or the client's (the
# builds of other majors have none).
_pg_isready() {
	local isready="$PG_BIN/pg_isready"
	[ -x "$isready" ] || isready=pg_isready
	"$isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

# pg_url <port> [database]: the superuser URL of a cluster started here.
pg_url() {
	printf 'postgres://postgres:postgres@127.0.0.1:%s/%s\n' "$1" "${2:-postgres}"
}

# pg_port_in_use <port>: true when something accepts TCP connections on it.
pg_port_in_use() {
	local port="$1"
	if command -v ss >/dev/null 2>&1; then
		if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
			return 0
		fi
	fi
	# Fallback (and a second opinion): try to connect.
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		return 0
	fi
	return 1
}

# pg_free_port: prints a TCP port that nothing listens on right now.
pg_free_port() {
	local i port
	for i in $(seq 1 200); do
		port=$((20000 + (RANDOM * 32768 + RANDOM + i) % 40000))
		if ! pg_port_in_use "$port"; then
			echo "$port"
			return 0
		fi
	done
	_pg_die "found no free port"
}

_pg_is_zombie() {
	local state
	state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)"
	[ "$state" = Z ] || [ "$state" = X ]
}

# The postmaster pid of the cluster in <dir>, if its pid file names a live one.
_pg_running_pid() {
	local pidfile="$1/data/postmaster.pid" pid
	[ -f "$pidfile" ] || return 1
	pid="$(head -n1 "$pidfile" 2>/dev/null)"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# A killed postmaster nobody has reaped yet is a zombie: not running.
	_pg_is_zombie "$pid" && return 1
	# Make sure the pid was not recycled by an unrelated process.
	grep -q postgres "/proc/$pid/comm" 2>/dev/null || grep -q postgres "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

_pg_abs_dir() {
	local d="$1"
	case "$d" in
	/*) ;;
	*) d="$PWD/$d" ;;
	esac
	# Normalise without requiring the path to exist.
	if command -v realpath >/dev/null 2>&1; then
		realpath -m "$d"
	else
		echo "$d"
	fi
}

# pg_status <dir>: exit 0 when the cluster in <dir> accepts connections.
pg_status() {
	local dir port
	dir="$(_pg_abs_dir "${1:?usage: pg_status <dir>}")"
	[ -f "$dir/port" ] || return 1
	port="$(cat "$dir/port")"
	_pg_isready "$port"
}

# pg_stop <dir>: stops the cluster in <dir> (fast shutdown, then immediate,
# then SIGKILL) and removes <dir>. A missing <dir> is not an error; a <dir>
# that was not made by pg_start is refused.
pg_stop() {
	local dir pid i
	dir="$(_pg_abs_dir "${1:?usage: pg_stop <dir>}")"
	[ -e "$dir" ] || return 0
	if [ ! -f "$dir/$PG_MARKER" ]; then
		if [ -d "$dir" ] && [ -z "$(ls -A "$dir" 2>/dev/null)" ]; then
			rmdir "$dir" 2>/dev/null || true
			return 0
		fi
		_pg_die "$dir was not created by pg.sh (no $PG_MARKER); not touching it"
		return 1
	fi
	if pid="$(_pg_running_pid "$dir")"; then
		_pg_log "stopping cluster in $dir (pid $pid)"
		if ! _pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t "$PG_STOP_TIMEOUT" stop >/dev/null 2>&1; then
			_pg_log "fast shutdown timed out; trying immediate"
			_pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
		fi
		for i in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			_pg_is_zombie "$pid" && break
			if [ "$i" = 50 ]; then
				_pg_log "postmaster $pid still alive; killing it"
				kill -KILL "$pid" 2>/dev/null || true
				sleep 0.5
			else
				sleep 0.1
			fi
		done
	fi
	rm -rf "$dir"
}

# pg_start <dir> <port>: creates a fresh cluster in <dir> and starts it on
# 127.0.0.1:<port>. Prints the superuser URL on stdout.
pg_start() {
	local dir port owner_dir parent i pwfile sock
	dir="$(_pg_abs_dir "${1:?usage: pg_start <dir> <port>}")"
	port="${2:?usage: pg_start <dir> <port>}"
	if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt 65535 ]; then
		_pg_die "bad port '$port'"
		return 1
	fi
	pg_ensure_installed || return 1

	# Unix socket paths are limited to 107 bytes.
	sock="$dir/.s.PGSQL.$port"
	if [ "${#sock}" -gt 100 ]; then
		_pg_die "directory path too long for a Unix socket: $dir"
		return 1
	fi

	# A stale cluster from an earlier run (killed script, Ctrl-C, ...).
	if [ -e "$dir" ]; then
		if [ -f "$dir/$PG_MARKER" ]; then
			_pg_log "removing stale cluster in $dir"
			pg_stop "$dir" || return 1
		elif [ -d "$dir" ] && [ -z "$(ls -A "$dir" 2>/dev/null)" ]; then
			: # an empty directory (e.g. from mktemp -d) is fine
		else
			_pg_die "$dir exists and is not a pg.sh cluster; refusing to use it"
			return 1
		fi
	fi

	if pg_port_in_use "$port"; then
		_pg_die "port $port on 127.0.0.1 is already in use"
		return 1
	fi

	mkdir -p "$dir" || return 1
	: >"$dir/$PG_MARKER"
	echo "$port" >"$dir/port"
	owner_dir="$dir"
	if _pg_is_root; then
		id postgres >/dev/null 2>&1 || {
			_pg_die "no 'postgres' OS user (is postgresql-15 installed?)"
			return 1
		}
		chown postgres: "$dir" || return 1
		chmod 700 "$dir"
		# The postgres user must be able to reach <dir>.
		if ! _pg_as_owner test -w "$owner_dir"; then
			parent="$(dirname "$dir")"
			_pg_die "the postgres user cannot reach $dir (is a parent such as $parent private?)"
			return 1
		fi
	fi

	pwfile="$dir/pwfile"
	echo postgres >"$pwfile"
	_pg_is_root && chown postgres: "$pwfile"
	if ! _pg_as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --pwfile="$pwfile" \
		--auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync \
		>"$dir/initdb.log" 2>&1; then
		rm -f "$pwfile"
		_pg_die "initdb failed:"
		cat "$dir/initdb.log" >&2
		return 1
	fi
	rm -f "$pwfile"

	_pg_as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF || return 1

# ---- throwaway CDC test cluster (scripts/pg.sh) ----
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
wal_level = logical
max_replication_slots = 50
max_wal_senders = 50
wal_sender_timeout = '10s'
password_encryption = 'scram-sha-256'
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
${PG_EXTRA_CONF:-}
EOF
	_pg_as_owner tee "$dir/data/pg_hba.conf" >/dev/null <<'EOF' || return 1
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
EOF

	if ! _pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w \
		-t "$PG_START_TIMEOUT" start >/dev/null 2>&1; then
		_pg_die "the server did not start; its log:"
		tail -n 40 "$dir/postgres.log" >&2 2>/dev/null
		return 1
	fi

	for i in $(seq 1 $((PG_START_TIMEOUT * 4))); do
		if _pg_isready "$port"; then
			_pg_log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') ready on 127.0.0.1:$port (dir $dir)"
			pg_url "$port"
			return 0
		fi
		if [ "$i" = 1 ] || [ $((i % 20)) = 0 ]; then
			_pg_log "waiting for 127.0.0.1:$port"
		fi
		sleep 0.25
	done
	_pg_die "the server did not accept connections within ${PG_START_TIMEOUT}s; its log:"
	tail -n 40 "$dir/postgres.log" >&2 2>/dev/null
	return 1
}

# pg_start_standby <primary dir> <dir> <port> <slot>: a physical standby of
# the running cluster in <primary dir>: creates the physical slot <slot> on
# it, stops it (fast), copies its data directory (a cold base backup: the
# builds of other majors have no pg_basebackup), starts it again and the
# standby (standby.signal; primary_conninfo with the superuser's password and
# dbname, primary_slot_name, hot_standby_feedback; PG_EXTRA_CONF appended,
# e.g. `sync_replication_slots = on` on 17+) on 127.0.0.1:<port>. Prints the
# standby's URL.
pg_start_standby() {
	local primary dir port slot pport i d
	primary="$(_pg_abs_dir "${1:?usage: pg_start_standby <primary dir> <dir> <port> <slot>}")"
	dir="$(_pg_abs_dir "${2:?usage: pg_start_standby <primary dir> <dir> <port> <slot>}")"
	port="${3:?usage: pg_start_standby <primary dir> <dir> <port> <slot>}"
	slot="${4:?usage: pg_start_standby <primary dir> <dir> <port> <slot>}"
	[[ "$slot" =~ ^[a-z0-9_]{1,63}$ ]] || {
		_pg_die "bad slot name '$slot'"
		return 1
	}
	[[ "$port" =~ ^[0-9]+$ ]] || {
		_pg_die "bad port '$port'"
		return 1
	}
	if [ ! -f "$primary/$PG_MARKER" ] || ! pg_status "$primary"; then
		_pg_die "no running pg.sh cluster in $primary"
		return 1
	fi
	if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
		_pg_die "$dir exists and is not empty"
		return 1
	fi
	if pg_port_in_use "$port"; then
		_pg_die "port $port on 127.0.0.1 is already in use"
		return 1
	fi
	pport="$(cat "$primary/port")"
	mkdir -p "$dir" || return 1
	: >"$dir/$PG_MARKER"
	echo "$port" >"$dir/port"
	chmod 700 "$dir"
	if _pg_is_root; then chown postgres: "$dir"; fi
	pg_psql "$primary" -q -d postgres -c "SELECT pg_create_physical_replication_slot('$slot')" >/dev/null || return 1
	_pg_as_owner "$PG_BIN/pg_ctl" -D "$primary/data" -m fast -w -t "$PG_STOP_TIMEOUT" stop >/dev/null 2>&1 || {
		_pg_die "could not stop the primary in $primary"
		return 1
	}
	_pg_as_owner cp -a "$primary/data" "$dir/data" || return 1
	_pg_as_owner rm -f "$dir/data/postmaster.pid"
	_pg_as_owner touch "$dir/data/standby.signal" || return 1
	_pg_as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF || return 1

# ---- physical standby of $primary (scripts/pg.sh standby) ----
port = $port
unix_socket_directories = '$dir'
primary_conninfo = 'host=127.0.0.1 port=$pport user=postgres password=postgres dbname=postgres application_name=standby_$port'
primary_slot_name = '$slot'
hot_standby_feedback = on
${PG_EXTRA_CONF:-}
EOF
	for d in "$primary" "$dir"; do
		if ! _pg_as_owner "$PG_BIN/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w \
			-t "$PG_START_TIMEOUT" start >/dev/null 2>&1; then
			_pg_die "the server in $d did not start; its log:"
			tail -n 40 "$d/postgres.log" >&2 2>/dev/null
			return 1
		fi
	done
	for i in $(seq 1 $((PG_START_TIMEOUT * 4))); do
		if _pg_isready "$port"; then
			_pg_log "standby of 127.0.0.1:$pport ready on 127.0.0.1:$port (dir $dir)"
			pg_url "$port"
			return 0
		fi
		sleep 0.25
	done
	_pg_die "the standby did not accept connections within ${PG_START_TIMEOUT}s"
	return 1
}

# pg_promote <dir>: promotes the standby in <dir>, waiting until it is done.
pg_promote() {
	local dir
	dir="$(_pg_abs_dir "${1:?usage: pg_promote <dir>}")"
	_pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -w -t "$PG_START_TIMEOUT" promote >/dev/null
}

# pg_psql <dir> [psql args...]: psql as superuser over the cluster's Unix socket.
pg_psql() {
	local dir port
	dir="$(_pg_abs_dir "${1:?usage: pg_psql <dir> [args]}")"
	shift
	port="$(cat "$dir/port")"
	psql -X -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres "$@"
}

_pg_main() {
	local cmd="${1:-}"
	case "$cmd" in
	start)
		[ $# -eq 3 ] || {
			echo "usage: $0 start <dir> <port>" >&2
			return 2
		}
		pg_start "$2" "$3"
		;;
	stop)
		[ $# -eq 2 ] || {
			echo "usage: $0 stop <dir>" >&2
			return 2
		}
		pg_stop "$2"
		;;
	status)
		[ $# -eq 2 ] || {
			echo "usage: $0 status <dir>" >&2
			return 2
		}
		pg_status "$2"
		;;
	install)
		pg_ensure_installed
		;;
	standby)
		[ $# -eq 5 ] || {
			echo "usage: $0 standby <primary dir> <dir> <port> <slot>" >&2
			return 2
		}
		pg_ensure_installed && pg_start_standby "$2" "$3" "$4" "$5"
		;;
	promote)
		[ $# -eq 2 ] || {
			echo "usage: $0 promote <dir>" >&2
			return 2
		}
		pg_promote "$2"
		;;
	*)
		echo "usage: $0 start <dir> <port> | stop <dir> | status <dir> | standby <primary dir> <dir> <port> <slot> | promote <dir> | install" >&2
		return 2
		;;
	esac
}

# Run as a command unless sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -uo pipefail
	_pg_main "$@"
	exit $?
fi
