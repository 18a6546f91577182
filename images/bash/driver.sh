#!/usr/bin/env bash
# cellgate-bash: the Bash language driver of cellgate.
#
# The kernel runner starts it once per kernel as `bash driver.sh`, with the kernel's directory as
# working directory, and talks to it over the framed protocol of docs/driver-protocol.md: commands
# arrive on stdin, events leave on stdout, and stderr carries the driver's own diagnostics. Every
# cell runs in this one shell, so variables, functions, aliases, the working directory, exported
# variables and shell options persist from cell to cell.
#
# How it is put together, and why:
#
# * The shell that runs the cells is interactive in bash's sense (`bash -i`), although it reads
#   no terminal. A non-interactive bash exits on errors that an interactive one survives: an
#   unset variable under `set -u`, a failed `${name:?message}`. Those are everyday mistakes in a
#   notebook and must not kill the kernel.
# * That shell reads its commands from an endless stream of identical "step" lines (written by
#   `yes`), one per cell. Each step runs `__cg_step`, which handles protocol commands until an
#   `execute` arrives; then the step sources the cell at the top level of the shell and runs
#   `__cg_end_cell`. Sourcing at the top level keeps `declare` global, and starting each cell
#   from a fresh top-level command (rather than inside a loop of the driver) means that a stray
#   `break` or `continue` in a cell cannot leave the driver's loop.
# * A cell is sourced wrapped in `{ ... }`, so that bash parses it whole before running it, and
#   an error that bash handles by discarding "the current command" (such as `${name:?}`)
#   discards the rest of the cell instead of skipping to its next line. Before that, the driver
#   parses the cell as the body of a function it never calls: a cell with a syntax error is
#   reported and not run. This matters because under `set -e` bash exits at once on a syntax
#   error met while sourcing, before any trap can intervene.
# * User output is captured at the file-descriptor level: while a cell runs, its fd 1 and fd 2
#   are two FIFOs, and two forwarder processes copy whatever arrives as `stdout` and `stderr`
#   frames, as soon as it arrives. Frames are written under a lock (a FIFO holding one token
#   byte), so they never interleave. At the end of a cell the driver writes a random marker into
#   both FIFOs and waits until each forwarder has reached it, which proves that all the cell's
#   output was sent before `done`. Background jobs keep the FIFOs open without delaying the
#   cell; what they print later is forwarded whenever it comes.
# * An interrupt (SIGINT to the whole process group) kills the cell's foreground programs. The
#   shell catches it with a trap that turns on `extdebug` and sets a DEBUG trap returning 2,
#   which makes bash return from every function and from the sourced cell, one command at a
#   time, until the driver is reached again. This also stops pure-Bash loops such as
#   `while :; do :; done`, which an INT trap alone would let run on. An interactive bash ignores
#   an interrupt when the program it waits for handles SIGINT and exits normally (as `ping` or a
#   Python script catching KeyboardInterrupt do). A watcher process therefore notes every
#   interrupt: the cell is reported as interrupted, and any program the shell starts after the
#   interrupt is interrupted in turn, so the cell ends at its next command that is not a
#   builtin. (A CHLD trap could stop it sooner, but bash 5.2 crashes when a CHLD trap meets the
#   DEBUG-trap unwinding.)
# * `set -e` in a cell stops the cell, not the kernel: an ERR trap (inherited by functions
#   through `set -E`) switches errexit off before bash acts on it, because bash checks errexit
#   only after running the ERR trap, and then aborts the cell the same way as an interrupt.
#   `exit` in a cell is a function that ends the cell and says so.
# * The shell does not read commands while a cell runs, but the runner may send `shutdown`
#   then (to restart the kernel, say). The watcher looks out for it and ends the driver.
#
# Between cells the driver's own code runs with neutral shell options and without the user's
# traps: shell options and the ERR trap are saved at the end of each cell and restored before the
# next one, while DEBUG and RETURN traps end with the cell that set them (bash does not run them
# in sourced files anyway, unless `set -T` is on). All names used by the driver start with
# `__cg_`.

# ----------------------------------------------------------------------------------------------
# Bootstrap: re-execute as the long-lived interactive shell.
# ----------------------------------------------------------------------------------------------

if [[ ${1-} != --cellgate-kernel ]]; then
    # The step line the kernel shell runs for every cell. It must stay on one line.
    __cg_step_line='__cg_step && . "$__cg_cell_file" <&"$__cg_null_fd" >&"$__cg_out_fd" 2>&"$__cg_err_fd"; __cg_end_cell'
    # `bash -i` complains on stderr that it has no terminal for job control before any of the
    # driver runs; that is noise, so stderr is parked on fd 3 until the kernel shell takes it
    # back. The first line of the stream loads this file in kernel mode. The stream's writer
    # ignores SIGINT so that interrupts cannot end it, and it dies of SIGPIPE when the kernel
    # shell exits. SHLVL is lowered so that the user sees the usual level.
    export SHLVL=$(( ${SHLVL:-1} - 1 ))
    exec 3>&2 2>/dev/null
    exec "$BASH" --norc --noprofile -i <(
        trap '' INT
        printf '. %q --cellgate-kernel\n' "$0"
        exec yes -- "$__cg_step_line"
    )
    exec 2>&3 3>&-
    echo "cellgate-bash: cannot start $BASH" >&2
    exit 1
fi

# ----------------------------------------------------------------------------------------------
# Constants and small helpers.
# ----------------------------------------------------------------------------------------------

# Until a cell runs, an interrupt must not disturb the driver.
builtin trap '' INT

__cg_version=0.1.0
__cg_pid=$$

# Options that would break the driver's own code, or make it noisy, are switched off between
# cells. The user's settings come back before each cell, except `monitor` and `onecmd`: job
# control would move the cell's programs out of the process group that interrupts reach, and
# `onecmd` would end the shell after its next command.
__cg_neutral_options=(+o errexit +o nounset +o xtrace +o verbose +o pipefail +o noclobber
    +o noglob +o allexport +o keyword +o posix +o errtrace +o functrace +o onecmd +o monitor)

__cg_log() {
    builtin printf 'cellgate-bash: %s\n' "$*" >&"$__cg_diag_fd"
}

# Finds a program on PATH without forking, so that the driver keeps working when a cell
# changes PATH.
__cg_find_tool() {
    local dir IFS=:
    local -a dirs
    builtin read -r -a dirs <<< "${PATH:-/usr/local/bin:/usr/bin:/bin}"
    for dir in "${dirs[@]}"; do
        if [[ -x ${dir:-.}/$1 && ! -d ${dir:-.}/$1 ]]; then
            builtin printf -v "$2" '%s' "${dir:-.}/$1"
            return 0
        fi
    done
    return 1
}

# ----------------------------------------------------------------------------------------------
# Frames.
# ----------------------------------------------------------------------------------------------

# Reads one command frame into __cg_kind and __cg_body. Returns 1 at the end of input.
__cg_read_frame() {
    # TMOUT would put a timeout on `read` in an interactive shell.
    local TMOUT= IFS= header
    builtin read -r -u "$__cg_cmd_fd" header || return 1
    if [[ ! $header =~ ^([a-z0-9_]+)\ ([0-9]+)$ ]]; then
        __cg_log "malformed frame header: ${header:0:64}"
        __cg_quit 1
    fi
    __cg_kind=${BASH_REMATCH[1]}
    __cg_body=
    # In the C locale `read -N` counts bytes, as the header does. (`read` drops NUL bytes,
    # which is why cells must not contain any.)
    LC_ALL=C builtin read -r -N "$(( 10#${BASH_REMATCH[2]} ))" -u "$__cg_cmd_fd" __cg_body
}

# The lock that keeps frames whole: a FIFO that holds a single byte. Taking the byte takes the
# lock and writing it back releases it; both are builtins, so locking costs no process.
__cg_lock() {
    local TMOUT= token
    LC_ALL=C builtin read -r -N 1 -u "$__cg_lock_fd" token
}

__cg_unlock() {
    builtin printf x >&"$__cg_lock_fd"
}

# Writes frames, given as pairs of arguments KIND BODY, to the runner in one go.
__cg_emit() {
    local LC_ALL=C frames=
    while (( $# >= 2 )); do
        frames+="$1 ${#2}"$'\n'"$2"
        shift 2
    done
    __cg_lock
    builtin printf '%s' "$frames" >&"$__cg_ev_fd"
    __cg_unlock
}

# Like __cg_emit for one frame with a JSON body, which the runner only accepts as valid UTF-8.
# Text found by bash (file names, help texts) could contain other bytes, so a body with bytes
# above 0x7f goes through `iconv -c`, which drops invalid sequences; JSON's structure is ASCII
# and survives that.
__cg_emit_json() {
    local LC_ALL=C body=$2
    if [[ $body == *[$'\x80'-$'\xff']* ]]; then
        if [[ $__cg_tool_iconv ]]; then
            body=$(builtin printf '%s' "$body" | "$__cg_tool_iconv" -c -f UTF-8 -t UTF-8; builtin printf x)
            body=${body%x}
        else
            body=${body//[$'\x80'-$'\xff']/?}
        fi
    fi
    __cg_emit "$1" "$body"
}

# ----------------------------------------------------------------------------------------------
# JSON.
# ----------------------------------------------------------------------------------------------

# Sets __cg_json to STRING as a JSON string literal. Bytes above 0x7f are left as they are (see
# __cg_emit_json).
__cg_json_quote() {
    local LC_ALL=C s=$1 i char escape
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    if [[ $s == *[$'\x01'-$'\x1f']* ]]; then
        for (( i = 1; i < 32; i++ )); do
            builtin printf -v char '\\x%02x' "$i"
            builtin printf -v char "$char"
            builtin printf -v escape '\\u%04x' "$i"
            s=${s//"$char"/$escape}
        done
    fi
    __cg_json="\"$s\""
}

# Sets __cg_json to a JSON array of the arguments.
__cg_json_array() {
    local out= item
    for item in "$@"; do
        __cg_json_quote "$item"
        out+=${out:+,}$__cg_json
    done
    __cg_json="[$out]"
}

# Sets __cg_utf8 to the UTF-8 encoding of a code point.
__cg_utf8_encode() {
    local cp=$1 format
    if (( cp < 0x80 )); then
        builtin printf -v format '\\x%02x' "$cp"
    elif (( cp < 0x800 )); then
        builtin printf -v format '\\x%02x\\x%02x' $(( 0xc0 | cp >> 6 )) $(( 0x80 | (cp & 0x3f) ))
    elif (( cp < 0x10000 )); then
        builtin printf -v format '\\x%02x\\x%02x\\x%02x' $(( 0xe0 | cp >> 12 )) \
            $(( 0x80 | (cp >> 6 & 0x3f) )) $(( 0x80 | (cp & 0x3f) ))
    else
        builtin printf -v format '\\x%02x\\x%02x\\x%02x\\x%02x' $(( 0xf0 | cp >> 18 )) \
            $(( 0x80 | (cp >> 12 & 0x3f) )) $(( 0x80 | (cp >> 6 & 0x3f) )) $(( 0x80 | (cp & 0x3f) ))
    fi
    builtin printf -v __cg_utf8 "$format"
}

# Reads the string member NAME of the flat JSON object BODY (a command from the runner) into
# __cg_json_value. Escaped backslashes and quotes are first swapped for the bytes 0x01 and
# 0x02, which JSON text cannot contain raw; after that, the next quote really ends a string.
__cg_json_get_string() {
    local LC_ALL=C body=$1 value out= segment cp low
    body=${body//\\\\/$'\x01'}
    body=${body//\\\"/$'\x02'}
    __cg_json_value=
    [[ $body == *\"$2\"*([[:space:]]):*([[:space:]])\"* ]] || return 1
    value=${body#*\"$2\"*([[:space:]]):*([[:space:]])\"}
    value=${value%%\"*}
    value=${value//\\n/$'\n'}
    value=${value//\\t/$'\t'}
    value=${value//\\r/$'\r'}
    value=${value//\\b/$'\b'}
    value=${value//\\f/$'\f'}
    value=${value//\\\//\/}
    # \uXXXX escapes are decoded from left to right, so that decoded text is never read again.
    while [[ $value == *\\u[[:xdigit:]][[:xdigit:]][[:xdigit:]][[:xdigit:]]* ]]; do
        segment=${value%%\\u[[:xdigit:]][[:xdigit:]][[:xdigit:]][[:xdigit:]]*}
        cp=$(( 16#${value:${#segment}+2:4} ))
        value=${value:${#segment}+6}
        if (( cp >= 0xd800 && cp < 0xdc00 )) && [[ $value == \\u[dD][c-fC-F][[:xdigit:]][[:xdigit:]]* ]]; then
            low=$(( 16#${value:2:4} ))
            value=${value:6}
            cp=$(( 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00) ))
        fi
        segment=${segment//$'\x02'/\"}
        out+=${segment//$'\x01'/\\}
        if (( cp > 0 )); then
            __cg_utf8_encode "$cp"
            out+=$__cg_utf8
        fi
    done
    value=${value//$'\x02'/\"}
    __cg_json_value=$out${value//$'\x01'/\\}
}

# Reads the integer member NAME of the flat JSON object BODY into __cg_json_value (0 when it
# is missing). String values are removed first, since one could contain `"NAME":`.
__cg_json_get_int() {
    local LC_ALL=C body=$1 rest
    body=${body//\\\\/}
    body=${body//\\\"/}
    __cg_json_value=0
    while [[ $body == *\"*\"* ]]; do
        rest=${body#*\"}
        if [[ ${rest%%\"*} == "$2" ]]; then
            rest=${rest#*\"}
            rest=${rest##*([[:space:]]):*([[:space:]])}
            [[ $rest =~ ^[0-9]+ ]] && __cg_json_value=$(( 10#${BASH_REMATCH[0]} ))
            return 0
        fi
        body=${rest#*\"}
    done
    return 1
}

# ----------------------------------------------------------------------------------------------
# Output forwarding.
# ----------------------------------------------------------------------------------------------

# Sends TEXT as one frame of KIND. Runs in a forwarder, in the C locale.
__cg_forward_text() {
    __cg_lock
    builtin printf '%s %d\n%s' "$1" "${#2}" "$2"
    __cg_unlock
}

# Sends LENGTH bytes of FILE, starting at OFFSET, as one frame of KIND. Runs in a forwarder.
__cg_forward_part() {
    local kind=$1 file=$2 offset=$3 length=$4 whole=$5
    __cg_lock
    builtin printf '%s %d\n' "$kind" "$length"
    if (( offset == 0 && length == whole )); then
        "$__cg_tool_cat" -- "$file"
    else
        "$__cg_tool_dd" if="$file" bs=65536 iflag=skip_bytes,count_bytes skip="$offset" \
            count="$length" status=none
    fi
    __cg_unlock
}

# The body of a forwarder process: copies what arrives on the FIFO open on FD to the runner as
# frames of KIND (stdout or stderr) until it is killed.
#
# `dd count=1` makes one read(2), which returns whatever the pipe holds, so output is forwarded
# as soon as it is written; the block size is larger than a pipe can hold, so one read takes all
# pending bytes, and a marker (written with one atomic write) never straddles two chunks. While
# the driver waits for the end of a cell (the sync file holds a number this forwarder has not
# acknowledged yet), chunks are searched for the marker: the bytes before it end the cell's
# output, and the forwarder acknowledges the number on the ack FIFO. Bytes after the marker come
# from background jobs and are forwarded too.
#
# A chunk of text is handled by bash itself. A bash variable cannot hold NUL bytes, though, and
# `read` drops them, so a chunk that `read -N` cannot fill completely holds some: such chunks
# (and very large ones) are copied by cat, dd and grep instead.
__cg_forward() {
    local LC_ALL=C kind=$1 fd=$2
    local chunk=$__cg_dir/$kind.chunk stats=$__cg_dir/$kind.stats sync=$__cg_dir/sync
    local marker= acked=0 seq n off rest line data dd_pid=
    local -a lines
    builtin trap '' INT
    builtin trap '[[ $dd_pid ]] && builtin kill "$dd_pid" 2>/dev/null; builtin exit 0' TERM
    exec 0</dev/null 1>&"$__cg_ev_fd"
    IFS= builtin read -r -d '' marker < "$__cg_dir/marker"
    while :; do
        # dd runs in the background so that the TERM trap can run (and stop it) at shutdown.
        # (LC_ALL is set for dd itself too: its statistics must be in English.)
        LC_ALL=C "$__cg_tool_dd" bs=1048576 count=1 of="$chunk" <&"$fd" 2>|"$stats" &
        dd_pid=$!
        builtin wait "$dd_pid" || break
        dd_pid=
        # dd reports "N bytes copied" (or "1 byte copied") among its statistics. (The file is
        # missing once the driver has removed its directory at the end.)
        builtin mapfile -t lines 2>/dev/null < "$stats" || break
        n=
        for line in "${lines[@]}"; do
            [[ $line =~ ^([0-9]+)\ bytes?\  ]] && n=${BASH_REMATCH[1]}
        done
        [[ $n ]] && (( n > 0 )) || break
        IFS= builtin read -r seq < "$sync"
        data=
        if (( n <= 262144 )) && IFS= builtin read -r -N "$n" data < "$chunk" && (( ${#data} == n )); then
            if [[ $seq != "$acked" && $data == *"$marker"* ]]; then
                rest=${data#*"$marker"}
                data=${data%%"$marker"*}
                [[ $data ]] && __cg_forward_text "$kind" "$data"
                builtin printf '%s %s\n' "$kind" "$seq" >&"$__cg_ack_fd"
                acked=$seq
                [[ $rest ]] && __cg_forward_text "$kind" "$rest"
            else
                __cg_forward_text "$kind" "$data"
            fi
        elif [[ $seq == "$acked" ]]; then
            __cg_forward_part "$kind" "$chunk" 0 "$n" "$n"
        elif off=$(LC_ALL=C "$__cg_tool_grep" -abo -m1 -F -e "$marker" -- "$chunk"); then
            off=${off%%:*}
            (( off > 0 )) && __cg_forward_part "$kind" "$chunk" 0 "$off" "$n"
            builtin printf '%s %s\n' "$kind" "$seq" >&"$__cg_ack_fd"
            acked=$seq
            off=$(( off + ${#marker} ))
            (( off < n )) && __cg_forward_part "$kind" "$chunk" "$off" $(( n - off )) "$n"
        else
            __cg_forward_part "$kind" "$chunk" 0 "$n" "$n"
        fi
    done
    __cg_log "the $kind forwarder stopped"
}

# Waits until both forwarders have sent everything the cell wrote, and until the interrupt
# watcher has noted any interrupt that arrived before. The marker is read from its file each
# time rather than kept in a variable, because a cell that prints all variables (`set`) would
# otherwise print the marker too.
#
# Each synchronisation has a number of its own: besides the end of every cell, `display` and
# `clear_output` synchronise in the middle of one, possibly from a subshell (a pipeline), whose
# counters the shell never sees; so the number is made of the cell's, the process's and a
# counter of that process.
__cg_sync_output() {
    local TMOUT= marker line partial= out= err= watch= seq
    __cg_sync_count=$(( ${__cg_sync_count:-0} + 1 ))
    seq=$__cg_seq.$BASHPID.$__cg_sync_count
    builtin printf '%s\n' "$seq" >| "$__cg_dir/sync"
    IFS= builtin read -r -d '' marker < "$__cg_dir/marker"
    builtin printf '%s' "$marker" >&"$__cg_out_fd"
    builtin printf '%s' "$marker" >&"$__cg_err_fd"
    marker=
    builtin printf '%s\n' "$seq" >&"$__cg_watch_fd"
    while [[ -z $out || -z $err || -z $watch ]]; do
        # A read that times out keeps what it got of a line in the variable; the rest follows.
        if IFS= builtin read -r -t 10 -u "$__cg_ack_fd" line; then
            line=$partial$line partial=
            case $line in
                "stdout $seq") out=1 ;;
                "stderr $seq") err=1 ;;
                "watch $seq") watch=1 ;;
            esac
        else
            partial+=$line
            if ! builtin kill -0 "${__cg_helpers[@]}" 2>/dev/null; then
                __cg_log "a helper process has died; output may be lost"
                return 1
            fi
        fi
    done
}

# The body of the watcher, a helper process that looks after the shell while a cell runs (the
# shell does not read commands then).
#
# * It traps SIGINT (the driver's other helpers ignore it). On SIGINT during a cell, it writes
#   the cell's number into the `interrupted` file. Then, every tenth of a second until the cell
#   stops, it interrupts the programs the shell started after the interrupt (see
#   __cg_late_children); programs that got the interrupt and catch SIGINT are left to finish
#   their own handling.
# * The runner may send `shutdown` (to restart the kernel, say) while a cell runs, and kills the
#   driver if it does not exit soon. So, while a cell runs, the watcher looks every tenth of a
#   second whether a command is waiting, without reading it. One that arrives during a cell can
#   only be `shutdown`, on which the watcher ends the driver, or an answer to an input request,
#   which it passes on to the cell (the runner sends nothing else before `done`).
#
# Lines on the watcher's FIFO: `cell` when a cell starts, `wake` from the INT trap, and a number,
# which asks the watcher to confirm on the ack FIFO that every interrupt that came before has
# been noted (bash runs a pending trap before it goes on to the next command).
__cg_watch() {
    local TMOUT= request partial= state cell
    local -a late=()
    __cg_watched= __cg_polling=
    builtin trap '__cg_note_interrupt' INT
    builtin trap 'builtin exit 0' TERM
    exec 0</dev/null 1>/dev/null
    while :; do
        # A read that times out keeps what it got of a line in the variable; the rest follows.
        if IFS= builtin read -r ${__cg_polling:+-t 0.1} -u "$__cg_watch_fd" request; then
            request=$partial$request partial=
            case $request in
                cell | wake) __cg_polling=1 ;;
                *) builtin printf 'watch %s\n' "$request" >&"$__cg_ack_fd" ;;
            esac
        else
            partial+=$request
        fi
        [[ $__cg_polling ]] || continue
        IFS=' ' builtin read -r state cell < "$__cg_dir/cell-state"
        if [[ $state == idle ]]; then
            __cg_polling= __cg_watched=
            continue
        fi
        if [[ $state == running && $cell == "$__cg_watched" ]]; then
            __cg_late_children late
            (( ${#late[@]} )) && builtin kill -INT "${late[@]}" 2>/dev/null
        fi
        # `read -t 0` only tells whether input is waiting (or the pipe was closed).
        builtin read -r -t 0 -u "$__cg_cmd_fd" && __cg_command_during_cell
    done
}

# Called by the watcher when a command arrived during a cell. Answers to input requests are
# handed to the cell's `input` on the input FIFO, one line each (`reply TEXT` or `abort`; the
# protocol's answers hold no newline). Anything else is `shutdown`, or the end of input: the
# watcher marks the shutdown as requested, terminates the shell's children, so that the shell
# is not left waiting for one, and then the shell, whose TERM trap ends the driver.
__cg_command_during_cell() {
    local TMOUT= header= body pid list=
    IFS= builtin read -r -u "$__cg_cmd_fd" header
    if [[ $header =~ ^input_(reply|abort)\ ([0-9]+)$ ]]; then
        local answer=${BASH_REMATCH[1]} length=${BASH_REMATCH[2]}
        body=
        (( length > 0 )) && LC_ALL=C builtin read -r -N "$length" -u "$__cg_cmd_fd" body
        if [[ $answer == reply ]]; then
            builtin printf 'reply %s\n' "${body//$'\n'/ }" >&"$__cg_input_fd"
        else
            builtin printf 'abort\n' >&"$__cg_input_fd"
        fi
        return 0
    fi
    [[ $header == 'shutdown 0' || -z $header ]] || __cg_log "a command came during a cell: $header"
    : >| "$__cg_dir/shutdown"
    [[ -r /proc/$__cg_pid/task/$__cg_pid/children ]] &&
        IFS= builtin read -r list < "/proc/$__cg_pid/task/$__cg_pid/children"
    for pid in $list; do
        [[ $pid == "$BASHPID" ]] || builtin kill -TERM "$pid" 2>/dev/null
    done
    builtin kill -TERM "$__cg_pid"
    builtin exit 0
}

# The watcher's INT trap. It only takes notes, so that it is over before another SIGINT comes.
# bash resumes a `read` after running a trap, so the trap writes a line of its own into the
# watcher's FIFO: that ends the read, and the watcher looks at the cell again.
__cg_note_interrupt() {
    local state cell
    IFS=' ' builtin read -r state cell < "$__cg_dir/cell-state"
    [[ $state == running ]] || return 0
    builtin printf '%s\n' "$cell" >| "$__cg_dir/interrupted"
    __cg_watched=$cell
    __cg_uptime_ticks __cg_watched_since
    builtin printf 'wake\n' >&"$__cg_watch_fd"
}

# Sets the array named NAME to the shell's child processes that were started after the
# interrupt: those that would have died of it (they neither ignore nor catch SIGINT) but are
# alive, and those that catch SIGINT but started after the watcher noted the interrupt, less
# 50 ms, as the note comes a little after the interrupt itself. Children that ignore SIGINT
# (background jobs, the driver's helpers) are never included. Everything is read from /proc;
# without /proc/PID/task/PID/children the list stays empty.
__cg_late_children() {
    local -n __cg_children=$1
    local IFS=' ' list= pid key value ignored caught stat
    local -a fields
    __cg_children=()
    [[ -r /proc/$__cg_pid/task/$__cg_pid/children ]] || return 0
    builtin read -r list < "/proc/$__cg_pid/task/$__cg_pid/children"
    for pid in $list; do
        [[ $pid == "$BASHPID" ]] && continue
        ignored=0 caught=0
        while IFS=$': \t' builtin read -r key value; do
            [[ $value == +([[:xdigit:]]) ]] || continue
            case $key in
                SigIgn) ignored=$(( 16#$value & 2 )) ;;
                SigCgt) caught=$(( 16#$value & 2 )) ;;
            esac
        done 2>/dev/null < "/proc/$pid/status"
        (( ignored )) && continue
        if (( caught )); then
            # Field 22 of stat is the start time in clock ticks; the name in field 2 may hold
            # spaces and parentheses, so counting starts after its closing parenthesis.
            IFS= builtin read -r stat 2>/dev/null < "/proc/$pid/stat" || continue
            IFS=' ' builtin read -r -a fields <<< "${stat##*) }"
            (( ${fields[19]:-0} >= __cg_watched_since - __cg_clock_ticks / 20 )) || continue
        fi
        __cg_children+=("$pid")
    done
}

# Sets the variable named NAME to the time since boot in clock ticks, as /proc/PID/stat counts
# start times.
__cg_uptime_ticks() {
    local seconds fraction
    IFS='. ' builtin read -r seconds fraction _ < /proc/uptime
    builtin printf -v "$1" '%d' $(( (10#$seconds * 100 + 10#${fraction:0:2}) * __cg_clock_ticks / 100 ))
}

# ----------------------------------------------------------------------------------------------
# The life of a cell.
# ----------------------------------------------------------------------------------------------

# Handles commands until an `execute` of a well-formed cell arrives, prepares that cell and
# returns 0, so that the step line sources it. Exits the shell on `shutdown` and at the end of
# input.
__cg_step() {
    # A cell whose __cg_end_cell did not run (bash discarded the rest of a step line) is
    # finished first.
    [[ $__cg_cell_open ]] && __cg_end_cell 1
    while __cg_read_frame; do
        case $__cg_kind in
            execute)
                if __cg_check_syntax; then
                    __cg_begin_cell
                    return 0
                fi
                ;;
            complete) __cg_complete ;;
            is_complete) __cg_is_complete ;;
            inspect) __cg_inspect ;;
            input_reply | input_abort) ;; # Bash cells never ask for input: their stdin is /dev/null.
            shutdown) __cg_quit 0 ;;
            *) __cg_log "ignoring an unknown command: $__cg_kind" ;;
        esac
    done
    __cg_quit 0
}

# Parses the cell in __cg_body without running it, as the body of a function definition.
# Returns 0 when the cell should run. Otherwise it answers the execute itself and returns 1: a
# syntax error is sent as stderr output and an error event, with the user's line numbers, and a
# cell of nothing but blanks and comments, which bash would reject as an empty `{ }`, is done.
__cg_check_syntax() {
    local base line number lines definition
    local -a messages=()
    builtin eval "__cg_check() { $__cg_body"$'\n}' 2>/dev/null
    if (( $? == 0 )) && builtin declare -F __cg_check >/dev/null; then
        builtin unset -f __cg_check
        return 0
    fi
    builtin unset -f __cg_check
    if builtin eval "__cg_check() { $__cg_body"$'\n:\n}' 2>/dev/null; then
        builtin declare -f __cg_check >|"$__cg_dir/check-empty"
        builtin unset -f __cg_check
        IFS= builtin read -r -d '' definition < "$__cg_dir/check-empty"
        if [[ $definition == $'__cg_check () \n{ \n    :\n}\n' ]]; then
            __cg_emit done '{"status":"ok"}'
            return 1
        fi
    fi
    # Parsed again for bash's messages, which number the lines of eval'd text from the line of
    # the eval command.
    base=$LINENO; builtin eval "__cg_check() { $__cg_body"$'\n}' 2>|"$__cg_dir/check"
    builtin unset -f __cg_check
    lines=${__cg_body//[!$'\n']/}
    lines=$(( ${#lines} + 1 ))
    while IFS= builtin read -r line; do
        if [[ $line =~ eval:\ line\ ([0-9]+):\ (.*)$ ]]; then
            number=$(( BASH_REMATCH[1] - base + 1 ))
            (( number < 1 )) && number=1
            (( number > lines )) && number=$lines
            line=${BASH_REMATCH[2]}
            line=${line/#\`__cg_check() \{ /\`}
            messages+=("line $number: $line")
        fi
    done < "$__cg_dir/check"
    (( ${#messages[@]} )) || messages=("syntax error")
    local body='{"ename":"SyntaxError","evalue":'
    __cg_json_quote "${messages[0]}"
    body+=$__cg_json',"traceback":'
    __cg_json_array "${messages[@]}"
    body+=$__cg_json'}'
    builtin printf -v line 'bash: %s\n' "${messages[@]}"
    __cg_emit stderr "$line"
    __cg_emit_json error "$body"
    __cg_emit done '{"status":"error"}'
    return 1
}

__cg_begin_cell() {
    local option
    # The opening brace shares the first line with the code, so that $LINENO is right.
    builtin printf '{ %s\n}\n' "$__cg_body" >| "$__cg_cell_file"
    # Programs the driver ran at the top level stay in the job table of an interactive shell
    # until it reports on them; this makes it do so, silently, so that `jobs` in the cell shows
    # only the user's jobs.
    builtin jobs -n >/dev/null 2>&1
    __cg_seq=$(( __cg_seq + 1 ))
    builtin printf 'running %s\n' "$__cg_seq" >| "$__cg_dir/cell-state"
    builtin printf 'cell\n' >&"$__cg_watch_fd"
    __cg_cell_open=1
    __cg_abort_reason= __cg_abort_status= __cg_abort_command= __cg_captured=
    __cg_errexit_status= __cg_errexit_command=
    builtin trap -- "$__cg_err_trap" ERR
    builtin trap '__cg_abort_cell interrupt 130' INT
    [[ $__cg_user_extdebug ]] && builtin shopt -s extdebug
    # The user's options come back last: from here on the user's code is running. errtrace is
    # always on in cells, so that functions get the ERR trap.
    builtin set -o errtrace
    for option in "${__cg_user_options[@]}"; do
        builtin set -o "$option"
    done
    return 0
}

# Runs right after a cell, from the step line. STATUS defaults to the cell's exit status. The
# function has the trace attribute (set in __cg_init), so that it sees DEBUG and RETURN traps
# and its `trap -` removes them for good: they belong to the cell that set them, and must not
# run on the driver's code.
__cg_end_cell() {
    local status=${1-$?} noted
    builtin trap - DEBUG RETURN
    [[ $__cg_cell_open ]] || return 0
    builtin trap '' INT
    builtin printf 'idle %s\n' "$__cg_seq" >| "$__cg_dir/cell-state"
    __cg_capture_user_state
    [[ $__cg_user_extdebug ]] || builtin shopt -u extdebug
    __cg_cell_open=
    __cg_sync_output
    IFS= builtin read -r noted < "$__cg_dir/interrupted"
    # An interrupt outranks what it caused (a program killed by it failing under `set -e`).
    [[ $noted == "$__cg_seq" ]] && __cg_abort_reason=interrupt
    __cg_report "$status"
}

# Saves the user's shell options and ERR trap, then switches to the driver's neutral settings.
# Runs once per cell: at its end, or as soon as it is aborted.
__cg_capture_user_state() {
    [[ $__cg_captured ]] && return 0
    __cg_captured=1
    local opts=$SHELLOPTS option IFS=:
    # errtrace stays on for a moment: functions only see the ERR trap under errtrace.
    builtin set "${__cg_neutral_options[@]}" -o errtrace
    # The ERR trap is the driver's, calling the user's own one, if any. When the cell set
    # another ERR trap, that one becomes the user's trap from now on. If the cell switched
    # errtrace off, the trap cannot be seen from here and the user's trap is left as it was.
    if [[ :$opts: == *:errtrace:* ]]; then
        __cg_trap_text ERR
        [[ $__cg_trap_text != "$__cg_err_trap" ]] && __cg_user_err_trap=$__cg_trap_text
        __cg_make_err_trap
    fi
    builtin trap - ERR
    builtin set +o errtrace
    # xtrace and verbose go last, so that restoring them does not trace the restoring.
    __cg_user_options=()
    for option in $opts; do
        case $option in
            errexit | nounset | pipefail | noclobber | noglob | allexport | keyword | posix | errtrace | functrace)
                __cg_user_options+=("$option") ;;
        esac
    done
    [[ :$opts: == *:verbose:* ]] && __cg_user_options+=(verbose)
    [[ :$opts: == *:xtrace:* ]] && __cg_user_options+=(xtrace)
    if [[ :$BASHOPTS: == *:extdebug:* ]]; then __cg_user_extdebug=1; else __cg_user_extdebug=; fi
    return 0
}

# Sets __cg_trap_text to the command of the trap on SIGNAL, from the output of `trap -p`:
# `trap -- 'COMMAND' NAME`, with the command quoted as one shell word.
__cg_trap_text() {
    local line=
    __cg_trap_text=
    builtin trap -p "$1" >| "$__cg_dir/trap"
    # read -d '' fails at the end of the file; `|| :` keeps that from reaching an ERR trap.
    IFS= builtin read -r -d '' line < "$__cg_dir/trap" || :
    if [[ $line ]]; then
        line=${line#'trap -- '}
        line=${line%$'\n'}
        builtin eval "__cg_trap_text=${line% *}"
    fi
}

# Builds the ERR trap of cells: the guard, then the user's ERR trap (which finds the failed
# command's status in $?, as the guard returns it), then the abort the guard may have decided
# on. The user's trap runs through eval, so that whatever it contains cannot break the
# driver's part.
__cg_make_err_trap() {
    __cg_err_trap='__cg_err_guard "$?"'
    [[ $__cg_user_err_trap ]] && __cg_err_trap+=' || builtin eval -- "$__cg_user_err_trap"'
    __cg_err_trap+=$'\n''__cg_err_abort'
}

# STATUS is the failed command's. Under `set -e` bash is about to end the shell; switching
# errexit off here prevents that (bash checks errexit after running the ERR trap). Inside the
# cell this is remembered so that __cg_err_abort stops the cell; subshells are left alone, since
# for them exiting is right. Returns STATUS, except in the shell itself outside the cell (after
# a failed cell, when the step line's `.` fails): there it returns 0, so that the user's ERR trap
# does not run for the driver's own command.
__cg_err_guard() {
    if [[ $BASHPID == "$__cg_pid" ]]; then
        if ! __cg_in_cell; then
            [[ $- == *e* ]] && __cg_capture_user_state
            return 0
        fi
        if [[ $- == *e* ]]; then
            __cg_errexit_status=$1 __cg_errexit_command=$BASH_COMMAND
            __cg_capture_user_state
        fi
    fi
    return "$1"
}

__cg_err_abort() {
    if [[ $__cg_errexit_status && $BASHPID == "$__cg_pid" ]]; then
        __cg_abort_cell errexit "$__cg_errexit_status" "$__cg_errexit_command"
        __cg_errexit_status=
    fi
}

# True while the shell runs code of the cell: the cell file is on the source stack.
__cg_in_cell() {
    local source
    for source in "${BASH_SOURCE[@]}"; do
        [[ $source == "$__cg_cell_file" ]] && return 0
    done
    return 1
}

# Stops the running cell: from the next command on, the DEBUG trap makes bash return from every
# function and from the sourced cell. REASON is interrupt, exit or errexit.
__cg_abort_cell() {
    [[ $__cg_cell_open ]] || return 0
    if [[ -z $__cg_abort_reason ]]; then
        __cg_abort_reason=$1 __cg_abort_status=$2 __cg_abort_command=${3-}
        builtin printf 'stopping %s\n' "$__cg_seq" >| "$__cg_dir/cell-state"
    fi
    __cg_capture_user_state
    builtin shopt -s extdebug
    builtin trap '__cg_unwind' DEBUG
}

# The DEBUG trap of an aborted cell. With extdebug, a DEBUG trap that returns 2 inside a
# function or a sourced file makes bash return from it instead of running the command.
__cg_unwind() {
    __cg_in_cell && return 2
    return 0
}

# `exit` in a cell ends the cell and leaves the kernel running. In subshells, and outside cells,
# it is the builtin.
exit() {
    local status=$?
    if [[ $BASHPID != "$__cg_pid" || -z $__cg_cell_open ]]; then
        builtin exit "$@"
    fi
    if (( $# )); then
        if [[ $1 =~ ^[[:space:]]*[-+]?[0-9]+[[:space:]]*$ ]]; then
            status=$(( ($1) & 255 ))
        else
            builtin printf 'bash: exit: %s: numeric argument required\n' "$1" >&2
            status=2
        fi
    fi
    builtin printf 'bash: exit: the cell ended with status %d; the kernel keeps running\n' "$status" >&2
    __cg_abort_cell exit "$status"
    return "$status"
}

# `display [--id ID] [--update] MIME [TEXT...]` shows TEXT, or what comes on stdin, as rich
# output of type MIME (text/html, text/markdown, image/svg+xml, ...). Binary types (image/png,
# image/jpeg, image/gif, application/pdf) are read from stdin, or from the file named by the
# argument, and sent base64-encoded. `--id` names the output, and with `--update` replaces
# the output of that name instead of adding one, as update_display_data does.
display() {
    builtin local -
    builtin set "${__cg_neutral_options[@]}"
    local LC_ALL=C id= update= mime content data body kind=display
    while (( $# )); do
        case $1 in
            --id) id=${2-}; builtin shift 2 || builtin shift ;;
            --id=*) id=${1#--id=}; builtin shift ;;
            --update) update=1; builtin shift ;;
            --) builtin shift; break ;;
            *) break ;;
        esac
    done
    mime=${1-}
    if [[ ! $mime =~ ^[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+$ ]] || [[ $update && -z $id ]]; then
        builtin printf 'usage: display [--id ID] [--update] MIME [TEXT...]\n' >&2
        return 2
    fi
    builtin shift
    case $mime in
        image/png | image/jpeg | image/gif | application/pdf)
            if (( $# )); then
                content=$(base64 -w0 -- "$1") || return 1
            else
                content=$(base64 -w0) || return 1
            fi
            ;;
        *)
            if (( $# )); then
                content="$*"
            else
                content=$("$__cg_tool_cat"; builtin printf x) || return 1
                content=${content%x}
            fi
            ;;
    esac
    __cg_json_quote "$mime"
    data=$__cg_json
    __cg_json_quote "$content"
    data+=:$__cg_json
    if [[ $mime != text/plain ]]; then
        __cg_json_quote "<$mime output>"
        data+=',"text/plain":'$__cg_json
    fi
    body="{\"data\":{$data},\"metadata\":{}"
    if [[ $id ]]; then
        __cg_json_quote "$id"
        body+=",\"transient\":{\"display_id\":$__cg_json}"
    fi
    [[ $update ]] && kind=update_display
    __cg_sync_output || return 1
    __cg_emit_json "$kind" "$body}"
}

# `input [-s] [-p PROMPT] [NAME]` asks the frontend for a line and stores it in NAME (REPLY by
# default), as `read -r -p PROMPT NAME` does on a terminal; -s hides what is typed. Fails with
# status 1 when the frontend does not allow input or withdraws the question; an interrupt
# stops it like any command. (The commands of a
# cell read /dev/null, so `read` itself cannot ask.) The watcher passes the answer on (see
# __cg_command_during_cell).
input() {
    builtin local -
    builtin set "${__cg_neutral_options[@]}"
    local OPTIND=1 __cg_opt __cg_prompt= __cg_password=false __cg_line TMOUT= __cg_request
    while builtin getopts ':sp:' __cg_opt; do
        case $__cg_opt in
            s) __cg_password=true ;;
            p) __cg_prompt=$OPTARG ;;
            *) builtin printf 'usage: input [-s] [-p PROMPT] [NAME]\n' >&2; return 2 ;;
        esac
    done
    builtin shift $(( OPTIND - 1 ))
    local -n __cg_input_target=${1:-REPLY}
    # An answer left over from an input that was interrupted is not for this one.
    while builtin read -r -t 0 -u "$__cg_input_fd"; do
        builtin read -r -u "$__cg_input_fd" __cg_line
    done
    __cg_json_quote "$__cg_prompt"
    __cg_request="{\"prompt\":$__cg_json,\"password\":$__cg_password}"
    __cg_sync_output || return 1
    __cg_emit_json input_request "$__cg_request"
    # Waiting in short slices lets the INT trap run, which bash holds back during a `read`; a
    # read that times out keeps what it got of a line in the variable, and the rest follows.
    local __cg_partial=
    until IFS= builtin read -r -t 0.1 -u "$__cg_input_fd" __cg_line; do
        __cg_partial+=$__cg_line
        [[ $__cg_abort_reason ]] && return 130
    done
    __cg_line=$__cg_partial$__cg_line
    [[ $__cg_line == 'reply '* ]] || return 1
    __cg_input_target=${__cg_line#reply }
}

# `clear_output [--wait]` clears the cell's output; with --wait, once new output arrives.
clear_output() {
    builtin local -
    builtin set "${__cg_neutral_options[@]}"
    local wait=false
    [[ ${1-} == --wait ]] && wait=true
    __cg_sync_output || return 1
    __cg_emit clear_output "{\"wait\":$wait}"
}

# Sends the cell's outcome: an error event when it failed, then `done`.
__cg_report() {
    local status=$1 ename= evalue= command body
    case $__cg_abort_reason in
        interrupt)
            ename=Interrupted
            evalue='Execution was interrupted by SIGINT'
            ;;
        exit)
            if (( __cg_abort_status != 0 )); then
                ename=ExitStatus
                evalue="exit $__cg_abort_status ended the cell"
            fi
            ;;
        errexit)
            command=${__cg_abort_command%%$'\n'*}
            (( ${#command} > 200 )) && command="${command:0:200}..."
            ename=ExitStatus
            evalue="set -e stopped the cell: \`$command' exited with status $__cg_abort_status"
            ;;
        *)
            if (( status != 0 )); then
                ename=ExitStatus
                evalue="the cell ended with exit status $status"
            fi
            ;;
    esac
    if [[ -z $ename ]]; then
        __cg_emit done '{"status":"ok"}'
        return
    fi
    body='{"ename":"'$ename'","evalue":'
    __cg_json_quote "$evalue"
    body+=$__cg_json',"traceback":'
    __cg_json_array "$ename: $evalue"
    body+=$__cg_json'}'
    if [[ $body == *[$'\x80'-$'\xff']* ]]; then
        __cg_emit_json error "$body"
        __cg_emit done '{"status":"error"}'
    else
        __cg_emit error "$body" done '{"status":"error"}'
    fi
}

# ----------------------------------------------------------------------------------------------
# Completion, completeness and inspection.
# ----------------------------------------------------------------------------------------------

# Reads the code and cursor of a request into __cg_code and __cg_cursor, and splits the code at
# the cursor into __cg_before and __cg_after. The cursor counts code points.
__cg_read_cursor_request() {
    __cg_json_get_string "$__cg_body" code
    __cg_code=$__cg_json_value
    __cg_json_get_int "$__cg_body" cursor_pos
    __cg_cursor=$__cg_json_value
    local LC_ALL=$__cg_text_locale
    (( __cg_cursor > ${#__cg_code} )) && __cg_cursor=${#__cg_code}
    __cg_before=${__cg_code:0:__cg_cursor}
    __cg_after=${__cg_code:__cg_cursor}
}

# The characters that end a word, for completion and inspection.
__cg_word_break=$' \t\n;|&()<>`"\'='

# Completes the word before the cursor: variables after `$` or `${`, commands (aliases,
# functions, builtins, keywords, programs) where a command is expected, file names elsewhere.
__cg_complete() {
    __cg_read_cursor_request
    local LC_ALL=$__cg_text_locale
    local token=${__cg_before##*[$__cg_word_break]}
    local start=$(( __cg_cursor - ${#token} ))
    local prefix=${__cg_before:0:start} quoted= name
    local -a found=() matches=()
    prefix=${prefix%%+([[:blank:]])}
    [[ $prefix == *[\"\'] ]] && quoted=1
    if [[ $token == '${'* ]]; then
        builtin mapfile -t found < <(builtin compgen -P '${' -S '}' -v -- "${token:2}")
        __cg_names_in_cell variables
        for name in "${__cg_names[@]}"; do
            [[ $name == "${token:2}"* ]] && found+=("\${$name}")
        done
    elif [[ $token == '$'* ]]; then
        builtin mapfile -t found < <(builtin compgen -P '$' -v -- "${token:1}")
        __cg_names_in_cell variables
        for name in "${__cg_names[@]}"; do
            [[ $name == "${token:1}"* ]] && found+=("\$$name")
        done
    elif [[ $token != */* ]] && [[ -z $prefix || $prefix == *[\;\|\&\(\`$'\n'] ||
        $prefix =~ (^|[[:space:]])(then|do|else|elif|if|while|until|time|command|exec|builtin|!)$ ]]; then
        builtin mapfile -t found < <(builtin compgen -c -- "$token")
        __cg_names_in_cell functions
        for name in "${__cg_names[@]}"; do
            [[ $name == "$token"* ]] && found+=("$name")
        done
    else
        while IFS= builtin read -r name; do
            [[ -d $name ]] && name+=/
            [[ $quoted ]] || builtin printf -v name '%q' "$name"
            # %q escapes the ~ of ~/..., which must stay expandable.
            [[ $name == '\~'* ]] && name=${name:1}
            found+=("$name")
        done < <(builtin compgen -f -- "$token")
    fi
    # Sorted, without duplicates and without the driver's own names.
    if (( ${#found[@]} )); then
        while IFS= builtin read -r name; do
            [[ $name == ?(\$)?(\{)__cg_* ]] || matches+=("$name")
        done < <(builtin printf '%s\n' "${found[@]}" | LC_ALL=C "$__cg_tool_sort" -u)
    fi
    __cg_json_array "${matches[@]}"
    __cg_emit_json complete_reply \
        "{\"matches\":$__cg_json,\"cursor_start\":$start,\"cursor_end\":$__cg_cursor,\"metadata\":{}}"
}

# Sets the array __cg_names to the variables (KIND `variables`: `NAME=`, `for NAME in`, `read
# NAME`) or the functions (`functions`: `NAME()`, `function NAME`) that the code before the
# cursor defines, so that completion offers names of the cell being written before it has run.
__cg_names_in_cell() {
    local rest=$__cg_before pattern
    __cg_names=()
    if [[ $1 == variables ]]; then
        pattern='(^|[[:space:];&|(])(for[[:space:]]+|read[[:space:]]+(-[a-zA-Z]+[[:space:]]+)*|(local|declare|export|readonly)[[:space:]]+(-[a-zA-Z]+[[:space:]]+)*)?([A-Za-z_][A-Za-z0-9_]*)(\+?=|[[:space:]]|[;&|)]|$)'
    else
        pattern='(^|[[:space:];&|(])(function[[:space:]]+([A-Za-z_][A-Za-z0-9_:.-]*)|([A-Za-z_][A-Za-z0-9_:.-]*)[[:space:]]*\([[:space:]]*\))'
    fi
    while [[ $rest =~ $pattern ]]; do
        if [[ $1 == variables ]]; then
            # A bare word counts only after for, read or a declaration.
            [[ ${BASH_REMATCH[2]} || ${BASH_REMATCH[7]} == *= ]] && __cg_names+=("${BASH_REMATCH[6]}")
        else
            __cg_names+=("${BASH_REMATCH[3]}${BASH_REMATCH[4]}")
        fi
        rest=${rest#*"${BASH_REMATCH[0]}"}
    done
}

# Asks `bash -n` about the code: an unexpected end of input (or a here-document or a line
# continuation left open) means incomplete, any other error invalid.
__cg_is_complete() {
    local status=complete message=
    __cg_json_get_string "$__cg_body" code
    builtin printf '%s\n' "$__cg_json_value" >| "$__cg_dir/is-complete"
    if ! "$__cg_bash" --norc --noprofile -n -O extglob "$__cg_dir/is-complete" 2>|"$__cg_dir/check"; then
        status=invalid
    fi
    IFS= builtin read -r -d '' message < "$__cg_dir/check"
    if [[ $message == *'unexpected end of file'* || $message == *'unexpected EOF'* ||
        $message == *'here-document'* ]]; then
        status=incomplete
    elif [[ $status == complete && $__cg_json_value =~ (^|[^\\])(\\\\)*\\$ ]]; then
        status=incomplete
    fi
    if [[ $status == incomplete ]]; then
        __cg_emit is_complete_reply '{"status":"incomplete","indent":""}'
    else
        __cg_emit is_complete_reply "{\"status\":\"$status\"}"
    fi
}

# Shows `type` (and `help` for builtins and keywords) for the word at the cursor, or the
# declaration of the variable for $NAME.
__cg_inspect() {
    __cg_read_cursor_request
    local LC_ALL=$__cg_text_locale
    local word=${__cg_before##*[$__cg_word_break]}${__cg_after%%[$__cg_word_break]*}
    local text= found= kind= out=$__cg_dir/inspect
    if [[ $word =~ ^\$\{?([A-Za-z_][A-Za-z0-9_]*) ]]; then
        word=${BASH_REMATCH[1]}
        [[ $word != __cg_* ]] && builtin declare -p -- "$word" >|"$out" 2>&1 && found=1
    elif [[ $word && $word != __cg_* ]]; then
        if builtin type -a -- "$word" >|"$out" 2>&1; then
            found=1
            builtin type -t -- "$word" >|"$out.kind" 2>&1
            IFS= builtin read -r kind < "$out.kind"
            if [[ $kind == builtin || $kind == keyword ]]; then
                { builtin printf '\n'; builtin help -- "$word"; } >>"$out" 2>&1
            fi
        fi
    fi
    if [[ $found ]]; then
        IFS= builtin read -r -d '' text < "$out"
        __cg_json_quote "$text"
        __cg_emit_json inspect_reply "{\"found\":true,\"data\":{\"text/plain\":$__cg_json},\"metadata\":{}}"
    else
        __cg_emit inspect_reply '{"found":false,"data":{},"metadata":{}}'
    fi
}

# ----------------------------------------------------------------------------------------------
# Start and end.
# ----------------------------------------------------------------------------------------------

# The TERM trap: a shutdown the watcher received ends the driver normally.
__cg_terminated() {
    if [[ -e $__cg_dir/shutdown ]]; then
        __cg_quit 0
    fi
    __cg_quit 143
}

# Ends the driver: stops the helpers, removes the temporary files and exits with STATUS.
__cg_quit() {
    builtin trap '' INT TERM HUP
    [[ ${__cg_helpers[*]} ]] && builtin kill -TERM "${__cg_helpers[@]}" 2>/dev/null
    [[ -d $__cg_dir ]] && "$__cg_tool_rm" -rf -- "$__cg_dir"
    builtin exit "$1"
}

# Removes the temporary directories under BASE that drivers killed before they could clean up
# left behind: those of this user whose process no longer exists.
__cg_remove_stale_dirs() {
    local dir pid
    local -a stale=()
    for dir in "$1"/cellgate-bash.*; do
        [[ -d $dir && -O $dir && ${dir##*/} =~ ^cellgate-bash\.([0-9]+)\. ]] || continue
        pid=${BASH_REMATCH[1]}
        [[ -e /proc/$pid ]] || stale+=("$dir")
    done
    (( ${#stale[@]} )) && "$__cg_tool_rm" -rf -- "${stale[@]}"
    return 0
}

# Writes a fresh random marker for the end-of-cell synchronisation into its file.
__cg_make_marker() {
    local marker
    builtin printf -v marker 'cellgate-sync-%08x%08x%08x%08x' \
        $(( ${SRANDOM:-0} ^ RANDOM << 16 ^ RANDOM )) $(( ${SRANDOM:-0} ^ RANDOM << 16 ^ RANDOM )) \
        $(( ${SRANDOM:-0} ^ RANDOM << 16 ^ RANDOM )) $(( ${SRANDOM:-0} ^ RANDOM << 16 ^ RANDOM ))
    builtin printf '%s' "$marker" >| "$__cg_dir/marker"
}

# A UTF-8 locale lets ${#text} count code points, as the protocol's cursor positions do.
__cg_pick_text_locale() {
    local candidate sample
    for candidate in C.UTF-8 C.utf8 en_US.UTF-8; do
        local LC_ALL=$candidate 2>/dev/null
        sample=$'\xc3\xa9'
        if (( ${#sample} == 1 )); then
            __cg_text_locale=$candidate
            return 0
        fi
    done
    __cg_text_locale=C
}

__cg_init() {
    local tool stream_fd=${0##*/}
    # File descriptors: the runner's pipes move to high numbers, and between cells the shell's
    # own fd 0 and fd 1 point at /dev/null, so that nothing the shell prints by itself (a user's
    # trap running at the top level, say) can reach the event stream. fd 3 holds the diagnostics
    # parked by the bootstrap. The stream of step lines was opened as /dev/fd/N, which bash
    # reads through a descriptor of its own; N itself would leak into every command.
    exec {__cg_cmd_fd}<&0 {__cg_ev_fd}>&1 {__cg_diag_fd}>&3 {__cg_null_fd}</dev/null
    exec 0<&"$__cg_null_fd" 1>/dev/null 2>&"$__cg_diag_fd" 3>&-
    [[ $0 == /dev/fd/+([0-9]) ]] && builtin eval "exec $stream_fd<&-"

    for tool in dd cat grep sort mktemp mkfifo rm; do
        __cg_find_tool "$tool" "__cg_tool_$tool" || {
            __cg_log "$tool was not found on PATH"
            builtin exit 1
        }
    done
    __cg_find_tool iconv __cg_tool_iconv || __cg_tool_iconv=
    __cg_bash=$BASH
    __cg_clock_ticks=100
    if __cg_find_tool getconf __cg_tool_getconf; then
        __cg_clock_ticks=$("$__cg_tool_getconf" CLK_TCK 2>/dev/null) || __cg_clock_ticks=100
        [[ $__cg_clock_ticks == +([0-9]) ]] || __cg_clock_ticks=100
    fi

    # Every cell rewrites a few small files here; on a tmpfs that costs next to nothing, while
    # on a disk-backed /tmp each rewrite can take a millisecond. The directory's name holds the
    # driver's process id, so that a later driver can remove it if this one gets killed.
    local base=${TMPDIR:-/tmp}
    [[ -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
    __cg_remove_stale_dirs "$base"
    __cg_dir=$("$__cg_tool_mktemp" -d "$base/cellgate-bash.$$.XXXXXXXX") ||
        __cg_dir=$("$__cg_tool_mktemp" -d "${TMPDIR:-/tmp}/cellgate-bash.$$.XXXXXXXX") || builtin exit 1
    __cg_cell_file=$__cg_dir/cell
    "$__cg_tool_mkfifo" -m 600 "$__cg_dir/stdout" "$__cg_dir/stderr" "$__cg_dir/ack" "$__cg_dir/lock" \
        "$__cg_dir/watch" "$__cg_dir/input" || __cg_quit 1
    # Opened read-write, a FIFO never blocks the open and never reports end of file.
    exec {__cg_out_fd}<>"$__cg_dir/stdout" {__cg_err_fd}<>"$__cg_dir/stderr"
    exec {__cg_ack_fd}<>"$__cg_dir/ack" {__cg_lock_fd}<>"$__cg_dir/lock" {__cg_watch_fd}<>"$__cg_dir/watch"
    exec {__cg_input_fd}<>"$__cg_dir/input"
    __cg_unlock
    builtin printf '0\n' >| "$__cg_dir/sync"
    builtin printf 'idle 0\n' >| "$__cg_dir/cell-state"
    builtin printf '0\n' >| "$__cg_dir/interrupted"
    __cg_make_marker
    __cg_pick_text_locale

    # Job control would give each command its own process group, out of reach of interrupts.
    # History (and its `!` expansion) is for terminals. execfail keeps a failed `exec` from
    # ending the shell.
    builtin set +o monitor +o history +o histexpand
    unset HISTFILE
    builtin shopt -s extglob execfail
    BASH_ARGV0=bash

    # The helpers are disowned so that `jobs` and `wait` in cells do not see them.
    __cg_helpers=()
    __cg_forward stdout "$__cg_out_fd" &
    __cg_helpers+=($!)
    __cg_forward stderr "$__cg_err_fd" &
    __cg_helpers+=($!)
    __cg_watch &
    __cg_helpers+=($!)
    builtin disown -a

    # An interactive shell ignores SIGTERM; the driver rather cleans up and goes. (SIGTERM is
    # also how the watcher ends the driver on a `shutdown` that comes during a cell.)
    builtin trap '__cg_terminated' TERM
    builtin trap '__cg_quit 129' HUP
    builtin declare -ft __cg_end_cell

    __cg_seq=0
    __cg_cell_open=
    __cg_user_options=()
    __cg_user_extdebug=
    __cg_user_err_trap=
    __cg_make_err_trap

    local version banner
    __cg_json_quote "$BASH_VERSION"
    version=$__cg_json
    __cg_json_quote "GNU bash, version $BASH_VERSION"$'\n'"cellgate Bash driver $__cg_version"
    banner=$__cg_json
    __cg_emit ready "{\"implementation\":\"cellgate-bash\",\"implementation_version\":\"$__cg_version\",\"language_info\":{\"name\":\"bash\",\"version\":$version,\"mimetype\":\"text/x-sh\",\"file_extension\":\".sh\",\"pygments_lexer\":\"bash\",\"codemirror_mode\":\"shell\"},\"banner\":$banner}"
}

__cg_init
