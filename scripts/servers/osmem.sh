# shellcheck shell=bash
# osmem-server: an in-memory server with the OpenSearch 3.x API, the second
# implementation the Elasticsearch sink is tested against. Sourced by
# scripts/test.sh (see README.md here).
#
# Exports: CDC_TEST_OPENSEARCH_URL=http://127.0.0.1:$OSMEM_PORT
# Knob: CDC_TEST_OSMEM_PORT (9201).

OSMEM_VERSION="0.1.6"
OSMEM_PORT="${CDC_TEST_OSMEM_PORT:-9201}"
OSMEM_DIR="$WORK_DIR/osmem"

server_osmem_install() { venv_install "osmem-server==$OSMEM_VERSION"; }

server_osmem_start() {
	local bin i
	# The wheel ships the binary inside the package, not in the venv's bin.
	bin="$("$CDC_TEST_VENV/bin/python" -c 'import os, osmem_server; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))' 2>/dev/null)" || bin=""
	if [ -z "$bin" ] || [ ! -x "$bin" ]; then
		info "osmem-server is not installed in $CDC_TEST_VENV"
		return 1
	fi
	rm -rf "$OSMEM_DIR"
	mkdir -p "$OSMEM_DIR"
	"$bin" -addr "127.0.0.1:$OSMEM_PORT" -no-stdin-watch -no-ja \
		</dev/null >"$OSMEM_DIR/osmem.log" 2>&1 &
	echo $! >"$OSMEM_DIR/osmem.pid"
	for ((i = 0; i < 150; i++)); do
		if curl -fsS "http://127.0.0.1:$OSMEM_PORT/" >/dev/null 2>&1; then
			export CDC_TEST_OPENSEARCH_URL="http://127.0.0.1:$OSMEM_PORT"
			info "CDC_TEST_OPENSEARCH_URL=$CDC_TEST_OPENSEARCH_URL"
			return 0
		fi
		if ! kill -0 "$(cat "$OSMEM_DIR/osmem.pid")" 2>/dev/null; then
			break
		fi
		sleep 0.2
	done
	info "osmem-server did not come up; its log:"
	tail -n 30 "$OSMEM_DIR/osmem.log" >&2 || true
	return 1
}

server_osmem_stop() {
	local pid
	if [ -f "$OSMEM_DIR/osmem.pid" ] && [ "${KEEP_SERVERS:-0}" != 1 ]; then
		pid="$(cat "$OSMEM_DIR/osmem.pid")"
		kill "$pid" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$OSMEM_DIR/osmem.pid"
	fi
}

SERVERS+=(osmem)
