# Shared helpers of the swarm scripts.
say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
STACK=${STACK:-cellgate}
