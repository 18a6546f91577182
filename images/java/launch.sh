#!/bin/sh
# Launcher of the cellgate Java driver (CellgateDriver.java): finds or builds the driver's
# classes, sets up its file descriptors, then replaces itself with the JVM.
#
# The JVM cannot redirect its own file descriptors, so this script does it before Java starts.
# The runner's command pipe moves to fd 3, its event pipe to fd 4 and its stderr (driver
# diagnostics) to fd 5. The user's fd 0 becomes /dev/null and fds 1 and 2 become two FIFOs
# whose reading ends the driver gets as fds 6 and 7; it forwards what arrives there as output
# events, so output of child processes is captured too. Every FIFO end is opened read-write
# (`<>`), which never blocks, and the FIFOs are unlinked before Java starts: the open
# descriptors keep them alive and nothing is left behind in the temporary directory.
#
# The driver's classes are compiled when the image is built and then sit next to this script in
# cellgate-driver.jar. Elsewhere (the runner's process backend installs only the source) they
# are compiled once into a cache directory named after a checksum of the source and the JDK, and
# reused afterwards. Where there is no javac or no safe place for the classes, Java's
# source-file mode runs the source directly, which costs a second or two at every start.
#
# CELLGATE_JAVA_OPTIONS, when set, adds options for the JVM (a heap limit, for instance).
set -eu

here=$(cd -- "$(dirname -- "$0")" && pwd -P)
if ! command -v java >/dev/null 2>&1; then
    echo "cellgate: java was not found on PATH" >&2
    exit 127
fi
java=$(command -v java)

# The JDK that `java` belongs to, and its feature version (17 for 17.0.15), read from the JDK's
# release file because starting a JVM just to ask would cost as much as a second start.
java_home=$(dirname -- "$(dirname -- "$(readlink -f -- "$java" 2>/dev/null || echo "$java")")")
feature=$(sed -n 's/^JAVA_VERSION="\([0-9][0-9]*\).*/\1/p' "$java_home/release" 2>/dev/null |
    head -n 1) || feature=
javac=$java_home/bin/javac
[ -x "$javac" ] || javac=$(command -v javac 2>/dev/null) || javac=

source_file=$here/CellgateDriver.java

# Prints the class path of the compiled driver, compiling it if need be. Fails with status 1 if
# there is no javac or no place to put the classes, and with status 2 if javac rejects the
# source. Whatever javac says goes to stderr: stdout is the runner's event channel.
driver_classes() {
    if [ -f "$here/cellgate-driver.jar" ]; then
        echo "$here/cellgate-driver.jar"
        return 0
    fi
    [ -n "$javac" ] || return 1
    key=$( (cat -- "$source_file"; echo "$java_home") | cksum | tr -c '0-9\n' '-')
    cache=${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/cellgate
    if ! mkdir -p -- "$cache" 2>/dev/null; then
        # In a shared temporary folder, classes are only safe to load from a folder of this
        # user's own that nobody else can write to.
        cache=${TMPDIR:-/tmp}/cellgate-$(id -u)
        mkdir -p -m 700 -- "$cache" 2>/dev/null || return 1
        if [ -L "$cache" ] || [ ! -O "$cache" ]; then
            return 1
        fi
        chmod 700 -- "$cache" || return 1
    fi
    classes=$cache/java-$key
    if [ ! -f "$classes/CellgateDriver.class" ]; then
        # Compile into a private folder and rename it into place, so that a kernel starting at
        # the same moment never sees half-written classes.
        build=$(mktemp -d "$cache/build.XXXXXXXX") || return 1
        if ! "$javac" -nowarn -d "$build" "$source_file" >"$build/javac.log" 2>&1; then
            cat -- "$build/javac.log" >&2
            rm -rf -- "$build"
            return 2
        fi
        rm -f -- "$build/javac.log"
        [ -e "$classes" ] || mv -- "$build" "$classes" 2>/dev/null || true
        rm -rf -- "$build"
    fi
    echo "$classes"
}

# JVM options, and why:
# - java.io is opened so that the driver can wrap the inherited descriptors 3 to 7 in streams.
# - Counted loops keep a safepoint poll every 1000 iterations, so that an interrupt can stop a
#   long `for` loop promptly; the JVM only does so by default with the G1 collector, and in a
#   small container it picks the serial one.
# - The heap may grow to 60% of the memory (the JVM's default is a quarter, which leaves most of
#   a kernel container's memory unused).
# - No performance-data file in /tmp, and no GUI.
set -- --add-opens=java.base/java.io=ALL-UNNAMED \
    -XX:+UseCountedLoopSafepoints -XX:LoopStripMiningIter=1000 \
    -XX:MaxRAMPercentage=60 \
    -XX:-UsePerfData \
    -Djava.awt.headless=true \
    -Dfile.encoding=UTF-8
# The driver keeps System.exit() in a cell from ending the kernel through a security manager.
# Java 12 to 23 allow installing one only when asked for; Java 24 refuses to start when asked.
if [ -n "$feature" ] && [ "$feature" -ge 12 ] && [ "$feature" -le 23 ]; then
    set -- "$@" -Djava.security.manager=allow
fi
# A class-data archive made when the image was built lets the JVM map the compiler's classes
# instead of loading them one by one, which takes about a quarter off the time to start.
if [ -f "$here/cellgate.jsa" ]; then
    set -- "$@" -XX:SharedArchiveFile="$here/cellgate.jsa"
fi
# Word splitting of the extra options is intended: they are a space-separated list.
# shellcheck disable=SC2086
set -- "$@" ${CELLGATE_JAVA_OPTIONS:-}
if classes=$(driver_classes); then
    set -- "$@" -cp "$classes" CellgateDriver
elif [ $? -eq 2 ]; then
    echo "cellgate: the Java driver does not compile with $java_home" >&2
    exit 1
else
    set -- "$@" "$source_file"
fi

fifos=$(mktemp -d "${TMPDIR:-/tmp}/cellgate-java.XXXXXXXX")
trap 'rm -rf -- "$fifos"' EXIT
mkfifo -m 600 "$fifos/stdout" "$fifos/stderr"

exec 3<&0 4>&1 5>&2 6<>"$fifos/stdout" 7<>"$fifos/stderr"
exec </dev/null 1<>"$fifos/stdout" 2<>"$fifos/stderr"
rm -rf -- "$fifos"
trap - EXIT
exec "$java" "$@"
