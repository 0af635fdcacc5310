#!/usr/bin/env bash
# ansible-deps.sh: installs what examples/ansible's test needs, if missing:
# Ansible (Debian's ansible-core: ansible-playbook and the builtin modules)
# and an OpenSSH server (the test runs sshd inside the systemd container as
# the "hosts" Ansible connects to). Idempotent; ~0 s when both are there.
#
# Run it BEFORE booting the container (.ci/systemd/start-systemd.sh start):
# the container's root is an overlay of this machine's /, and files added to
# / after the boot may not show inside.
#
# No service is started by the install: a policy-rc.d refuses it for the
# duration (no sshd on this machine's port 22), unless one is already there.
set -euo pipefail

log() { printf '[ansible-deps %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

missing=()
command -v ansible-playbook >/dev/null || missing+=(ansible-core)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
if [ ${#missing[@]} = 0 ]; then
    log "ansible-playbook and sshd are installed"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "missing ${missing[*]}, and installing them needs root"

policy=/usr/sbin/policy-rc.d
ours=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# ansible-deps.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    ours=1
fi
cleanup() { if [ -n "$ours" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

log "installing ${missing[*]}"
t0=$SECONDS
export DEBIAN_FRONTEND=noninteractive
# Try with the package lists we have; refresh them only if that fails.
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq || { sleep 5; apt-get update -qq; }
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log "installed in $((SECONDS - t0))s: $(dpkg-query -W -f '${Package} ${Version}  ' ansible-core openssh-server)"
