#!/usr/bin/env bash
# Waits until every service of the stack runs all its replicas and the gateway answers
# /healthz over TLS on PORT, reporting RUNNERS healthy runners when RUNNERS is set (the
# gateways find new runners by DNS within seconds). DEPLOY_TIMEOUT seconds (300) at most.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/swarm/lib.sh"
deadline=$(( $(date +%s) + ${DEPLOY_TIMEOUT:-300} ))
while :; do
    pending=$(docker stack services "$STACK" --format '{{.Name}} {{.Replicas}}' \
        | awk '{split($2, r, "/"); if (r[1] != r[2]) print $1 " " $2}')
    health=$(curl -kfsS "https://127.0.0.1:${PORT:-443}/healthz" 2>/dev/null || true)
    if [ -n "${RUNNERS:-}" ] && ! grep -q "\"healthy_runners\":${RUNNERS}[,}]" <<<"$health"; then
        pending="${pending:-gateway sees fewer than $RUNNERS healthy runners}"
    fi
    if [ -z "$pending" ] && [ -n "$health" ]; then
        say "every service has its replicas; the gateway answers on port ${PORT:-443}"
        exit 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        docker stack ps "$STACK" --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' | head -20 >&2
        die "the stack is not up after ${DEPLOY_TIMEOUT:-300}s: ${pending:-gateway health check failing} (see make status, make logs)"
    fi
    sleep 3
done
