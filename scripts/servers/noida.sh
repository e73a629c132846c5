# shellcheck shell=bash
# noida-db: the Elasticsearch 8 API (for the Elasticsearch sink tests) and a
# second Kafka-protocol broker (for the Kafka sink tests), one process.
# Sourced by scripts/test.sh (see README.md here).
#
# Exports:
#   CDC_TEST_ES_URL              http://127.0.0.1:$NOIDA_ES_PORT
#   CDC_TEST_NOIDA_KAFKA_BROKERS 127.0.0.1:$NOIDA_KAFKA_PORT
# Knobs: CDC_TEST_NOIDA_ES_PORT (9200), CDC_TEST_NOIDA_KAFKA_PORT (9093).

NOIDA_VERSION="0.2.3"
NOIDA_ES_PORT="${CDC_TEST_NOIDA_ES_PORT:-9200}"
NOIDA_KAFKA_PORT="${CDC_TEST_NOIDA_KAFKA_PORT:-9093}"
NOIDA_DIR="$WORK_DIR/noida"

server_noida_install() { venv_install "noida-db==$NOIDA_VERSION"; }

server_noida_start() {
	local bin
	# The venv's `noida-db` is a Python wrapper that runs the packaged
	# binary as a child: run the binary itself, so the pid file names the
	# server and stopping it stops the server.
	bin="$("$CDC_TEST_VENV/bin/python" -c 'import os, noida_db; print(os.path.join(os.path.dirname(noida_db.__file__), "noida-db"))' 2>/dev/null)" || bin=""
	if [ -z "$bin" ] || [ ! -f "$bin" ]; then
		info "noida-db is not installed in $CDC_TEST_VENV"
		return 1
	fi
	[ -x "$bin" ] || chmod 755 "$bin" || return 1
	# A fresh data directory each run: noida keeps indices on disk.
	rm -rf "$NOIDA_DIR"
	mkdir -p "$NOIDA_DIR/data"
	"$bin" start --host 127.0.0.1 --data-dir "$NOIDA_DIR/data" --only elasticsearch,kafka \
		--elasticsearch-port "$NOIDA_ES_PORT" --kafka-port "$NOIDA_KAFKA_PORT" \
		</dev/null >"$NOIDA_DIR/noida.log" 2>&1 &
	echo $! >"$NOIDA_DIR/noida.pid"
	wait_ready noida-db "$NOIDA_DIR/noida.pid" "$NOIDA_DIR/noida.log" 150 0.2 noida_ready || return 1
	export CDC_TEST_ES_URL="http://127.0.0.1:$NOIDA_ES_PORT"
	export CDC_TEST_NOIDA_KAFKA_BROKERS="127.0.0.1:$NOIDA_KAFKA_PORT"
	info "CDC_TEST_ES_URL=$CDC_TEST_ES_URL CDC_TEST_NOIDA_KAFKA_BROKERS=$CDC_TEST_NOIDA_KAFKA_BROKERS"
}

# Both of its APIs answer.
noida_ready() {
	curl -fsS "http://127.0.0.1:$NOIDA_ES_PORT/" && (exec 3<>"/dev/tcp/127.0.0.1/$NOIDA_KAFKA_PORT")
}

server_noida_stop() {
	if [ "${KEEP_SERVERS:-0}" != 1 ]; then stop_pid_file "$NOIDA_DIR/noida.pid" 2; fi
}

SERVERS+=(noida)
