#!/usr/bin/env bash
# Start, wait for, and stop the Azurite storage emulator on 127.0.0.1.
#   scripts/azurite.sh start [DIR]   start in the background (state in DIR, default a temp dir)
#   scripts/azurite.sh stop          stop the instance this script started
#   scripts/azurite.sh status        exit 0 if Azurite answers
# Ports: AZURITE_BLOB_PORT (10000), AZURITE_QUEUE_PORT (10001), AZURITE_TABLE_PORT (10002).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/node_modules/.bin/azurite"
blob=${AZURITE_BLOB_PORT:-10000}
queue=${AZURITE_QUEUE_PORT:-10001}
table=${AZURITE_TABLE_PORT:-10002}
pidfile="${AZURITE_PIDFILE:-$root/.azurite/azurite.pid}"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$table") 2>/dev/null; }

case "${1:-}" in
  start)
    [ -x "$bin" ] || { echo "azurite is not installed: run 'npm ci' in $root" >&2; exit 1; }
    if answers; then echo "azurite already answers on 127.0.0.1:$table"; exit 0; fi
    dir="${2:-$(mktemp -d -t azurite.XXXXXX)}"
    mkdir -p "$dir" "$(dirname "$pidfile")"
    "$bin" --silent --disableTelemetry --skipApiVersionCheck --loose \
      --blobHost 127.0.0.1 --blobPort "$blob" \
      --queueHost 127.0.0.1 --queuePort "$queue" \
      --tableHost 127.0.0.1 --tablePort "$table" \
      --location "$dir" >"$dir/azurite.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 150); do
      if answers; then echo "azurite up on 127.0.0.1 (table $table, state in $dir)"; exit 0; fi
      sleep 0.2
    done
    echo "azurite did not answer within 30 s; log:" >&2; cat "$dir/azurite.log" >&2; exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
    ;;
  status)
    answers
    ;;
  *) echo "usage: $0 start [DIR] | stop | status" >&2; exit 2 ;;
esac
