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
	local bin
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
	wait_ready osmem-server "$OSMEM_DIR/osmem.pid" "$OSMEM_DIR/osmem.log" 150 0.2 \
		curl -fsS "http://127.0.0.1:$OSMEM_PORT/" || return 1
	export CDC_TEST_OPENSEARCH_URL="http://127.0.0.1:$OSMEM_PORT"
	info "CDC_TEST_OPENSEARCH_URL=$CDC_TEST_OPENSEARCH_URL"
}

server_osmem_stop() {
	if [ "${KEEP_SERVERS:-0}" != 1 ]; then stop_pid_file "$OSMEM_DIR/osmem.pid" 2; fi
}

SERVERS+=(osmem)
