# What the jobs store needs of a GlusterFS volume, shared by setup.sh and test-volume.sh: the
# client-side caches off, and the mount's attribute, entry and negative caches at zero, so that
# every mount sees every O_EXCL create and every rename at once (a cached mount reads a
# replaced file up to a second late, and a just-created one as empty).
# shellcheck disable=SC2034
STRICT_VOLUME_OPTIONS=(performance.quick-read performance.open-behind performance.stat-prefetch
    performance.write-behind performance.io-cache performance.read-ahead
    performance.readdir-ahead performance.nl-cache)
STRICT_MOUNT_OPTIONS=attribute-timeout=0,entry-timeout=0,negative-timeout=0
