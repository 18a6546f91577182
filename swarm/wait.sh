#!/usr/bin/env bash
# Waits until every service of the stack runs all its replicas and every gateway answers
# /healthz over TLS on PORT (on each node that runs one when ports are published in host mode),
# reporting RUNNERS healthy runners when RUNNERS is set (the gateways find new runners by DNS
# within seconds). DEPLOY_TIMEOUT seconds (300) at most.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/swarm/lib.sh"
deadline=$(( $(date +%s) + ${DEPLOY_TIMEOUT:-300} ))
while :; do
    pending=$(docker stack services "$STACK" --format '{{.Name}} {{.Replicas}}' \
        | awk '{split($2, r, "/"); if (r[1] != r[2]) print $1 " " $2}')
    answering=0
    for address in $(gateway_addresses); do
        health=$(curl -kfsS --max-time 5 "https://$address:${PORT:-443}/healthz" 2>/dev/null || true)
        if [ -z "$health" ]; then
            pending="${pending:-the gateway on $address does not answer}"
        elif [ -n "${RUNNERS:-}" ] && ! grep -q "\"healthy_runners\":${RUNNERS}[,}]" <<<"$health"; then
            pending="${pending:-the gateway on $address sees fewer than $RUNNERS healthy runners}"
        else
            answering=$(( answering + 1 ))
        fi
    done
    if [ -z "$pending" ] && [ "$answering" -gt 0 ]; then
        say "every service has its replicas; $answering gateway(s) answer on port ${PORT:-443}"
        exit 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        docker stack ps "$STACK" --no-trunc --format '{{.Name}} {{.Node}} {{.CurrentState}} {{.Error}}' | head -20 >&2
        die "the stack is not up after ${DEPLOY_TIMEOUT:-300}s: ${pending:-gateway health check failing} (see make status, make logs)"
    fi
    sleep 3
done
