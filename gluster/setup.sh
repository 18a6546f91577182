#!/usr/bin/env bash
# `make gluster NODES="a b c"`: the shared volume on GlusterFS, from this machine over ssh
# (key-based: `ssh-copy-id root@NODE` first; no password is ever asked for or stored).
#   - installs glusterfs-server and glusterfs-client on every node (Debian/Ubuntu);
#   - probes the peers from the first node;
#   - creates volume VOLNAME with one replica set on the first three nodes: replica 3, or with
#     ARBITER=1 replica 2 + arbiter (the third brick holds only metadata);
#   - sets the options of options.sh: client-side caches off so every node sees every rename
#     and O_EXCL create at once, and a 5 s ping timeout so a frozen node stalls the others'
#     mounts for seconds, not the default 42 s;
#   - mounts it at MOUNT on every node with an fstab line (_netdev, backup volfile servers);
#   - checks it: a file written on one node is read on every other.
# Environment: VOLNAME (cellgate), BRICK (/data/glusterfs/cellgate/brick), MOUNT
# (/mnt/cellgate), SSH_USER (root), ARBITER (0), FORCE (0: set 1 when bricks are on the root fs).
set -euo pipefail
[ "$#" -ge 3 ] || { echo "usage: make gluster NODES=\"node1 node2 node3\" (three nodes)" >&2; exit 1; }
nodes=("$@")
volname=${VOLNAME:-cellgate}
brick=${BRICK:-/data/glusterfs/$volname/brick}
mount=${MOUNT:-/mnt/cellgate}
user=${SSH_USER:-root}
. "$(dirname "$0")/options.sh"
say() { printf '==> %s\n' "$*"; }
on() { local node=$1; shift; ssh -o BatchMode=yes -o ConnectTimeout=10 "$user@$node" "$@"; }

for node in "${nodes[@]}"; do
    on "$node" true || { echo "cannot ssh to $user@$node with a key (ssh-copy-id $user@$node)" >&2; exit 1; }
done
for node in "${nodes[@]}"; do
    say "$node: installing GlusterFS and starting glusterd"
    on "$node" "command -v glusterd >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq glusterfs-server glusterfs-client >/dev/null); pgrep -x glusterd >/dev/null || systemctl enable --now glusterd >/dev/null 2>&1 || service glusterd start >/dev/null 2>&1 || glusterd; mkdir -p '$brick' '$mount'"
done
first=${nodes[0]}
for node in "${nodes[@]:1}"; do
    say "$first: probing peer $node"
    on "$first" "gluster peer probe $node >/dev/null"
done
for _ in $(seq 30); do
    connected=$(on "$first" "gluster peer status | grep -c 'Peer in Cluster (Connected)'" || true)
    [ "$connected" -ge $(( ${#nodes[@]} - 1 )) ] && break
    sleep 2
done
bricks=()
for node in "${nodes[@]:0:3}"; do bricks+=("$node:$brick"); done
force=""; [ "${FORCE:-0}" = 1 ] && force=force
if on "$first" "gluster volume info $volname" >/dev/null 2>&1; then
    say "volume $volname exists"
else
    if [ "${ARBITER:-0}" = 1 ]; then layout="replica 3 arbiter 1"; else layout="replica 3"; fi
    say "creating volume $volname: $layout on ${bricks[*]}"
    on "$first" "gluster volume create $volname $layout ${bricks[*]} $force"
fi
say "setting the volume options: no client caches (claims and renames seen at once everywhere)"
for option in "${STRICT_VOLUME_OPTIONS[@]}"; do
    on "$first" "gluster volume set $volname $option off >/dev/null"
done
say "setting the failover options: ${FAILOVER_VOLUME_OPTIONS[*]}"
for option in "${FAILOVER_VOLUME_OPTIONS[@]}"; do
    on "$first" "gluster volume set $volname $option >/dev/null"
done
on "$first" "gluster volume info $volname | grep -q 'Status: Started' || gluster volume start $volname"
for i in "${!nodes[@]}"; do
    node=${nodes[$i]}
    # The node itself serves the volfile; the next two nodes are its backups.
    backups=$(printf '%s\n' "${nodes[@]}" | grep -vx "$node" | head -2 | paste -sd:)
    line="$node:/$volname $mount glusterfs defaults,_netdev,backup-volfile-servers=$backups,$STRICT_MOUNT_OPTIONS 0 0"
    say "$node: mounting $volname at $mount"
    on "$node" "grep -q ' $mount glusterfs ' /etc/fstab || echo '$line' >>/etc/fstab; mountpoint -q '$mount' || mount '$mount'"
done
say "checking: a file written on $first is read on every node"
probe="check-$(date +%s)-$$"
on "$first" "echo $probe >'$mount/.gluster-check'"
for node in "${nodes[@]}"; do
    [ "$(on "$node" "cat '$mount/.gluster-check'")" = "$probe" ] || { echo "$node does not see the volume's file" >&2; exit 1; }
done
on "$first" "rm -f '$mount/.gluster-check'"
say "GlusterFS volume $volname is mounted at $mount on ${nodes[*]}"
