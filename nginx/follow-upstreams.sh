#!/bin/sh
# The nginx edge's entrypoint. nginx resolves the names in an upstream block once, when it
# starts or reloads; on a swarm the gateway replicas behind tasks.gateway change addresses
# whenever a task is replaced. So: wait until the name resolves (nginx refuses to start on a
# name it cannot resolve), start nginx, and reload it whenever the set of addresses changes.
#
# Environment: UPSTREAM_NAME (default tasks.gateway), FOLLOW_INTERVAL seconds (default 5).
set -u
name=${UPSTREAM_NAME:-tasks.gateway}
interval=${FOLLOW_INTERVAL:-5}

addresses() {
    getent ahostsv4 "$name" 2>/dev/null | awk '{ print $1 }' | sort -u | tr '\n' ' '
}

# As PID 1 the shell gets no signal it does not trap: stopping while it waits ends it at once.
trap 'exit 143' TERM INT
current=$(addresses)
while [ -z "$current" ]; do
    echo "follow-upstreams: waiting for $name to resolve" >&2
    sleep 2 &
    wait $!
    current=$(addresses)
done
echo "follow-upstreams: $name is $current" >&2

nginx -g 'daemon off;' &
nginx_pid=$!
# Signals reach nginx as they would without this script: TERM and INT stop it, QUIT stops it
# gracefully, HUP reloads its configuration.
for signal in TERM INT QUIT HUP; do
    # shellcheck disable=SC2064
    trap "kill -$signal \"\$nginx_pid\" 2>/dev/null" "$signal"
done

while kill -0 "$nginx_pid" 2>/dev/null; do
    sleep "$interval" &
    wait $! 2>/dev/null
    kill -0 "$nginx_pid" 2>/dev/null || break
    now=$(addresses)
    if [ -n "$now" ] && [ "$now" != "$current" ]; then
        echo "follow-upstreams: $name changed from $current to $now: reloading nginx" >&2
        if nginx -t -q && nginx -s reload; then
            current=$now
        fi
    fi
done
wait "$nginx_pid"
