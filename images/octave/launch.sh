#!/bin/sh
# Launcher of the cellgate Octave driver (__cellgate_driver__.m): sets up its file descriptors,
# starts the forwarder (forward.pl), then replaces itself with Octave.
#
# Octave cannot redirect its own file descriptors, so this script does it before Octave starts:
# the runner's stderr (driver diagnostics) moves to fd 5 and the user's fds 1 and 2 become two
# FIFOs, so that output of child processes is captured too.
#
# Octave runs one thing at a time and could not read those FIFOs while a cell runs, so a
# separate process, forward.pl, reads them and owns the runner's event pipe. It also reads the
# runner's commands and hands them to the driver one at a time, and it keeps the interpreter's
# prompt supplied with the line that resumes the driver after an interrupt (forward.pl and the
# driver explain why). Octave's fd 0 is that prompt input (system.m gives the commands of a
# cell /dev/null instead), fd 4 takes its frames to the forwarder, fd 8 brings the forwarder's
# replies and fd 9 is a copy of the stdout FIFO, since the driver points fd 1 elsewhere at
# times. Every FIFO end is first opened for reading and writing (`<>`), which never blocks;
# Octave's own ends are then reopened in one direction, so that it sees end-of-file or EPIPE
# when the forwarder is gone. The FIFOs are unlinked before Octave starts: the open descriptors
# keep them alive.
set -eu

here=$(cd -- "$(dirname -- "$0")" && pwd)
for program in octave-cli perl; do
    if ! command -v "$program" >/dev/null 2>&1; then
        echo "cellgate: $program was not found on PATH" >&2
        exit 127
    fi
done

if [ -z "${LC_ALL-}${LC_CTYPE-}${LANG-}" ]; then
    LANG=C.UTF-8
    export LANG
fi

# An interrupt while the kernel starts must not end this script. A trapped signal, unlike an
# ignored one, is reset by exec, so Octave and the cell's child processes get the default action.
trap ':' INT

fifos=$(mktemp -d "${TMPDIR:-/tmp}/cellgate-octave.XXXXXXXX")
trap 'rm -rf -- "$fifos"' EXIT
mkfifo -m 600 "$fifos/stdout" "$fifos/stderr" "$fifos/frames" "$fifos/replies" "$fifos/prompt"

# The runner's command pipe waits on fd 9 for the forwarder, since a background command's fd 0
# is always /dev/null.
exec 9<&0 4<>"$fifos/frames" 5<>"$fifos/replies" 6<>"$fifos/stdout" 7<>"$fifos/stderr" \
    8<>"$fifos/prompt"

# The forwarder starts with SIGINT ignored, so that an interrupt cannot end it before it has
# installed its own handler.
(
    trap '' INT
    exec perl -- "$here/forward.pl" --commands __cellgate_driver__ 0<&9 9<&-
) &

exec 0<"$fifos/prompt" 4>"$fifos/frames" 8<"$fifos/replies" 5>&2 6<&- 7<&-
exec 1<>"$fifos/stdout" 2<>"$fifos/stderr" 9>&1
rm -rf -- "$fifos"
trap - EXIT

# An interactive Octave, so that an interrupt returns to the prompt instead of ending Octave;
# the prompt reads plain lines, keeps no history and draws no windows. The driver's folder is
# added to the path from within, once the warnings about its files standing in for Octave's
# own functions are turned off.
CELLGATE_DRIVER_DIR=$here
export CELLGATE_DRIVER_DIR
exec octave-cli --quiet --no-init-file --no-history --no-window-system --interactive \
    --no-line-editing --persist \
    --eval 'warning ("off", "Octave:shadowed-function"); addpath (getenv ("CELLGATE_DRIVER_DIR")); __cellgate_driver__'
