#!/usr/bin/env bash
# start-systemd.sh: a real, isolated systemd (Debian 12's systemd 252) for
# hitless's tests, on a machine whose PID 1 need not be systemd.
#
# systemd-nspawn boots /lib/systemd/systemd as PID 1 of a container whose root
# is a throw-away overlay: lower layer = the machine's own / (read-only), upper
# layer = tmpfs. Every mount is made inside a private mount namespace
# (unshare --mount --propagation private), so nothing is mounted on the host
# and everything vanishes with the container; what the container writes
# (journal, /var, /etc) lands in the tmpfs, never on the host's disk.
#
# Never "simplify" this into booting systemd on the shared host root (for
# example `unshare -p -m -f /lib/systemd/systemd`): it boots, but then
# systemd-tmpfiles wipes the host's /tmp, systemd-sysctl writes host sysctls
# and journald writes into the host's /var/log.
#
# Usage (as root; idempotent; no stdin needed):
#   start-systemd.sh [start]  boot the container (no-op if it already runs);
#                             installs systemd-container with apt-get if missing
#   start-systemd.sh stop     halt it and remove every trace (mounts lived in
#                             the private namespace; cgroups, processes and the
#                             state directory are removed)
#   start-systemd.sh status   print the state; exit 0 only while it runs
#
# After `start`, in $SDCI_STATE:
#   leader.pid  host PID of the container's systemd (PID 1 inside); enter it
#               with: nsenter --target "$(cat leader.pid)" --mount --pid --uts --ipc -- systemctl ...
#   bin/sdctl   systemctl against the container's systemd
#   bin/sdexec  any command inside the container (all its namespaces)
#   units/      the container's /etc/systemd/system (then `sdctl daemon-reload`)
#   share/      bound at the same path inside: put test binaries here, so
#               ExecStart= paths work unchanged
#   nspawn.log  the container's console
# The container shares the host's network namespace (127.0.0.1 is the same on
# both sides); its PID namespace is its own.
# Go tests use it through internal/sdtest (HITLESS_SYSTEMD_STATE=$SDCI_STATE
# makes them reuse this container instead of booting their own).
#
# Knobs: SDCI_STATE (default /var/tmp/hitless-sdci), SDCI_NAME (machine name,
# default hitless-sdci; several containers may run at once with different
# SDCI_NAME and SDCI_STATE), SDCI_TARGET (default basic.target),
# SDCI_CGROUP (unified (default): pure cgroup2 inside, like a stock Debian 12;
# hybrid: what nspawn picks on a hybrid host), SDCI_BOOT_TIMEOUT (seconds,
# default 60), SDCI_NO_INSTALL=1 (fail instead of running apt-get),
# SDCI_LOWER (the read-only lower layer of the container's root: default /,
# the machine's own root and systemd; a Debian tree made by debian-tree.sh
# boots that tree's systemd instead, e.g. trixie's 257).
set -euo pipefail

STATE=${SDCI_STATE:-/var/tmp/hitless-sdci}
NAME=${SDCI_NAME:-hitless-sdci}
TARGET=${SDCI_TARGET:-basic.target}
CGROUP_MODE=${SDCI_CGROUP:-unified}
BOOT_TIMEOUT=${SDCI_BOOT_TIMEOUT:-60}
LOWER=${SDCI_LOWER:-/}
CG_NAME="sdci-$NAME"            # our cgroup, under each host hierarchy's root
MARKER=.hitless-sdci            # marks a state directory that `stop` may delete
SELF=$(readlink -f "$0")

log() { printf '[start-systemd %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
case "$STATE" in
    /*/*) ;;
    *) die "SDCI_STATE must be an absolute path at least two levels deep, not '$STATE'" ;;
esac
case "$NAME" in
    *[!A-Za-z0-9-]* | "" | -*) die "SDCI_NAME must be letters, digits and '-': '$NAME'" ;;
esac

host_has_systemd() { [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

# Host cgroup hierarchies nspawn writes to: /sys/fs/cgroup on a pure cgroup2
# host; the named v1 "systemd" hierarchy and the v2 one on a hybrid host.
cgroup_roots() {
    if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then echo /sys/fs/cgroup; return 0; fi
    [ -f /sys/fs/cgroup/systemd/cgroup.procs ] && echo /sys/fs/cgroup/systemd
    [ -f /sys/fs/cgroup/unified/cgroup.procs ] && echo /sys/fs/cgroup/unified
    return 0
}

nspawn_pid() {   # PID of our running systemd-nspawn, or fail
    local p
    p=$(cat "$STATE/nspawn.pid" 2>/dev/null) || return 1
    [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "systemd-nspawn .*--machine=$NAME " || return 1
    echo "$p"
}

leader_pid() {   # host PID of the container's PID 1: nspawn's child named systemd
    local n c
    n=$(nspawn_pid) || return 1
    for c in $(cat /proc/"$n"/task/*/children 2>/dev/null); do
        if [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ]; then echo "$c"; return 0; fi
    done
    return 1
}

# ---------------------------------------------------------------- __launch
# Runs inside `unshare --mount --propagation private`: builds the overlay root
# and execs systemd-nspawn (same PID). Not meant to be called by hand.
launch() {
    echo $$ >"$STATE/nspawn.pid"
    local r cg_opts=(--register=no)
    if ! host_has_systemd; then
        # No machined/D-Bus on the host: without --keep-unit nspawn fails with
        # "Failed to open system bus". With it, nspawn creates payload/ and
        # supervisor/ next to its own cgroup: move into a dedicated one first.
        cg_opts+=(--keep-unit)
        for r in $(cgroup_roots); do
            mkdir -p "$r/$CG_NAME"
            echo $$ >"$r/$CG_NAME/cgroup.procs"
        done
        # nspawn would leave /run/systemd/nspawn* behind on a disk-backed /run.
        mkdir -p /run/systemd
        mount -n -t tmpfs -o mode=0755,size=16m sdci-run /run/systemd
    fi
    # The throw-away root, over the machine's own root or a Debian tree.
    # (nspawn refuses -D / with --volatile=overlay.)
    mount -n -t tmpfs -o mode=0755 sdci-ovl "$STATE/ovl"
    mkdir -p "$STATE/ovl/upper" "$STATE/ovl/work"
    mount -n -t overlay sdci-root \
        -o "lowerdir=$LOWER,upperdir=$STATE/ovl/upper,workdir=$STATE/ovl/work" "$STATE/root"
    # Own machine id (journald refuses to link the journal when it equals the
    # host's) and hostname.
    systemd-id128 new >"$STATE/root/etc/machine-id"
    echo "$NAME" >"$STATE/root/etc/hostname"

    if [ "$CGROUP_MODE" = unified ]; then export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1; fi
    # units/ replaces /etc/systemd/system, masking the host's enabled units.
    # No --private-network: the container shares the host's network.
    exec systemd-nspawn \
        --quiet --directory="$STATE/root" --machine="$NAME" --hostname="$NAME" \
        "${cg_opts[@]}" --console=read-only \
        --bind="$STATE/units:/etc/systemd/system" --bind="$STATE/share" \
        --boot -- "systemd.unit=$TARGET"
}

# ---------------------------------------------------------------- stop
cg_pids() {      # PIDs still in our cgroup trees
    local r
    for r in $(cgroup_roots); do
        if [ -d "$r/$CG_NAME" ]; then find "$r/$CG_NAME" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
    done | sort -un
}

wait_gone() {    # wait_gone SECONDS PID...: until none is alive (zombies count as gone)
    local t=$1 i p alive; shift
    for ((i = 0; i < t * 10; i++)); do
        alive=
        for p in "$@"; do
            [ -r "/proc/$p/stat" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && alive=1
        done
        [ -z "$alive" ] && return 0
        sleep 0.1
    done
    return 1
}

stop() {
    local n l p r d i left
    if n=$(nspawn_pid); then
        log "stopping container $NAME (nspawn pid $n)"
        # SIGTERM to nspawn halts the container cleanly (0.2-2 s).
        kill -TERM "$n" 2>/dev/null || true
        wait_gone 30 "$n" || { log "nspawn did not exit in 30s, killing it"; kill -KILL "$n" 2>/dev/null || true; }
    fi
    # If nspawn died uncleanly, the container's PID 1 lives on as an orphan:
    # halt it, then SIGKILL whatever is left in our cgroups.
    l=$(cat "$STATE/leader.pid" 2>/dev/null || true)
    if [ -n "$l" ] && cg_pids | grep -qx "$l"; then
        log "container PID 1 ($l) is orphaned, halting it"
        kill -s RTMIN+3 "$l" 2>/dev/null || true
        wait_gone 15 "$l" || kill -KILL "$l" 2>/dev/null || true
        wait_gone 5 "$l" || true
    fi
    for p in $(cg_pids); do kill -KILL "$p" 2>/dev/null || true; done
    # shellcheck disable=SC2046
    wait_gone 5 $(cg_pids) || log "processes left in cgroup: $(cg_pids | tr '\n' ' ')"
    for r in $(cgroup_roots); do
        [ -d "$r/$CG_NAME" ] || continue
        find "$r/$CG_NAME" -depth -type d | while read -r d; do
            for ((i = 0; i < 20; i++)); do rmdir "$d" 2>/dev/null && break; sleep 0.1; done
            if [ -d "$d" ]; then log "could not remove cgroup $d"; fi
        done
    done
    left=$(cg_pids)
    [ -z "$left" ] || die "processes left in cgroup $CG_NAME: $left; state kept in $STATE"
    # The mounts lived in the private namespace, now gone: on the host, root/
    # and ovl/ are plain empty directories. Delete the state directory only if
    # `start` made it ours (never a directory someone else named).
    if [ -f "$STATE/$MARKER" ]; then
        rmdir "$STATE/root" "$STATE/ovl" 2>/dev/null || true
        if [ -d "$STATE/root" ] || [ -d "$STATE/ovl" ]; then
            die "$STATE/root or $STATE/ovl is not empty (still mounted?); state kept"
        fi
        rm -rf -- "$STATE"
    fi
}

# ---------------------------------------------------------------- start
install_deps() {
    local missing=()
    command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    command -v nsenter >/dev/null || missing+=(util-linux)
    [ -x /lib/systemd/systemd ] || missing+=(systemd)
    [ "$LOWER" = / ] || [ -x "$LOWER/lib/systemd/systemd" ] ||
        die "SDCI_LOWER=$LOWER has no lib/systemd/systemd (make it with debian-tree.sh)"
    [ ${#missing[@]} = 0 ] && return 0
    [ -z "${SDCI_NO_INSTALL:-}" ] || die "missing ${missing[*]} (SDCI_NO_INSTALL is set)"
    log "installing ${missing[*]}"
    local t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    # Try with the package lists we have; refresh them only if that fails.
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq || { sleep 5; apt-get update -qq; }
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    log "installed in $((SECONDS - t0))s"
}

write_helpers() {
    mkdir -p "$STATE/bin"
    cat >"$STATE/bin/sdctl" <<EOF
#!/bin/sh
# systemctl against the $NAME container's systemd
exec nsenter --target "\$(cat $STATE/leader.pid)" --mount --pid --uts --ipc -- systemctl --no-pager "\$@"
EOF
    cat >"$STATE/bin/sdexec" <<EOF
#!/bin/sh
# run a command inside the $NAME container
exec nsenter --target "\$(cat $STATE/leader.pid)" --all -- "\$@"
EOF
    chmod +x "$STATE/bin/sdctl" "$STATE/bin/sdexec"
}

start() {
    local l
    if l=$(leader_pid); then
        log "already running (leader pid $l)"
        echo "$l" >"$STATE/leader.pid"
        return 0
    fi
    stop >/dev/null 2>&1 || true     # clean up a stale or half-dead earlier run
    install_deps
    mkdir -p "$STATE/root" "$STATE/ovl" "$STATE/units" "$STATE/share"
    touch "$STATE/$MARKER"
    write_helpers

    local t0=$EPOCHREALTIME i n launcher st
    l=
    rm -f "$STATE/nspawn.pid"
    # setsid + all fds redirected: the container must not hold the caller's
    # stdout/stderr open nor get its terminal's signals.
    setsid nohup unshare --mount --propagation private -- /bin/bash "$SELF" __launch \
        </dev/null >"$STATE/nspawn.log" 2>&1 &
    launcher=$!

    # 1. the container's PID 1 appears
    for ((i = 0; i < BOOT_TIMEOUT * 10; i++)); do
        if l=$(leader_pid); then break; fi
        l=
        n=$(cat "$STATE/nspawn.pid" 2>/dev/null || echo "$launcher")
        if ! kill -0 "$n" 2>/dev/null; then
            cat "$STATE/nspawn.log" >&2; stop || true; die "systemd-nspawn exited during start"
        fi
        sleep 0.1
    done
    [ -n "$l" ] || { cat "$STATE/nspawn.log" >&2; stop || true; die "container PID 1 did not appear in ${BOOT_TIMEOUT}s"; }
    echo "$l" >"$STATE/leader.pid"
    # 2. its private bus socket appears (before it, systemctl fails with
    #    "Failed to connect to bus")
    for ((i = 0; i < BOOT_TIMEOUT * 10; i++)); do
        [ -S "/proc/$l/root/run/systemd/private" ] && break
        sleep 0.1
    done
    # 3. the boot transaction finishes
    st=$(timeout "$BOOT_TIMEOUT" "$STATE/bin/sdctl" is-system-running --wait 2>&1 || true)
    case "$st" in
        running | degraded) ;;
        *) tail -50 "$STATE/nspawn.log" >&2; stop || true; die "container did not boot: $st" ;;
    esac
    log "systemd up in $(awk "BEGIN{printf \"%.2f\", $EPOCHREALTIME - $t0}")s: state=$st leader=$l ($("$STATE/bin/sdctl" --version | head -1)); state dir $STATE"
    [ "$st" = running ] || "$STATE/bin/sdctl" --failed >&2 || true
}

status() {
    local l
    if l=$(leader_pid); then
        echo "running: name=$NAME state-dir=$STATE nspawn=$(nspawn_pid) leader=$l system=$(timeout 10 "$STATE/bin/sdctl" is-system-running 2>&1 || true)"
    else
        echo "not running: name=$NAME state-dir=$STATE"
        return 1
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop; log "stopped $NAME" ;;
    status) status ;;
    __launch) launch ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac
