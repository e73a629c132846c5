#!/usr/bin/env bash
# The chaos suite: several engine instances sharing one slot and one
# snapshot, a concurrent writer, faults at random moments, and a check that
# the merged outputs converge to the tables.
#
#   scripts/chaos.sh [--rounds N] [--seed S] [--dir D] [--keep]
#
#   --rounds N   rounds to run (default 3); about 40 s each on 2 cores
#   --seed S     seed of the fault schedule (default: random, printed);
#                round 1 runs with S, and every round prints its own seed:
#                `--seed <a round's seed> --rounds 1` replays that round's
#                schedule (the engines' own timing still differs)
#   --dir D      where the round directories go (default
#                $TMPDIR/cdc-chaos-<seed>)
#   --keep       keep the directories of rounds that passed too
#
# Each round, on a PostgreSQL 15 cluster of the run's own (scripts/pg.sh, a
# free port, removed at the end): a fresh database with three tables (plain;
# TOASTed text columns, replica identity DEFAULT or FULL; a composite key)
# pre-filled so the snapshot takes several seconds in small chunks; three
# `cdc-engine run` instances with the same slot, a file sink each, a short
# claim_timeout (3 s); a writer (inserts, updates with and without the
# TOASTed columns, key changes, deletes, sometimes a TRUNCATE) for 20 s;
# meanwhile kill -9 and restart of instances (random ones, the leader, or
# all three at once; each incarnation writes a new file), SIGSTOP past
# claim_timeout then SIGCONT, pg_terminate_backend on
# engine sessions, and one server restart (`pg_ctl restart -m fast`, or
# `-m immediate`); in half the rounds incremental snapshots are on and
# signal rows ask for one or two (of the largest table and maybe others),
# which run through those faults. Then the writer stops, every instance
# runs, and once the incremental snapshots are done, the slot has confirmed
# the current WAL position and the files stopped growing, every file is
# merged by (commit_lsn, ordinal), applied by key and compared with the
# tables.
#
# Output: one line per round (seed, faults, rows compared, ok/FAILED,
# duration), the first differences and the fault log of a failed round,
# and a summary line. A failed round's directory (engine configs and logs,
# output files, failure.txt, faults.log, postgres.log) is kept and its path
# printed.
# Exit status 1 when a round failed.
#
# It builds the failpoints engine the way scripts/test.sh does (debug, same
# target directory: CARGO_TARGET_DIR or the workspace's target/) and the
# chaos binary (integration-tests/src/bin/chaos/), and installs
# PostgreSQL 15 when it is missing (scripts/system-packages.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/pg.sh
source "$ROOT/scripts/pg.sh"
# shellcheck source=scripts/lib/cargo.sh
source "$ROOT/scripts/lib/cargo.sh"

info() { printf 'chaos.sh: %s\n' "$*"; }

for a in "$@"; do
	case "$a" in
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	esac
done

# The C toolchain and librdkafka's build headers (the chaos binary is in the
# integration-tests crate, which links the Kafka client), and PostgreSQL 15.
syspkg_ensure build sinks postgres
pg_ensure_installed

info "building cdc-engine (failpoints) and the chaos binary"
cargo build -p cdc-engine --features failpoints
cargo build -p integration-tests --bin chaos
TARGET="$(cargo_target_dir)"
export CDC_ENGINE_BIN="$TARGET/debug/cdc-engine"
info "CDC_ENGINE_BIN=$CDC_ENGINE_BIN"
exec "$TARGET/debug/chaos" "$@"
