#!/usr/bin/env bash
# outside-deps.sh: installs the load tools nobody here wrote, which the
# outside-client tests drive and whose own counts they assert on: wrk,
# ab (apache2-utils), h2load (nghttp2-client) and dnsperf, from Debian's
# packages.
# Idempotent; ~0 s when they are there. (ghz, the gRPC load tool, is built
# by its test with `go install` through the module proxy and cached.)
set -euo pipefail

log() { printf '[outside-deps %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v ab >/dev/null || missing+=(apache2-utils)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v dnsperf >/dev/null || missing+=(dnsperf)
if [ ${#missing[@]} = 0 ]; then
    log "wrk, ab, h2load and dnsperf are installed"
    exit 0
fi
[ "$(id -u)" = 0 ] || { log "ERROR: missing ${missing[*]}, and installing them needs root"; exit 1; }
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed ${missing[*]}"
