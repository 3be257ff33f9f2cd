#!/usr/bin/env bash
# The native API held to its OpenAPI document by a real tool: schemathesis
# (PyPI, pinned) generates requests from /api/v1/openapi.json and runs them
# against a real `essaim daemon` on 127.0.0.1, checking every reply: no
# 5xx, status codes, content types, headers and bodies as the document
# says, schema-violating requests refused, and (the daemon requires
# credentials even from loopback here) requests without the token refused.
#
#     tests/api/schemathesis.sh [path/to/essaim]   # default target/release/essaim
#
# Environment: ESSAIM_VENV (default target/test-venv), ST_EXAMPLES (50),
# ST_SEED (1; a fixed seed keeps CI repeatable, change it to explore).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/essaim}
VENV=${ESSAIM_VENV:-target/test-venv}
EXAMPLES=${ST_EXAMPLES:-50}
SEED=${ST_SEED:-1}

tests/api/venv.sh "$VENV"
[ -x "$BIN" ] || { echo "schemathesis.sh: $BIN is missing (cargo build --release)" >&2; exit 1; }

WORK=$(mktemp -d)
PID=
cleanup() {
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/config.toml" <<TOML
dht = false
lsd = false
listen_ip = "127.0.0.1"
port = 0
[api]
listen = "127.0.0.1:$PORT"
loopback_without_auth = false
ban_after = 0
TOML
"$BIN" daemon --config "$WORK/config.toml" --state-dir "$WORK/state" \
    --download-dir "$WORK/dl" >"$WORK/daemon.log" 2>&1 &
PID=$!
API="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
    grep -q '^API on' "$WORK/daemon.log" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/daemon.log" >&2; exit 1; }
    sleep 0.1
done
grep -q '^API on' "$WORK/daemon.log" || { echo "the daemon did not start" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
TOKEN=$(cat "$WORK/state/api-token")

# Something to look at: a torrent of a small file, and a magnet link.
mkdir -p "$WORK/src"
head -c 100000 /dev/urandom >"$WORK/src/sample.bin"
"$BIN" create "$WORK/src/sample.bin" -o "$WORK/sample.torrent" >/dev/null
ESSAIM_API_TOKEN=$TOKEN "$BIN" add "$WORK/sample.torrent" --api "$API" >/dev/null
ESSAIM_API_TOKEN=$TOKEN "$BIN" add "magnet:?xt=urn:btih:$(printf 'ab%.0s' $(seq 20))&dn=m" --paused --api "$API" >/dev/null

"$VENV/bin/schemathesis" run "$API/api/v1/openapi.json" \
    -H "Authorization: Bearer $TOKEN" \
    --checks all --exclude-checks positive_data_acceptance \
    --exclude-path /api/v1/events \
    --max-examples "$EXAMPLES" --seed "$SEED" \
    --workers 1 --no-color
kill -0 "$PID" || { echo "the daemon died" >&2; cat "$WORK/daemon.log" >&2; exit 1; }
echo "schemathesis: no failure; the daemon is still up"
