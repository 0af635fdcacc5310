#!/usr/bin/env bash
# debian-tree.sh: makes (once) a minimal Debian root tree for start-systemd.sh
# to boot a newer systemd than this machine's own, as the lower layer of the
# container (SDCI_LOWER). Reused when present: it is a cache, not the
# project's to ship; nothing in it is changed by the containers (their writes
# go to a tmpfs upper layer).
#
#   debian-tree.sh [SUITE [DIR]]   default: trixie (systemd 257) in
#                                  /var/tmp/hitless-root-trixie; prints DIR
#
# The tree has systemd, D-Bus and procps, and what the tests run inside:
# an OpenSSH server and Python (examples/ansible connects to "hosts" in the
# container). ~40 s and ~300 MB from the Debian mirror apt already uses.
# Binaries run inside must be static (CGO_ENABLED=0) or find their libraries
# in the tree. Concurrent callers wait for one another (flock); a tree is
# complete only once its stamp file exists, so an interrupted run is redone.
set -euo pipefail

SUITE=${1:-trixie}
DIR=${2:-/var/tmp/hitless-root-$SUITE}
STAMP=$DIR/.hitless-debian-tree
PACKAGES=systemd,systemd-sysv,dbus,procps,openssh-server,python3

log() { printf '[debian-tree %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$SUITE" in *[!a-z]* | "") die "SUITE must be a Debian suite name like trixie, not '$SUITE'" ;; esac
case "$DIR" in /*/*) ;; *) die "DIR must be an absolute path at least two levels deep, not '$DIR'" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (debootstrap)"

if [ -f "$STAMP" ]; then echo "$DIR"; exit 0; fi

exec 9>"$DIR.lock"
flock -w 600 9 || die "another debian-tree.sh held $DIR.lock for 10 minutes"
if [ -f "$STAMP" ]; then echo "$DIR"; exit 0; fi

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1; then
        apt-get update -qq || { sleep 5; apt-get update -qq; }
        apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
fi

# The mirror apt already uses (a deb822 URIs: line, or a one-line deb entry).
mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | awk '{print $2; exit}')
[ -n "$mirror" ] || mirror=$(grep -hs '^deb .*debian' /etc/apt/sources.list | awk '{print $2; exit}')
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

tmp=$DIR.tmp
rm -rf -- "$tmp"
log "debootstrap $SUITE into $DIR from $mirror (~40 s)"
t0=$SECONDS
# A suite newer than this machine's debootstrap (forky, with systemd 258+,
# on Debian 12) has no script of its own yet: those suites bootstrap as
# sid does.
script=()
if [ ! -e "/usr/share/debootstrap/scripts/$SUITE" ]; then
    script=(/usr/share/debootstrap/scripts/sid)
    log "no debootstrap script for $SUITE here: using sid's"
fi
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$mirror" "${script[@]}" >"$DIR.log" 2>&1; then
    tail -20 "$DIR.log" >&2
    rm -rf -- "$tmp"
    die "debootstrap failed (whole log in $DIR.log)"
fi
# No service of the tree starts by itself in the container: units are the
# tests' own (start-systemd.sh binds its units/ over /etc/systemd/system).
rm -rf -- "$DIR"
mv -- "$tmp" "$DIR"
version=$(chroot "$DIR" /lib/systemd/systemd --version | head -1)
case "$version" in systemd\ [0-9]*) ;; *) die "the tree's systemd says '$version'" ;; esac
echo "$version" >"$STAMP"
log "made in $((SECONDS - t0))s: $(cat "$STAMP"), $(du -sh "$DIR" | cut -f1)"
echo "$DIR"
