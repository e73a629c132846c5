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
	local bin i
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
	for ((i = 0; i < 150; i++)); do
		if curl -fsS "http://127.0.0.1:$NOIDA_ES_PORT/" >/dev/null 2>&1 &&
			(exec 3<>"/dev/tcp/127.0.0.1/$NOIDA_KAFKA_PORT") 2>/dev/null; then
			export CDC_TEST_ES_URL="http://127.0.0.1:$NOIDA_ES_PORT"
			export CDC_TEST_NOIDA_KAFKA_BROKERS="127.0.0.1:$NOIDA_KAFKA_PORT"
			info "CDC_TEST_ES_URL=$CDC_TEST_ES_URL CDC_TEST_NOIDA_KAFKA_BROKERS=$CDC_TEST_NOIDA_KAFKA_BROKERS"
			return 0
		fi
		if ! kill -0 "$(cat "$NOIDA_DIR/noida.pid")" 2>/dev/null; then
			break
		fi
		sleep 0.2
	done
	info "noida-db did not come up; its log:"
	tail -n 30 "$NOIDA_DIR/noida.log" >&2 || true
	return 1
}

server_noida_stop() {
	local pid
	if [ -f "$NOIDA_DIR/noida.pid" ] && [ "${KEEP_SERVERS:-0}" != 1 ]; then
		pid="$(cat "$NOIDA_DIR/noida.pid")"
		kill "$pid" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$NOIDA_DIR/noida.pid"
	fi
}

SERVERS+=(noida)
