#!/usr/bin/env bash
# A live demo of the toolkit on a throwaway PostgreSQL.
#
#   scripts/demo.sh                  runs until Ctrl-C
#   DEMO_SECONDS=30 scripts/demo.sh  stops by itself after 30 seconds
#
# It starts PostgreSQL 15 (installing it first if it is missing) on a free
# port in a temporary directory, creates a database `demo` with a table
# `public.customers` and a few rows, writes a pipeline config that streams the
# table to standard output, builds and runs `cdc-engine run --config <file>`,
# and meanwhile changes the table every couple of seconds (insert, update,
# delete, a multi-row transaction) so you can watch the JSON change events go
# by. The changes it makes are announced on standard error, prefixed `demo:`.
# Everything (engine, writer, server, temporary directory) is cleaned up on
# Ctrl-C, on `DEMO_SECONDS`, or when the engine exits.
#
# Environment:
#   DEMO_SECONDS     stop after this many seconds (default: run until Ctrl-C)
#   DEMO_INTERVAL    seconds between two changes (default 2)
#   CDC_ENGINE_BIN   use this engine binary instead of building one
#   KEEP_DEMO_DIR=1  keep the temporary directory (config, logs)
#
# Exit status: the engine's (0 after a clean stop); non-zero when a step
# failed, or when DEMO_SECONDS was set and the engine printed no event.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/pg.sh
source "$ROOT/scripts/pg.sh"

say() { printf 'demo: %s\n' "$*" >&2; }

DEMO_INTERVAL="${DEMO_INTERVAL:-2}"
if [ -n "${DEMO_SECONDS:-}" ] && ! [[ "$DEMO_SECONDS" =~ ^[0-9]+$ ]]; then
	say "DEMO_SECONDS must be a whole number of seconds"
	exit 2
fi

DEMO_DIR="$(mktemp -d /tmp/cdc-demo.XXXXXX)"
chmod 755 "$DEMO_DIR" # the postgres OS user must reach the cluster dir inside
PG_DIR="$DEMO_DIR/pg"
CONFIG="$DEMO_DIR/pipeline.yaml"
EVENTS="$DEMO_DIR/events.jsonl"
PG_STARTED=0
ENGINE_PID=""
WRITER_PID=""
TIMER_PID=""

# (shellcheck cannot see that trap handlers call these functions.)
# shellcheck disable=SC2317
# Kills a process we started (by pid): SIGTERM, then SIGKILL after $2 s.
stop_pid() {
	local pid="$1" grace="${2:-5}" i
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317
cleanup() {
	local rc=$? i
	trap - EXIT
	# Finish the cleanup even if the terminal goes away or Ctrl-C is
	# pressed again.
	trap '' INT TERM PIPE HUP
	set +e
	stop_pid "$TIMER_PID" 1
	stop_pid "$WRITER_PID" 2
	if [ -n "$ENGINE_PID" ] && [ "$INTERRUPTED" = 1 ]; then
		# Ctrl-C reached the engine too: give it time to shut down by itself
		# (a second signal would make it stop at once).
		for ((i = 0; i < 150; i++)); do
			kill -0 "$ENGINE_PID" 2>/dev/null || break
			sleep 0.1
		done
	fi
	if [ -n "$ENGINE_PID" ] && kill -0 "$ENGINE_PID" 2>/dev/null; then
		say "stopping the engine"
		stop_pid "$ENGINE_PID" 15
	fi
	wait 2>/dev/null
	if [ "$PG_STARTED" = 1 ]; then
		say "stopping PostgreSQL"
		pg_stop "$PG_DIR"
	fi
	if [ "${KEEP_DEMO_DIR:-0}" = 1 ]; then
		say "kept $DEMO_DIR"
	else
		rm -rf "$DEMO_DIR"
	fi
	exit "$rc"
}
trap cleanup EXIT
INTERRUPTED=0
trap 'INTERRUPTED=1; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------- PostgreSQL
pg_ensure_installed
PORT="$(pg_free_port)"
say "starting PostgreSQL 15 on 127.0.0.1:$PORT"
PG_STARTED=1
pg_start "$PG_DIR" "$PORT" >/dev/null

sql() { pg_psql "$PG_DIR" -q -d demo "$@"; }

pg_psql "$PG_DIR" -q -d postgres -c "CREATE DATABASE demo"
sql <<'EOF'
CREATE TABLE public.customers (
    id         serial PRIMARY KEY,
    name       text,
    email      text,
    updated_at timestamptz DEFAULT now()
);
INSERT INTO public.customers (name, email) VALUES
    ('Ada Lovelace', 'ada@example.com'),
    ('Alan Turing', 'alan@example.com'),
    ('Grace Hopper', 'grace@example.com');
EOF
say "created database demo with table public.customers (3 rows)"

cat >"$CONFIG" <<EOF
name: demo
source:
  url: $(pg_url "$PORT" demo)
  tables: [public.customers]
  publication: { name: demo_pub, create: true }
  slot: { name: demo_slot, create: true }
sinks:
  - type: stdout
EOF
say "pipeline config $CONFIG:"
sed 's/^/    /' "$CONFIG" >&2

# ---------------------------------------------------------------- engine
if [ -n "${CDC_ENGINE_BIN:-}" ]; then
	ENGINE="$CDC_ENGINE_BIN"
else
	say "building cdc-engine (debug)"
	(cd "$ROOT" && cargo build -q -p cdc-engine)
	TARGET_DIR="${CARGO_TARGET_DIR:-}"
	if [ -z "$TARGET_DIR" ]; then
		TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
			sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
	fi
	ENGINE="${TARGET_DIR:-$ROOT/target}/debug/cdc-engine"
fi
if [ ! -x "$ENGINE" ]; then
	say "no engine binary at $ENGINE"
	exit 1
fi

say "running: cdc-engine run --config $CONFIG"
if [ -n "${DEMO_SECONDS:-}" ]; then
	say "stopping by itself after ${DEMO_SECONDS}s"
else
	say "press Ctrl-C to stop"
fi
# Events go to the terminal and, for the final count, to a file.
"$ENGINE" run --config "$CONFIG" </dev/null > >(tee "$EVENTS") &
ENGINE_PID=$!

# ---------------------------------------------------------------- writer
# Changes to the table, one every DEMO_INTERVAL seconds, round after round.
writer() {
	local round=0 n
	sleep "$DEMO_INTERVAL"
	while kill -0 "$ENGINE_PID" 2>/dev/null; do
		round=$((round + 1))
		n="Customer $round"
		say "INSERT a customer ($n)"
		sql -c "INSERT INTO public.customers (name, email) VALUES ('$n', 'c$round@example.com')" || true
		sleep "$DEMO_INTERVAL"

		say "UPDATE the email of customer 1"
		sql -c "UPDATE public.customers SET email = 'ada+$round@example.com', updated_at = now() WHERE id = 1" || true
		sleep "$DEMO_INTERVAL"

		say "DELETE the newest customer"
		sql -c "DELETE FROM public.customers WHERE id = (SELECT max(id) FROM public.customers)" || true
		sleep "$DEMO_INTERVAL"

		say "one transaction: INSERT 2 customers, UPDATE 1"
		sql <<EOF || true
BEGIN;
INSERT INTO public.customers (name, email) VALUES
    ('Batch $round a', 'b${round}a@example.com'),
    ('Batch $round b', 'b${round}b@example.com');
UPDATE public.customers SET name = 'Alan M. Turing', updated_at = now() WHERE id = 2;
COMMIT;
EOF
		sleep "$DEMO_INTERVAL"
	done
}
writer &
WRITER_PID=$!

if [ -n "${DEMO_SECONDS:-}" ]; then
	(
		sleep "$DEMO_SECONDS"
		kill -TERM "$ENGINE_PID" 2>/dev/null || true
	) &
	TIMER_PID=$!
fi

# ---------------------------------------------------------------- wait
set +e
wait "$ENGINE_PID"
ENGINE_RC=$?
set -e
ENGINE_PID=""
sleep 0.2 # let tee write out the last lines
EVENTS_SEEN="$(grep -c . "$EVENTS" 2>/dev/null || true)"
say "the engine exited with status $ENGINE_RC after printing ${EVENTS_SEEN:-0} line(s)"
if [ "$ENGINE_RC" = 0 ] && [ -n "${DEMO_SECONDS:-}" ] && [ "${EVENTS_SEEN:-0}" = 0 ]; then
	say "no event was printed"
	exit 1
fi
exit "$ENGINE_RC"
