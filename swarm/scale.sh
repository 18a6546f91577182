#!/usr/bin/env bash
# `make scale RUNNERS=N`: sets the number of kernel-runner replicas and waits for them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/swarm/lib.sh"
n=${1:-}
[[ "$n" =~ ^[0-9]+$ ]] || die "usage: make scale RUNNERS=N"
say "scaling ${STACK}_kernel-runner to $n replicas"
docker service scale --detach "${STACK}_kernel-runner=$n" >/dev/null
RUNNERS=$n PORT=$(docker service inspect "${STACK}_gateway" --format '{{(index .Endpoint.Ports 0).PublishedPort}}') \
    "$root/swarm/wait.sh"
