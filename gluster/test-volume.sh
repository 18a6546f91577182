#!/usr/bin/env bash
# A real GlusterFS volume on this one machine, for the tests: a private glusterd (its own
# working directory, listening on 127.0.0.2 only, since the CLI refuses 127.0.0.1 and
# localhost as brick hosts), a replica-2 volume over two brick directories, the options of
# options.sh, and two FUSE mounts of it, as two nodes would have.
#
#   gluster/test-volume.sh up DIR     prints CELLGATE_GLUSTER_MOUNTS=DIR/mount1,DIR/mount2
#   gluster/test-volume.sh down DIR   unmounts, stops and removes everything under DIR
#
# Needs root, glusterfs-server and glusterfs-client, and /dev/fuse.
set -euo pipefail
. "$(dirname "$0")/options.sh"

action=${1:-}
dir=${2:-}
[ -n "$dir" ] && { [ "$action" = up ] || [ "$action" = down ]; } \
    || { echo "usage: $0 up|down DIR" >&2; exit 2; }
dir=${dir%/}
[ -d "$dir" ] && dir=$(cd "$dir" && pwd)
volname=${VOLNAME:-cellgate-test}
host=127.0.0.2
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'gluster/test-volume.sh: %s\n' "$*" >&2; exit 1; }
cli() { gluster --mode=script --glusterd-sock="$dir/glusterd.socket" "$@"; }

down() {
    # Every mount under DIR, as the kernel lists them: a mount whose client died (a killed
    # run) fails mountpoint's stat, yet still holds its directory.
    local mount
    while read -r _ mount _; do
        case "$mount" in
        "$dir"/*) umount "$mount" 2>/dev/null || umount -l "$mount" ;;
        esac
    done </proc/self/mounts
    if [ -S "$dir/glusterd.socket" ]; then
        cli volume stop "$volname" force >/dev/null 2>&1 || true
        cli volume delete "$volname" >/dev/null 2>&1 || true
    fi
    [ -f "$dir/glusterd.pid" ] && kill "$(cat "$dir/glusterd.pid")" 2>/dev/null || true
    # Brick servers (their command lines name the bricks under DIR) and the volume's
    # self-heal daemon, if they outlived glusterd.
    pkill -f -- "$dir/(brick|mount|glusterd)" 2>/dev/null || true
    pkill -f -- "--volfile-id shd/$volname " 2>/dev/null || true
    sleep 1
    rm -rf "$dir"
}

if [ "$action" = down ]; then
    [ -d "$dir" ] && down
    say "GlusterFS test volume under $dir removed"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (glusterd and FUSE mounts)"
command -v glusterd >/dev/null || die "glusterd is missing: apt-get install glusterfs-server"
command -v mount.glusterfs >/dev/null || die "mount.glusterfs is missing: apt-get install glusterfs-client"
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || die "/dev/fuse is missing: FUSE mounts are impossible here"
if ss -ltn 2>/dev/null | grep -qE "(\*|0\.0\.0\.0|$host|\[::\]):24007 "; then
    die "port 24007 is taken (another glusterd?): stop it first"
fi

[ -e "$dir" ] && die "$dir exists: use a new directory, or run down first"
mkdir -p "$dir"/{glusterd,brick1,brick2,mount1,mount2,log}
dir=$(cd "$dir" && pwd)
cat >"$dir/glusterd.vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $dir/glusterd
    option transport-type socket
    option transport.socket.bind-address $host
    option transport.socket.listen-port 24007
    option transport.socket.read-fail-log off
    option ping-timeout 0
    option event-threads 1
end-volume
EOF
trap 'say "failed: see $dir/log"; down' ERR

say "starting glusterd on $host (working directory $dir/glusterd)"
setsid glusterd -N -f "$dir/glusterd.vol" -p "$dir/glusterd.pid" -l "$dir/log/glusterd.log" \
    --xlator-option "management.glusterd-sockfile=$dir/glusterd.socket" </dev/null >/dev/null 2>&1 &
for _ in $(seq 60); do
    cli volume list >/dev/null 2>&1 && break
    sleep 0.5
done
cli volume list >/dev/null 2>&1 || { tail -20 "$dir/log/glusterd.log" >&2; die "glusterd did not answer"; }

say "creating volume $volname: replica 2 on $host:$dir/brick1 and $host:$dir/brick2"
cli volume create "$volname" replica 2 "$host:$dir/brick1" "$host:$dir/brick2" force >/dev/null
for option in "${STRICT_VOLUME_OPTIONS[@]}"; do
    cli volume set "$volname" "$option" off >/dev/null
done
for option in "${FAILOVER_VOLUME_OPTIONS[@]}"; do
    # shellcheck disable=SC2086
    cli volume set "$volname" $option >/dev/null
done
cli volume start "$volname" >/dev/null

for mount in mount1 mount2; do
    say "mounting $volname at $dir/$mount"
    for _ in $(seq 20); do
        mount -t glusterfs -o "$STRICT_MOUNT_OPTIONS,log-file=$dir/log/$mount.log" \
            "$host:/$volname" "$dir/$mount" 2>/dev/null && break
        sleep 0.5
    done
    mountpoint -q "$dir/$mount" || die "cannot mount $volname at $dir/$mount (see $dir/log/$mount.log)"
done

probe="check-$$-$RANDOM"
echo "$probe" >"$dir/mount1/.check"
[ "$(cat "$dir/mount2/.check")" = "$probe" ] || die "the second mount does not see the first one's file"
rm -f "$dir/mount1/.check"
trap - ERR
say "GlusterFS volume $volname is up, mounted twice"
echo "CELLGATE_GLUSTER_MOUNTS=$dir/mount1,$dir/mount2"
