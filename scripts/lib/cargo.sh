# shellcheck shell=bash
# Where cargo puts this workspace's builds. Sourced by scripts/test.sh,
# scripts/chaos.sh, scripts/bench.sh and scripts/demo.sh.
#
#   cargo_target_dir   prints the target directory: $CARGO_TARGET_DIR when
#                      set, else the one `cargo metadata` names (a
#                      `build.target-dir` of a cargo config counts), else
#                      the workspace's target/

_CARGO_WORKSPACE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

cargo_target_dir() {
	if [ -n "${CARGO_TARGET_DIR:-}" ]; then
		echo "$CARGO_TARGET_DIR"
		return
	fi
	local dir
	dir="$(cd "$_CARGO_WORKSPACE" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
		sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
	echo "${dir:-$_CARGO_WORKSPACE/target}"
}
