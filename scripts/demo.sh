#!/usr/bin/env bash
# A live demo of the toolkit on a throwaway PostgreSQL.
#
#   scripts/demo.sh                  runs until Ctrl-C
#   DEMO_SECONDS=30 scripts/demo.sh  stops by itself after 30 seconds
#
# It installs the system packages it needs when they are missing (the `demo`
# list of scripts/system-packages.sh: C toolchain, PostgreSQL 15; as a user
# other than root it prints the one apt-get command to run instead), starts
# PostgreSQL on a free port in a temporary directory, creates a database
# `demo` with a table `public.customers` holding 3 rows, writes a pipeline
# config that snapshots and then streams the table to standard output, builds
# (stdout sink only: no Kafka/NATS/Elasticsearch client, no librdkafka) and
# runs `cdc-engine run --config <file>`. The 3 existing rows arrive first, as
# snapshot reads (`op: "r"`); then, every couple of seconds, the demo changes
# the table (insert, update, delete, a multi-row transaction) and you watch
# the change events go by. The events are on standard output, one JSON object
# a line; the changes the demo makes and the engine's log are on standard
# error, the demo's own lines prefixed `demo:`. When it stops it prints a
# summary: the events seen by kind and the position up to which the
# replication slot is acknowledged. Everything (engine, writer, server,
# temporary directory) is cleaned up on Ctrl-C, on `DEMO_SECONDS`, or when
# the engine exits.
#
# Environment:
#   DEMO_SECONDS     stop after this many seconds (default: run until Ctrl-C)
#   DEMO_INTERVAL    seconds between two changes (default 2)
#   CDC_ENGINE_BIN   use this engine binary instead of building one
#   KEEP_DEMO_DIR=1  keep the temporary directory (config, logs)
#
# Exit status: the engine's (0 after a clean stop); non-zero when a step
# failed, or when DEMO_SECONDS was set and the engine printed no snapshot
# read or no streamed change.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/pg.sh
source "$ROOT/scripts/pg.sh"
# shellcheck source=scripts/lib/cargo.sh
source "$ROOT/scripts/lib/cargo.sh"
# shellcheck source=scripts/lib/process.sh
source "$ROOT/scripts/lib/process.sh"

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
ENGINE_LOG="$DEMO_DIR/engine.log"
PG_STARTED=0
ENGINE_PID=""
WRITER_PID=""
TIMER_PID=""

# (shellcheck cannot see that the trap handler calls it.)
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
# Ctrl-C: until the engine runs, stop; once it runs, it gets the Ctrl-C too
# and stops by itself, and the demo goes on to its summary.
trap 'INTERRUPTED=1; if [ -z "$ENGINE_PID" ]; then exit 130; fi' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------- packages
# The C toolchain only when we build; PostgreSQL unless PG_BIN names other
# server binaries (pg_ensure_installed checks those).
NEEDED=()
if [ -z "${CDC_ENGINE_BIN:-}" ]; then NEEDED+=(build); fi
if [ "$PG_BIN" = /usr/lib/postgresql/15/bin ]; then NEEDED+=(postgres); fi
if [ ${#NEEDED[@]} -gt 0 ]; then syspkg_ensure "${NEEDED[@]}"; fi

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
-- Updates and deletes carry the whole old row in `before`.
ALTER TABLE public.customers REPLICA IDENTITY FULL;
INSERT INTO public.customers (name, email) VALUES
    ('Ada Lovelace', 'ada@example.com'),
    ('Alan Turing', 'alan@example.com'),
    ('Grace Hopper', 'grace@example.com');
EOF
say "created database demo with table public.customers (3 rows, replica identity full)"

# snapshot.mode initial is the default; written out here to show it.
cat >"$CONFIG" <<EOF
name: demo
source:
  url: $(pg_url "$PORT" demo)
  tables: [public.customers]
  publication: { name: demo_pub, create: true }
  slot: { name: demo_slot, create: true }
snapshot:
  mode: initial
sinks:
  - type: stdout
EOF
say "pipeline config $CONFIG:"
sed 's/^/    /' "$CONFIG" >&2

# ---------------------------------------------------------------- engine
if [ -n "${CDC_ENGINE_BIN:-}" ]; then
	ENGINE="$CDC_ENGINE_BIN"
else
	# Without the default features: the stdout sink only, so no librdkafka
	# (and no cmake) to build.
	say "building cdc-engine (debug, stdout sink only; the first build takes a few minutes)"
	(cd "$ROOT" && cargo build -q -p cdc-engine --no-default-features)
	ENGINE="$(cargo_target_dir)/debug/cdc-engine"
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
say "first the 3 existing rows as snapshot reads (op r), then the changes below as they happen"
# Events and the engine's log go to the terminal and, for the summary, to
# files.
"$ENGINE" run --config "$CONFIG" </dev/null > >(tee "$EVENTS") 2> >(tee "$ENGINE_LOG" >&2) &
ENGINE_PID=$!

# ---------------------------------------------------------------- writer
slot_exists() {
	[ "$(sql -At -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'demo_slot'" 2>/dev/null)" = 1 ]
}

# Changes to the table, one every DEMO_INTERVAL seconds, round after round,
# once the engine has created its slot: what is committed from then on is
# streamed, what was committed before is in the snapshot.
writer() {
	local round=0 n
	until slot_exists; do
		kill -0 "$ENGINE_PID" 2>/dev/null || return 0
		sleep 0.2
	done
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
if [ "$INTERRUPTED" = 1 ]; then
	# The Ctrl-C reached the engine too: it drains, acknowledges and exits
	# by itself (a second signal would make it stop at once).
	for ((i = 0; i < 150; i++)); do
		kill -0 "$ENGINE_PID" 2>/dev/null || break
		sleep 0.1
	done
	stop_pid "$ENGINE_PID" 15
	wait "$ENGINE_PID"
	ENGINE_RC=$?
fi
set -e
ENGINE_PID=""
stop_pid "$TIMER_PID" 1
stop_pid "$WRITER_PID" 2
TIMER_PID=""
WRITER_PID=""
sleep 0.3 # let tee write out the last lines

# ---------------------------------------------------------------- summary
# The envelope's `op` is the last one on each line (after `before`, `after`
# and `source`).
count_op() { sed -n 's/.*"op":"\([a-z]\)".*/\1/p' "$EVENTS" 2>/dev/null | grep -cx "$1" || true; }
READS="$(count_op r)"
INSERTS="$(count_op c)"
UPDATES="$(count_op u)"
DELETES="$(count_op d)"
# The slot's confirmed_flush_lsn: what the engine acknowledged to PostgreSQL
# (the engine logs the same on its way out: `stopped acknowledged=...`).
ACKED="$(sql -At -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'demo_slot'" 2>/dev/null || true)"
if [ -z "$ACKED" ]; then
	ACKED="$(sed -n 's/.*stopped.*acknowledged=\([0-9A-Fa-f]*\/[0-9A-Fa-f]*\).*/\1/p' "$ENGINE_LOG" 2>/dev/null | tail -n1)"
fi
plural() { if [ "$1" = 1 ]; then echo "$1 $2"; else echo "$1 $2s"; fi; }
if [ -n "$ACKED" ]; then
	SLOT_TEXT="the slot demo_slot is acknowledged up to $ACKED: every change before it is durable at the sink, a restart would resume from there."
else
	SLOT_TEXT="the slot demo_slot was not created."
fi
say "summary: $(plural "$READS" "snapshot read"), $(plural "$INSERTS" insert)," \
	"$(plural "$UPDATES" update), $(plural "$DELETES" delete); the engine exited with" \
	"status $ENGINE_RC and $SLOT_TEXT"
if [ "$ENGINE_RC" = 0 ] && [ -n "${DEMO_SECONDS:-}" ]; then
	if [ "$READS" = 0 ]; then
		say "no snapshot read was printed"
		exit 1
	fi
	if [ $((INSERTS + UPDATES + DELETES)) = 0 ]; then
		say "no streamed change was printed"
		exit 1
	fi
fi
exit "$ENGINE_RC"
