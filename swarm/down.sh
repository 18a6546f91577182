#!/usr/bin/env bash
# `make down`: removes the stack and waits until its tasks and network are gone. Secrets,
# images, the swarm and the shared volume's data stay, so `make` brings the same cluster back.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/swarm/lib.sh"
for stack in "$STACK" "${STACK}-registry"; do
    if docker stack ls --format '{{.Name}}' | grep -qx "$stack"; then
        say "removing stack $stack"
        docker stack rm "$stack" >/dev/null
    fi
done
for _ in $(seq 60); do
    [ -z "$(docker ps -q --filter label=com.docker.stack.namespace="$STACK")" ] \
        && ! docker network inspect "${STACK}_cellgate" >/dev/null 2>&1 && break
    sleep 2
done
say "stack removed (secrets, images and volume data kept)"
