# What the jobs store needs of a GlusterFS volume, shared by setup.sh and test-volume.sh.
#
# Consistency: the client-side caches off, and the mount's attribute, entry and negative
# caches at zero, so that every mount sees every O_EXCL create and every rename at once (a
# cached mount reads a replaced file up to a second late, and a just-created one as empty).
# shellcheck disable=SC2034
STRICT_VOLUME_OPTIONS=(performance.quick-read performance.open-behind performance.stat-prefetch
    performance.write-behind performance.io-cache performance.read-ahead
    performance.readdir-ahead performance.nl-cache)
STRICT_MOUNT_OPTIONS=attribute-timeout=0,entry-timeout=0,negative-timeout=0

# Failover, as "option value" pairs. A brick whose node is frozen or cut off keeps its TCP
# connections open, so every mount waits for its answer until network.ping-timeout, 42 s by
# default: that long, every job, heartbeat and claim on every node stalls, past the 15 s after
# which a node's jobs go to others. At 5 s the stall stays well inside that budget; the cost,
# a reconnect when a brick is busy for 5 s without answering a ping, is cheap on a LAN.
# Client quorum `auto` keeps a replica-3 volume writable with any two bricks and refuses
# writes to a lone brick (no split brain); the self-heal daemon then brings a returning brick
# up to date, crawling for pending heals every 30 s instead of 600 s.
# shellcheck disable=SC2034
FAILOVER_VOLUME_OPTIONS=("network.ping-timeout 5" "cluster.quorum-type auto"
    "cluster.self-heal-daemon on" "cluster.heal-timeout 30")
