#!/usr/bin/env bash
# `make status`: nodes, services and their replicas, the running tasks, and each runner's load.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/swarm/lib.sh"
say "nodes"; docker node ls
say "services"; docker stack services "$STACK"
say "tasks"; docker stack ps "$STACK" --filter desired-state=running \
    --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}\t{{.Error}}'
say "runner load (containers per runner on this node)"
docker ps --filter label=org.cellgate.runner --format '{{.Label "org.cellgate.runner"}}' | sort | uniq -c || true
port=$(docker service inspect "${STACK}_gateway" --format '{{(index .Endpoint.Ports 0).PublishedPort}}' 2>/dev/null || echo 443)
for address in $(gateway_addresses); do
    say "gateway health on $address:$port"; { curl -kfsS --max-time 5 "https://$address:$port/healthz" && echo; } || echo "not answering"
done
