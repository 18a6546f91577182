#!/usr/bin/env bash
# `make cluster-up CLUSTER_NODES=3`: a cluster of N bare Debian hosts on this machine, each a
# container with its own Docker engine (its own /var/lib/docker volume), GlusterFS server and
# SSH server, on one network of their own. The hosts are what an operator starts from: no
# swarm and no GlusterFS volume yet (`make gluster` and `make` do those, from node1). node1
# gets:
#   - /root/cellgate, this checkout's files (tracked and new, not target/);
#   - the service images and CLUSTER_LANGUAGES' images, loaded from this engine (workers get
#     them from the swarm's registry, which is part of what the cluster tests);
#   - an SSH key that every node accepts, and every node in known_hosts.
# Nothing of this engine's swarm, stacks or other containers is touched: the cluster is the
# containers, volumes and network labelled org.cellgate.cluster=$CLUSTER, and `make
# cluster-down` removes them all.
#
# Environment: CLUSTER_NODES (3), CLUSTER (cellgate-cluster), CLUSTER_LANGUAGES ("python bash").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/cluster/lib.sh"
nodes=${CLUSTER_NODES:-3}
[[ "$nodes" =~ ^[0-9]+$ ]] && [ "$nodes" -ge 1 ] || die "CLUSTER_NODES must be a number of nodes"
languages=${CLUSTER_LANGUAGES:-python bash}
label="org.cellgate.cluster=$CLUSTER"

if [ -n "$(docker ps -aq --filter "label=$label")" ]; then
    die "cluster $CLUSTER exists: make cluster-down first"
fi

say "building the node image and the images the cluster runs"
"$root/images/build.sh" $languages registry
"$root/swarm/build-images.sh"
docker build --quiet --tag cellgate/cluster-node "$root/cluster/node" >/dev/null

# A subnet of its own, so that each node keeps its address when it is disconnected and
# connected again (a node cut off from the network and back), as a host's address would.
subnet=
for third in $(seq 200 250); do
    if docker network create --label "$label" --subnet "172.31.$third.0/24" "$CLUSTER" >/dev/null 2>&1; then
        subnet=172.31.$third; break
    fi
done
[ -n "$subnet" ] || die "no free 172.31.200-250.0/24 subnet for the cluster's network"
# The nodes' own engines need their inner containers to resolve names; this engine's
# resolver for containers is a loopback address they cannot reach.
dns=$(awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)
case "$dns" in 127.*|"") dns=;; esac
for i in $(seq "$nodes"); do
    name=$(node_container "$i")
    say "starting node$i ($name)"
    # What a Docker engine, FUSE and GlusterFS need, short of --privileged (which a host whose
    # capability bounding set lacks CAP_SYS_RESOURCE refuses).
    docker run --detach --name "$name" --hostname "node$i" --label "$label" \
        --network "$CLUSTER" --network-alias "node$i" --ip "$subnet.$(( 10 + i ))" \
        --cap-add ALL --cap-drop SYS_RESOURCE \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --security-opt systempaths=unconfined \
        --device /dev/fuse --device-cgroup-rule 'a *:* rwm' \
        --volume "$name-docker:/var/lib/docker" --volume "$name-data:/data" \
        --env "NODE_DNS=$dns" \
        cellgate/cluster-node >/dev/null
    docker volume inspect "$name-docker" >/dev/null
done
for i in $(seq "$nodes"); do
    for _ in $(seq 60); do on "$i" 'docker info >/dev/null 2>&1' && break; sleep 1; done
    on "$i" 'docker info >/dev/null 2>&1' || { on "$i" 'tail -20 /var/log/dockerd.log' >&2; die "node$i: its Docker engine does not start"; }
done
say "every node's engine answers"

say "node1: an SSH key every node accepts"
on 1 'test -f /root/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/id_ed25519'
key=$(on 1 'cat /root/.ssh/id_ed25519.pub')
for i in $(seq "$nodes"); do
    on "$i" "echo '$key' >>/root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys"
done
hosts=$(seq -f 'node%g' "$nodes" | paste -sd' ')
# The first contact records each node's host key, as an operator answering "yes" once would.
on 1 "for h in $hosts; do
    for _ in \$(seq 10); do ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new \$h true 2>/dev/null && continue 2; sleep 1; done
    echo \"node1 cannot ssh to \$h\" >&2; exit 1
done"

say "node1: this checkout's files at /root/cellgate"
on 1 'mkdir -p /root/cellgate'
(cd "$root" && git ls-files --cached --others --exclude-standard -z | xargs -0 stat --printf '%n\0' 2>/dev/null \
    | tar --null --files-from - -cf -) | docker exec -i "$(node_container 1)" tar -xf - -C /root/cellgate

images=$(for image in gateway runner registry nginx $languages; do printf 'cellgate/%s:latest ' "$image"; done)
say "node1: loading $images"
# shellcheck disable=SC2086
docker save $images | docker exec -i "$(node_container 1)" docker load --quiet >/dev/null

addresses=$(for i in $(seq "$nodes"); do
    printf 'node%s %s\n' "$i" "$(docker inspect -f "{{(index .NetworkSettings.Networks \"$CLUSTER\").IPAddress}}" "$(node_container "$i")")"
done)
mkdir -p "$root/target/cluster"
printf '%s\n' "$addresses" >"$root/target/cluster/$CLUSTER.nodes"
say "cluster $CLUSTER is up:"
sed 's/^/    /' <<<"$addresses"
say "next, on node1 (docker exec -it $(node_container 1) bash; cd /root/cellgate):"
say "    make gluster NODES=\"$hosts\"   then   make WORKERS=$(( nodes - 1 )) JOIN=\"${hosts#node1 }\" SKIP_BUILD=1"
