# shellcheck shell=bash
# Processes: a script's cleanup when it exits, and the background processes
# it starts, waited for until ready and stopped. Sourced by scripts/test.sh
# (also for the servers of scripts/servers/), scripts/bench.sh and
# scripts/demo.sh; `on_exit` and `wait_ready` report with the caller's
# `info`.
#
#   on_exit FUNCTION           runs FUNCTION once when the script exits: at
#                              its end, on a failure, or on SIGINT, SIGTERM
#                              or SIGHUP (exit status 130, 143, 129), with
#                              those signals ignored and `set -e` off while
#                              it runs; the exit status stays the script's
#   stop_pid PID [GRACE]       SIGTERM, then SIGKILL after GRACE seconds
#                              (default 5); nothing when PID is empty or gone
#   stop_pid_file FILE [GRACE] stop_pid of the pid in FILE, then removes FILE;
#                              nothing when FILE does not exist
#   wait_ready NAME PID_FILE LOG TRIES PAUSE CHECK...
#                              runs CHECK... (its output discarded) up to
#                              TRIES times, PAUSE seconds apart, until it
#                              succeeds (status 0), or until the process of
#                              PID_FILE is gone; then prints the end of LOG
#                              and returns 1

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

stop_pid_file() {
	[ -f "$1" ] || return 0
	stop_pid "$(cat "$1")" "${2:-5}"
	rm -f "$1"
}

wait_ready() {
	local name="$1" pid_file="$2" log="$3" tries="$4" pause="$5" i
	shift 5
	for ((i = 0; i < tries; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
			break
		fi
		sleep "$pause"
	done
	info "$name did not come up; its log:"
	tail -n 30 "$log" >&2 || true
	return 1
}

_on_exit_function=""

# (shellcheck cannot see that the trap calls it.)
# shellcheck disable=SC2317
_on_exit_run() {
	local rc=$?
	trap - EXIT
	# Finish the cleanup even if the terminal goes away or Ctrl-C is
	# pressed again.
	trap '' INT TERM PIPE HUP
	set +e
	"$_on_exit_function"
	exit "$rc"
}

on_exit() {
	_on_exit_function="$1"
	trap _on_exit_run EXIT
	trap 'info "interrupted"; exit 130' INT
	trap 'info "terminated"; exit 143' TERM
	trap 'info "hangup"; exit 129' HUP
}
