#!/usr/bin/env bash
# `make cluster-down`: removes the test cluster completely: its node containers (and with them
# every engine, swarm, container and mount inside), their volumes and their network. Safe to
# run when the cluster is partly up or gone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/cluster/lib.sh"
label="org.cellgate.cluster=$CLUSTER"
containers=$(docker ps -aq --filter "label=$label")
# shellcheck disable=SC2086
[ -z "$containers" ] || docker rm --force --volumes $containers >/dev/null
volumes=$(docker volume ls -q --filter "name=^$CLUSTER-node")
# shellcheck disable=SC2086
[ -z "$volumes" ] || docker volume rm --force $volumes >/dev/null
networks=$(docker network ls -q --filter "label=$label")
# shellcheck disable=SC2086
[ -z "$networks" ] || docker network rm $networks >/dev/null
rm -f "$root/target/cluster/$CLUSTER.nodes"
say "cluster $CLUSTER removed"
