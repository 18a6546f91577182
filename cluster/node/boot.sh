#!/usr/bin/env bash
# The test-cluster node's init: makes the container a usable Docker and GlusterFS host, then
# runs sshd, glusterd and dockerd until it is stopped. Run again after `docker start` (a
# killed node rejoining) it remounts the shared volume from fstab, as a rebooted host would.
set -uo pipefail

# Docker mounts /sys and the cgroup hierarchies read-only in an unprivileged container; an
# engine inside needs to create cgroups and write its knobs.
mount -o remount,rw /sys 2>/dev/null || true
for hierarchy in /sys/fs/cgroup /sys/fs/cgroup/*; do
    mountpoint -q "$hierarchy" && mount -o remount,rw,bind "$hierarchy" "$hierarchy" 2>/dev/null
done

# /run starts empty at every boot, as on a host where it is a tmpfs. After a kill the
# container's own /run still holds the pid files of the engine, containerd, sshd and glusterd;
# a pid reused by this boot's processes makes dockerd refuse to start ("pid file found").
if ! mountpoint -q /run; then
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
fi
mkdir -p /run/sshd /run/lock

# Host keys of its own: the image's are the same on every node.
if [ ! -f /etc/ssh/.host-keys-of-this-node ]; then
    rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
    ssh-keygen -A >/dev/null && touch /etc/ssh/.host-keys-of-this-node
fi
/usr/sbin/sshd
glusterd --log-file=/var/log/glusterd.log

# The shared volume, once `make gluster` has written its fstab line, before the engine starts
# the runner that bind-mounts it (a runner started first would write its jobs to the empty
# directory under the mount point). Its peers may still be starting: try for a minute.
if grep -q ' glusterfs ' /etc/fstab 2>/dev/null; then
    for _ in $(seq 30); do
        mount -a -t glusterfs 2>/dev/null
        grep -q ' fuse.glusterfs ' /proc/mounts && break
        sleep 2
    done
fi

# Inner containers cannot reach the node's own resolver (127.0.0.11 of the node's network
# namespace); give them the one the node container was handed by its engine.
dns=${NODE_DNS:-}
# The engine's containers go in cgroups under this node's own, so that freezing the node
# (docker pause) freezes them too, and its limits and accounting cover them, as on a real host.
parent=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/1/cgroup)
case "$parent" in /|"") parent=;; *) parent=$parent/engine;; esac
dockerd --host=unix:///var/run/docker.sock ${dns:+--dns "$dns"} ${parent:+--cgroup-parent "$parent"} \
    >/var/log/dockerd.log 2>&1 &
engine=$!

trap 'kill -TERM "$engine"; wait "$engine"; exit 0' TERM INT
wait "$engine"
