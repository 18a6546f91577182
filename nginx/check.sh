#!/usr/bin/env bash
# Validates nginx/cellgate.conf with `nginx -t`, outside the swarm: a throwaway prefix, a
# self-signed certificate at the secrets' paths rewritten to it, and tasks.gateway (which
# resolves only on the overlay network) rewritten to 127.0.0.1. Needs nginx and openssl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v nginx >/dev/null || { echo "nginx is not installed (apt-get install nginx-light)" >&2; exit 3; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/logs"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
sed -e "s#/run/secrets/cellgate_tls_cert#$work/cert.pem#" \
    -e "s#/run/secrets/cellgate_tls_key#$work/key.pem#" \
    -e "s#tasks.gateway:#127.0.0.1:#" \
    "$here/cellgate.conf" >"$work/cellgate.conf"
cat >"$work/nginx.conf" <<CONF
pid $work/nginx.pid;
error_log $work/logs/error.log;
events {}
http {
    access_log off;
    include $work/cellgate.conf;
}
CONF
nginx -t -p "$work" -c "$work/nginx.conf"
