<?php
// cellgate PHP driver: the long-lived PHP process behind one PHP kernel.
//
// launch.sh starts it with the runner's command pipe on fd 3, the event pipe on fd 4, the
// runner's stderr on fd 5, and the user's fds 1 and 2 pointing at FIFOs whose reading ends are
// fds 6 and 7 (see docs/driver-protocol.md for the frames spoken on fds 3 and 4).
//
// PHP has no threads, yet output must keep flowing while a cell runs. So the driver forks once
// at start: the child, the forwarder, owns the event pipe. It reads the two FIFOs and forwards
// the user's output as it arrives, and it writes every frame the main process hands it over a
// socket. Before handing over an event that must follow the cell's output (`result`, `error`,
// `done`), the main process writes a fence marker to fds 1 and 2; the forwarder holds the event
// back until both FIFOs have delivered the marker, and holds back output that came after the
// marker until the event is written.
//
// Cells run in the global scope, each one `include`d from an in-memory stream (`cell://N`), so
// that variables, functions and classes persist and tracebacks can name the cell. Before a cell
// runs, a short-lived forked copy of the kernel compiles it and performs its declarations: most
// of PHP's fatal errors (a function declared twice, a class that breaks its interface, `break`
// outside a loop) happen there, and the kernel itself never meets them.

namespace Cellgate {

    const DRIVER_VERSION = '0.1.0';

    // The longest frame header the protocol allows, newline included.
    const MAX_HEADER_LEN = 64;
    // The largest frame body the runner accepts; a bigger event would break the stream.
    const MAX_BODY = 64 * 1024 * 1024;
    // How much of an oversized event's text survives; escaped as JSON it stays under MAX_BODY.
    const SHRUNK_TEXT_BYTES = 4 * 1024 * 1024;
    // How much is read from a pipe at once.
    const READ_CHUNK = 65536;
    // The largest output frame the forwarder builds from pieces that are ready together.
    const OUTPUT_BATCH = 1024 * 1024;

    // Descriptors set up by launch.sh.
    const FD_COMMANDS = 3;
    const FD_EVENTS = 4;
    const FD_DIAGNOSTICS = 5;
    const FD_STDOUT_READER = 6;
    const FD_STDERR_READER = 7;

    // PHP's superglobals, which are no ordinary variables of any scope.
    const SUPERGLOBALS = [
        'GLOBALS', '_SERVER', '_GET', '_POST', '_FILES', '_COOKIE', '_SESSION', '_REQUEST', '_ENV',
    ];

    // The error types that end a script; error_get_last() in a shutdown function shows one of
    // these when a fatal error, rather than exit(), stopped the code.
    const FATAL_ERRORS = E_ERROR | E_PARSE | E_CORE_ERROR | E_COMPILE_ERROR | E_USER_ERROR
        | E_RECOVERABLE_ERROR;

    /**
     * Thrown into the running cell when the runner interrupts it (SIGINT).
     *
     * It extends Error rather than Exception so that the common `catch (Exception $e)` does
     * not swallow it.
     */
    final class Interrupt extends \Error
    {
    }

    /**
     * What `exit` and `die` in a cell become: ending the kernel's process would end the kernel,
     * so the cell's exit request only ends the cell.
     */
    final class ExitRequest extends \Error
    {
        public static function raise(int|string $status = 0): never
        {
            if (\is_string($status)) {
                // exit("text") prints the text and exits with status 0.
                echo $status;
                $status = 0;
            }
            throw new self("exit($status)", $status);
        }
    }

    /**
     * The `cell://` stream wrapper: serves the source of cells from memory to `include`, so
     * that PHP names each cell in messages and tracebacks and no files are written.
     */
    final class CellSource
    {
        /** @var resource|null Set by PHP. */
        public $context;

        /** @var array<string, string> */
        private static array $sources = [];

        private string $data = '';
        private int $position = 0;

        public static function register(): void
        {
            if (!\in_array('cell', stream_get_wrappers(), true)) {
                stream_wrapper_register('cell', self::class);
            }
        }

        public static function put(string $name, string $source): string
        {
            self::$sources[$name] = $source;
            return "cell://$name";
        }

        public static function forget(string $name): void
        {
            unset(self::$sources[$name]);
        }

        public function stream_open(string $path, string $mode, int $options, ?string &$opened): bool
        {
            $name = substr($path, \strlen('cell://'));
            if (!isset(self::$sources[$name]) || strpbrk($mode, 'waxc+') !== false) {
                return false;
            }
            $this->data = self::$sources[$name];
            $this->position = 0;
            $opened = $path;
            return true;
        }

        public function stream_read(int $count): string
        {
            $chunk = (string) substr($this->data, $this->position, $count);
            $this->position += \strlen($chunk);
            return $chunk;
        }

        public function stream_eof(): bool
        {
            return $this->position >= \strlen($this->data);
        }

        public function stream_tell(): int
        {
            return $this->position;
        }

        public function stream_seek(int $offset, int $whence = SEEK_SET): bool
        {
            $target = match ($whence) {
                SEEK_CUR => $this->position + $offset,
                SEEK_END => \strlen($this->data) + $offset,
                default => $offset,
            };
            if ($target < 0) {
                return false;
            }
            $this->position = $target;
            return true;
        }

        public function stream_stat(): array
        {
            return ['mode' => 0100444, 'size' => \strlen($this->data)];
        }

        public function url_stat(string $path, int $flags): array|false
        {
            $source = self::$sources[substr($path, \strlen('cell://'))] ?? null;
            return $source === null ? false : ['mode' => 0100444, 'size' => \strlen($source)];
        }

        public function stream_set_option(int $option, int $arg1, ?int $arg2): bool
        {
            return false;
        }

        public function stream_close(): void
        {
            $this->data = '';
        }
    }

    /**
     * Descriptor housekeeping through FFI, when PHP allows it.
     *
     * launch.sh cannot mark descriptors close-on-exec, so without this every child process of
     * the user would inherit the runner's pipes (and could then hold them open after the kernel
     * is gone). PHP has no fcntl() of its own; FFI reaches libc's. Where FFI is disabled the
     * descriptors simply stay inheritable.
     */
    final class Descriptors
    {
        private const F_GETFD = 1;
        private const F_SETFD = 2;
        private const FD_CLOEXEC = 1;

        private static \FFI|false|null $libc = null;

        private static function libc(): ?\FFI
        {
            if (self::$libc === null) {
                self::$libc = false;
                if (\extension_loaded('ffi')) {
                    try {
                        self::$libc = \FFI::cdef('int fcntl(int fd, int cmd, ...); int close(int fd);', 'libc.so.6');
                    } catch (\Throwable) {
                        self::$libc = false;
                    }
                }
            }
            return self::$libc ?: null;
        }

        public static function close(int ...$fds): void
        {
            $libc = self::libc();
            if ($libc !== null) {
                foreach ($fds as $fd) {
                    $libc->close($fd);
                }
            }
        }

        /** Marks every descriptor from 3 up close-on-exec: at start, they all belong to the driver. */
        public static function keepFromChildren(): bool
        {
            $libc = self::libc();
            if ($libc === null) {
                return false;
            }
            foreach (@scandir('/proc/self/fd') ?: [] as $entry) {
                if (ctype_digit($entry) && (int) $entry >= 3) {
                    $flags = $libc->fcntl((int) $entry, self::F_GETFD);
                    if ($flags >= 0) {
                        $libc->fcntl((int) $entry, self::F_SETFD, $flags | self::FD_CLOEXEC);
                    }
                }
            }
            return true;
        }
    }

    /** Writes all of `$bytes` to `$stream`, or returns false when the other end has gone. */
    function write_fully($stream, string $bytes): bool
    {
        $length = \strlen($bytes);
        $offset = 0;
        $stalls = 0;
        while ($offset < $length) {
            $written = @fwrite($stream, $offset === 0 ? $bytes : substr($bytes, $offset));
            if ($written === false) {
                return false;
            }
            if ($written === 0) {
                // A write cut short by a signal; a pipe that accepts nothing for long is broken.
                if (++$stalls > 1000) {
                    return false;
                }
                usleep(1000);
                continue;
            }
            $stalls = 0;
            $offset += $written;
        }
        return true;
    }

    function encode_frame(string $kind, string $body): string
    {
        return $kind . ' ' . \strlen($body) . "\n" . $body;
    }

    /** JSON for event bodies: never fails, and invalid UTF-8 in user data becomes U+FFFD. */
    function json(mixed $value): string
    {
        $flags = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE
            | JSON_PARTIAL_OUTPUT_ON_ERROR | JSON_PRESERVE_ZERO_FRACTION;
        $text = json_encode($value, $flags);
        return $text === false ? 'null' : $text;
    }

    /** Cuts `$text` to SHRUNK_TEXT_BYTES, on a UTF-8 character boundary, with a note. */
    function shrink_text(string $text): string
    {
        if (\strlen($text) <= SHRUNK_TEXT_BYTES) {
            return $text;
        }
        $cut = SHRUNK_TEXT_BYTES;
        while ($cut > 0 && (\ord($text[$cut]) & 0xC0) === 0x80) {
            $cut--;
        }
        return substr($text, 0, $cut) . "\n[" . (\strlen($text) - $cut) . ' more bytes not shown]';
    }

    /**
     * Runs a cell in a function whose local variables are references to the globals.
     *
     * After a fatal error the kernel can only go on from inside a shutdown function, which is
     * not the global scope; binding every global by reference keeps cells working on the same
     * variables there. Variables a cell creates become globals when it ends.
     */
    function run_with_globals(string $__cellgate_path): mixed
    {
        foreach (array_keys($GLOBALS) as $__cellgate_name) {
            if (!\in_array($__cellgate_name, SUPERGLOBALS, true) && $__cellgate_name !== '__cellgate_path') {
                $$__cellgate_name = &$GLOBALS[$__cellgate_name];
            }
        }
        unset($__cellgate_name);
        try {
            return include $__cellgate_path;
        } finally {
            $__cellgate_known = array_fill_keys(array_keys($GLOBALS), true);
            foreach (array_keys(get_defined_vars()) as $__cellgate_name) {
                if (!str_starts_with($__cellgate_name, '__cellgate_')
                    && !\in_array($__cellgate_name, SUPERGLOBALS, true)) {
                    unset($__cellgate_known[$__cellgate_name]);
                    $GLOBALS[$__cellgate_name] = &$$__cellgate_name;
                }
            }
            // Globals the cell unset.
            foreach (array_keys($__cellgate_known) as $__cellgate_name) {
                if (!str_starts_with($__cellgate_name, '__cellgate_')
                    && !\in_array($__cellgate_name, SUPERGLOBALS, true)) {
                    unset($GLOBALS[$__cellgate_name]);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The forwarder (a forked child process).

    /**
     * The only writer of the event pipe. It forwards the user's output from the FIFOs and the
     * frames the main process sends over a socket, in an order that puts every fenced event
     * after the output that was written before it.
     */
    final class Forwarder
    {
        /** @var resource */
        private $events;
        /** @var resource */
        private $socket;
        private string $markerPrefix;
        private int $parentPid;
        private string $socketBuffer = '';
        private bool $socketOpen = true;
        /** @var list<array{0: string, 1: string}> Frames from the main process, oldest first. */
        private array $pending = [];
        /** The highest fence whose frames have been written. */
        private int $writtenFence = 0;
        /** @var list<array> The user's two output streams. */
        private array $streams = [];
        private ?float $fenceWaitSince = null;

        public function __construct($socket, string $markerPrefix, int $parentPid)
        {
            $this->socket = $socket;
            $this->markerPrefix = $markerPrefix;
            $this->parentPid = $parentPid;
            $this->events = fopen('php://fd/' . FD_EVENTS, 'wb');
            foreach (['stdout' => FD_STDOUT_READER, 'stderr' => FD_STDERR_READER] as $kind => $fd) {
                $reader = fopen("php://fd/$fd", 'rb');
                stream_set_blocking($reader, false);
                stream_set_read_buffer($reader, 0);
                $this->streams[] = [
                    'kind' => $kind,
                    'reader' => $reader,
                    // The highest fence marker this stream has delivered.
                    'seen' => 0,
                    // Output not yet forwarded, as [fence, bytes]: the marker each came after.
                    'pieces' => [],
                    // The start of a marker cut off by the end of the last read.
                    'carry' => '',
                    'lastData' => microtime(true),
                ];
            }
            stream_set_blocking($this->socket, false);
            stream_set_read_buffer($this->socket, 0);
        }

        public function run(): never
        {
            while (true) {
                $read = [];
                if ($this->socketOpen) {
                    $read[] = $this->socket;
                }
                foreach ($this->streams as $stream) {
                    $read[] = $stream['reader'];
                }
                $write = $except = null;
                $ready = @stream_select($read, $write, $except, 0, 500000);
                if ($ready === false) {
                    // Interrupted by a signal.
                    continue;
                }
                foreach ($this->streams as $index => $stream) {
                    if (\in_array($stream['reader'], $read, true)) {
                        $this->readStream($index);
                    }
                }
                if ($this->socketOpen && \in_array($this->socket, $read, true)) {
                    $this->readSocket();
                }
                $this->pump();
                $this->checkFenceTimeout();
                if (!$this->socketOpen || posix_getppid() !== $this->parentPid) {
                    $this->finish();
                }
            }
        }

        /** Forwards whatever is left once the main process has gone, then exits. */
        private function finish(): never
        {
            foreach ($this->streams as $index => $stream) {
                $this->readStream($index);
                $this->streams[$index]['seen'] = PHP_INT_MAX;
            }
            // Anything still held back goes out now, in order; fences no longer matter.
            while ($this->pending) {
                [$kind, $body] = array_shift($this->pending);
                if ($kind !== 'fence') {
                    $this->flushStreams(PHP_INT_MAX);
                    $this->write($kind, $body);
                }
            }
            $this->flushStreams(PHP_INT_MAX);
            exit(0);
        }

        private function readSocket(): void
        {
            $chunk = @fread($this->socket, READ_CHUNK * 4);
            if ($chunk === false || $chunk === '') {
                if (feof($this->socket)) {
                    $this->socketOpen = false;
                }
                return;
            }
            $this->socketBuffer .= $chunk;
            while (true) {
                $newline = strpos($this->socketBuffer, "\n");
                if ($newline === false) {
                    return;
                }
                [$kind, $length] = explode(' ', substr($this->socketBuffer, 0, $newline), 2) + ['', '0'];
                $end = $newline + 1 + (int) $length;
                if (\strlen($this->socketBuffer) < $end) {
                    return;
                }
                $this->pending[] = [$kind, substr($this->socketBuffer, $newline + 1, (int) $length)];
                $this->socketBuffer = substr($this->socketBuffer, $end);
            }
        }

        private function readStream(int $index): void
        {
            $stream = &$this->streams[$index];
            while (true) {
                $chunk = @fread($stream['reader'], READ_CHUNK);
                if ($chunk === false || $chunk === '') {
                    return;
                }
                $stream['lastData'] = microtime(true);
                $this->receive($stream, $chunk);
                if (\strlen($chunk) < READ_CHUNK) {
                    return;
                }
            }
        }

        /** Splits what arrived on a stream into output and fence markers. */
        private function receive(array &$stream, string $chunk): void
        {
            $bytes = $stream['carry'] . $chunk;
            $stream['carry'] = '';
            $prefix = $this->markerPrefix;
            $prefixLength = \strlen($prefix);
            $start = 0; // Start of the output not yet taken.
            $from = 0; // Where to look for the next marker.
            while (($at = strpos($bytes, $prefix, $from)) !== false) {
                $end = strpos($bytes, "\0", $at + $prefixLength);
                if ($end === false && \strlen($bytes) - $at <= $prefixLength + 16) {
                    // A marker cut in two by the end of this read.
                    $this->take($stream, substr($bytes, $start, $at - $start));
                    $stream['carry'] = substr($bytes, $at);
                    return;
                }
                $digits = $end === false ? '' : substr($bytes, $at + $prefixLength, $end - $at - $prefixLength);
                if (!preg_match('/^\d{1,18}$/', $digits)) {
                    $from = $at + 1;
                    continue;
                }
                $this->take($stream, substr($bytes, $start, $at - $start));
                $stream['seen'] = max($stream['seen'], (int) $digits);
                $start = $end + 1;
                $from = $start;
            }
            // Hold back a tail that could be the beginning of a marker.
            $length = \strlen($bytes);
            for ($i = max($from, $length - $prefixLength + 1); $i < $length; $i++) {
                if ($bytes[$i] === "\0" && str_starts_with($prefix, substr($bytes, $i))) {
                    $this->take($stream, substr($bytes, $start, $i - $start));
                    $stream['carry'] = substr($bytes, $i);
                    return;
                }
            }
            $this->take($stream, substr($bytes, $start));
        }

        private function take(array &$stream, string $bytes): void
        {
            if ($bytes !== '') {
                $stream['pieces'][] = [$stream['seen'], $bytes];
            }
        }

        /** Forwards the output whose fence has been written, batching pieces ready together. */
        private function flushStreams(int $upTo): void
        {
            foreach ($this->streams as $index => $stream) {
                $pieces = &$this->streams[$index]['pieces'];
                while ($pieces && $pieces[0][0] <= $upTo) {
                    $batch = '';
                    while ($pieces && $pieces[0][0] <= $upTo && \strlen($batch) < OUTPUT_BATCH) {
                        $batch .= array_shift($pieces)[1];
                    }
                    $this->write($stream['kind'], $batch);
                }
                unset($pieces);
            }
        }

        /**
         * Writes the frames from the main process in order, with the output around them. Output
         * a stream delivered after marker N (a piece tagged N) was written after the frames that
         * follow fence N were sent, so it waits until they are out: until the next fence is at
         * the head of the queue, or the queue is empty.
         */
        private function pump(): void
        {
            while (true) {
                if (!$this->pending) {
                    $this->flushStreams($this->writtenFence);
                    $this->fenceWaitSince = null;
                    return;
                }
                [$kind, $body] = $this->pending[0];
                if ($kind === 'fence') {
                    $fence = (int) $body;
                    // All output before this fence's markers goes before the frames after it.
                    $this->flushStreams($fence - 1);
                    foreach ($this->streams as $stream) {
                        if ($stream['seen'] < $fence) {
                            $this->fenceWaitSince ??= microtime(true);
                            return;
                        }
                    }
                    $this->writtenFence = max($this->writtenFence, $fence);
                    $this->fenceWaitSince = null;
                } else {
                    $this->write($kind, $body);
                }
                array_shift($this->pending);
            }
        }

        /**
         * A marker can only go missing when something closed or replaced fd 1 or 2 behind the
         * driver's back. Rather than hold every later event back forever, a stream that stays
         * silent for a while with its marker outstanding is taken to have delivered it.
         */
        private function checkFenceTimeout(): void
        {
            if ($this->fenceWaitSince === null || microtime(true) - $this->fenceWaitSince < 5) {
                return;
            }
            $fence = (int) $this->pending[0][1];
            foreach ($this->streams as $index => $stream) {
                if ($stream['seen'] < $fence && microtime(true) - $stream['lastData'] >= 4) {
                    $this->diagnose("no fence marker on {$stream['kind']}; was the descriptor closed?");
                    $this->streams[$index]['seen'] = $fence;
                }
            }
            $this->fenceWaitSince = null;
            $this->pump();
        }

        private function write(string $kind, string $body): void
        {
            if (!write_fully($this->events, encode_frame($kind, $body))) {
                // The runner has gone away; nothing can be reported any more.
                exit(0);
            }
        }

        private function diagnose(string $message): void
        {
            $this->write('log', "forwarder: $message");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reading cells.

    /** One token of a cell: its id (or the character itself), its text and its byte offset. */
    final class Token
    {
        public function __construct(
            public readonly int|string $id,
            public readonly string $text,
            public readonly int $offset,
        ) {
        }

        public function is(int|string ...$ids): bool
        {
            return \in_array($this->id, $ids, true);
        }

        public function end(): int
        {
            return $this->offset + \strlen($this->text);
        }
    }

    /** What the driver makes of a cell before running it. */
    final class CellPlan
    {
        /** The code that runs. */
        public string $source = '';
        /** The code the lint child runs: declarations only, the rest compiled but skipped. */
        public ?string $lintSource = null;
        /** Whether the cell ends in an expression whose value is shown. */
        public bool $showsResult = false;
        /** @var array<string, string> Top-level functions the cell declares: lower-case name => name. */
        public array $functions = [];
        /** @var array<string, string> Top-level classes, interfaces, traits, enums: lower-case => name. */
        public array $classes = [];
        /** @var array<string, string> The cell's own top-level `use` imports: key => statement. */
        public array $imports = [];
    }

    /**
     * Turns a cell into the code the kernel runs.
     *
     * Notebook cells differ from PHP files in a few ways, all handled here with PHP's own
     * tokenizer: the opening tag is optional, the last statement may lack its semicolon, the
     * value of a final expression is shown, `use` imports carry over to later cells, `exit`
     * ends the cell rather than the kernel, and `__DIR__` means the kernel's directory.
     */
    final class Cell
    {
        // Tokens that carry no meaning between statements.
        private const TRIVIA = [T_WHITESPACE, T_COMMENT, T_DOC_COMMENT];
        private const OPENERS = ['(', '[', '{', T_CURLY_OPEN, T_DOLLAR_OPEN_CURLY_BRACES, T_ATTRIBUTE];
        private const CLOSERS = [')', ']', '}'];
        private const CLASS_LIKE = [T_CLASS, T_INTERFACE, T_TRAIT, T_ENUM];
        private const CLASS_MODIFIERS = [T_ABSTRACT, T_FINAL, T_READONLY];
        private const AMPERSAND = T_AMPERSAND_NOT_FOLLOWED_BY_VAR_OR_VARARG;
        private const ASSIGNMENTS = [
            '=', T_PLUS_EQUAL, T_MINUS_EQUAL, T_MUL_EQUAL, T_DIV_EQUAL, T_CONCAT_EQUAL,
            T_MOD_EQUAL, T_AND_EQUAL, T_OR_EQUAL, T_XOR_EQUAL, T_SL_EQUAL, T_SR_EQUAL,
            T_POW_EQUAL, T_COALESCE_EQUAL,
        ];
        // Statements that open a block in the alternative syntax (`if (...):` ... `endif;`).
        private const ALT_OPENERS = [T_IF, T_WHILE, T_FOR, T_FOREACH, T_SWITCH, T_DECLARE];
        private const ALT_CLOSERS = [T_ENDIF, T_ENDWHILE, T_ENDFOR, T_ENDFOREACH, T_ENDSWITCH, T_ENDDECLARE];
        // A final statement that starts with one of these is not taken for an expression.
        private const CONTROL = [
            T_IF, T_ELSEIF, T_ELSE, T_WHILE, T_DO, T_FOR, T_FOREACH, T_SWITCH, T_TRY, T_CATCH,
            T_FINALLY, T_DECLARE, T_FUNCTION, T_CLASS, T_INTERFACE, T_TRAIT, T_ENUM, T_ABSTRACT,
            T_FINAL, T_NAMESPACE, T_USE, T_GOTO,
        ];
        // Statements, and expressions that work as statements, that never show a value.
        private const STATEMENTS = [
            T_PRINT, T_ECHO, T_INCLUDE, T_INCLUDE_ONCE, T_REQUIRE, T_REQUIRE_ONCE, T_UNSET,
            T_GLOBAL, T_RETURN, T_THROW, T_INLINE_HTML,
        ];
        // Statements that are unfinished without a body after them.
        public const UNFINISHED = [
            T_IF, T_ELSEIF, T_ELSE, T_WHILE, T_DO, T_FOR, T_FOREACH, T_SWITCH, T_TRY, T_CATCH,
            T_FINALLY, T_DECLARE,
        ];
        // Functions whose return value says nothing worth showing.
        private const QUIET_FUNCTIONS = ['printf', 'vprintf', 'system'];

        /**
         * The cell's code with its optional opening tag blanked out, behind an opening tag of
         * our own: line numbers stay those the user sees.
         */
        public static function withOpenTag(string $code): string
        {
            if (preg_match('/\A(\s*)<\?php(?=\s|\z)/i', $code, $match)) {
                $code = $match[1] . '     ' . substr($code, \strlen($match[0]));
            }
            return '<?php ' . $code;
        }

        public static function parses(string $source): bool
        {
            try {
                token_get_all($source, TOKEN_PARSE);
                return true;
            } catch (\Throwable) {
                return false;
            }
        }

        /** @return list<Token> */
        public static function tokens(string $source): array
        {
            $tokens = [];
            $offset = 0;
            foreach (token_get_all($source) as $raw) {
                [$id, $text] = \is_array($raw) ? [$raw[0], $raw[1]] : [$raw, $raw];
                $tokens[] = new Token($id, $text, $offset);
                $offset += \strlen($text);
            }
            return $tokens;
        }

        /** @param list<Token> $tokens @return array<int, int> Each bracket's partner. */
        public static function pairs(array $tokens): array
        {
            $pairs = [];
            $stack = [];
            foreach ($tokens as $index => $token) {
                if (\in_array($token->id, self::OPENERS, true)) {
                    $stack[] = $index;
                } elseif (\in_array($token->id, self::CLOSERS, true) && $stack) {
                    $open = array_pop($stack);
                    $pairs[$open] = $index;
                    $pairs[$index] = $open;
                }
            }
            return $pairs;
        }

        /** @param list<Token> $tokens How many brackets are still open at the end. */
        public static function openBrackets(array $tokens): int
        {
            $depth = 0;
            foreach ($tokens as $token) {
                if (\in_array($token->id, self::OPENERS, true)) {
                    $depth++;
                } elseif (\in_array($token->id, self::CLOSERS, true) && $depth > 0) {
                    $depth--;
                }
            }
            return $depth;
        }

        /**
         * Parses a cell; throws ParseError when it is not valid PHP.
         *
         * @param array<string, string> $imports `use` imports of earlier cells: key => statement.
         */
        public static function plan(string $code, int $number, array $imports, string $directory): CellPlan
        {
            $plan = new CellPlan();
            $source = self::withOpenTag($code);
            try {
                token_get_all($source, TOKEN_PARSE);
                $tokens = self::tokens($source);
                $pairs = self::pairs($tokens);
                $analysis = self::analyse($tokens, $pairs);
            } catch (\ParseError $error) {
                // A last statement without its semicolon is accepted, as consoles do, unless
                // it is a control statement that still lacks its body.
                $fixed = $source . "\n;";
                if (!str_contains($error->getMessage(), 'end of file') || !self::parses($fixed)) {
                    throw $error;
                }
                $tokens = self::tokens($fixed);
                $pairs = self::pairs($tokens);
                $analysis = self::analyse($tokens, $pairs);
                $boundaries = array_fill_keys($analysis['boundaries'], true);
                $last = self::lastStatementStart($tokens, \count($tokens) - 1, $boundaries);
                if ($last === null || $tokens[$last]->is(...self::UNFINISHED)) {
                    throw $error;
                }
                $source = $fixed;
            }

            $plan->functions = $analysis['functions'];
            $plan->classes = $analysis['classes'];
            if (!$analysis['namespaced']) {
                $plan->imports = $analysis['imports'];
            }

            // Edits as [start, end, text, priority]; the priority orders insertions made at
            // one offset.
            $edits = [];
            if (!$analysis['namespaced'] && $imports) {
                $carried = '';
                foreach ($imports as $key => $statement) {
                    [$kind, $alias] = explode(':', $key, 2);
                    $clash = isset($analysis['imports'][$key])
                        || ($kind === 'class' && isset($plan->classes[$alias]))
                        || ($kind === 'function' && isset($plan->functions[$alias]));
                    if (!$clash) {
                        $carried .= $statement . ' ';
                    }
                }
                if ($carried !== '') {
                    $edits[] = [$analysis['preamble'], $analysis['preamble'], $carried, 0];
                }
            }
            foreach ($tokens as $index => $token) {
                if ($token->id === T_EXIT && self::isExitCall($tokens, $index)) {
                    $next = self::nextSignificant($tokens, $index);
                    $call = $next !== null && $tokens[$next]->id === '(' ? '' : '()';
                    $edits[] = [$token->offset, $token->end(), '\\Cellgate\\ExitRequest::raise' . $call, 3];
                } elseif (($input = self::inputRewrite($tokens, $index, $analysis['namespaced'])) !== null) {
                    $edits[] = [$token->offset, $token->end(), $input, 3];
                } elseif ($token->id === T_DIR) {
                    $edits[] = [$token->offset, $token->end(), var_export($directory, true), 3];
                } elseif ($token->id === T_FILE) {
                    $edits[] = [$token->offset, $token->end(), var_export("$directory/<cell $number>", true), 3];
                }
            }
            $result = self::resultEdits($source, $tokens, $pairs, $analysis);
            if ($result !== null) {
                $plan->showsResult = true;
                array_push($edits, ...$result);
            }
            $plan->source = self::apply($source, $edits);

            // The lint child compiles everything but runs only declarations: statements between
            // them are wrapped in `if (0) { ... }`.
            $lintEdits = $edits;
            foreach ($analysis['runs'] as [$start, $end]) {
                $lintEdits[] = [$start, $start, 'if (0) { ', 1];
                $lintEdits[] = [$end, $end, ' }', 4];
            }
            $lint = self::apply($source, $lintEdits);
            if (!self::parses($lint)) {
                // The wrapping did not fit the cell's shape (declarations inside an alternative
                // syntax block, say): compile the cell without running any of it instead.
                $stop = [$analysis['preamble'], $analysis['preamble'], ' return; ', 2];
                $lint = self::apply($source, array_merge($edits, [$stop]));
            }
            $plan->lintSource = self::parses($lint) ? $lint : null;
            return $plan;
        }

        /** Applies non-overlapping edits [start, end, text, priority] to `$source`. */
        private static function apply(string $source, array $edits): string
        {
            usort($edits, fn ($a, $b) => [$a[0], $a[3], $a[1]] <=> [$b[0], $b[3], $b[1]]);
            $out = '';
            $cursor = 0;
            foreach ($edits as [$start, $end, $text]) {
                if ($start < $cursor) {
                    continue;
                }
                $out .= substr($source, $cursor, $start - $cursor) . $text;
                $cursor = $end;
            }
            return $out . substr($source, $cursor);
        }

        /** @param list<Token> $tokens */
        private static function nextSignificant(array $tokens, int $index): ?int
        {
            for ($i = $index + 1, $n = \count($tokens); $i < $n; $i++) {
                if (!\in_array($tokens[$i]->id, self::TRIVIA, true)) {
                    return $i;
                }
            }
            return null;
        }

        /** @param list<Token> $tokens */
        private static function previousSignificant(array $tokens, int $index): ?int
        {
            for ($i = $index - 1; $i >= 0; $i--) {
                if (!\in_array($tokens[$i]->id, self::TRIVIA, true)) {
                    return $i;
                }
            }
            return null;
        }

        /**
         * What a call of `readline()` or a use of the `STDIN` constant becomes, or null for
         * any other token. The user's stdin is /dev/null, so both are pointed at the driver's
         * versions, which ask the frontend for a line. In a namespaced cell an unqualified name
         * may be the namespace's own, so only `\readline` and `\STDIN` are taken there.
         *
         * @param list<Token> $tokens
         */
        private static function inputRewrite(array $tokens, int $index, bool $namespaced): ?string
        {
            $token = $tokens[$index];
            if ($token->id === T_NAME_FULLY_QUALIFIED) {
                $name = substr($token->text, 1);
            } elseif ($token->id === T_STRING && !$namespaced) {
                $name = $token->text;
            } else {
                return null;
            }
            $previous = self::previousSignificant($tokens, $index);
            if ($previous !== null && $tokens[$previous]->is(
                T_FUNCTION, T_DOUBLE_COLON, T_OBJECT_OPERATOR, T_NULLSAFE_OBJECT_OPERATOR, T_CONST,
                T_NEW, T_USE, T_NAMESPACE, T_CLASS, T_INTERFACE, T_TRAIT, T_ENUM,
                self::AMPERSAND, T_AMPERSAND_FOLLOWED_BY_VAR_OR_VARARG,
            )) {
                return null;
            }
            $next = self::nextSignificant($tokens, $index);
            $called = $next !== null && $tokens[$next]->id === '(';
            if ($called && strcasecmp($name, 'readline') === 0) {
                return '\\Cellgate\\readline';
            }
            if (!$called && $name === 'STDIN') {
                return '\\Cellgate\\stdin()';
            }
            return null;
        }

        /** Whether an `exit`/`die` token is the language construct, not a method name. */
        private static function isExitCall(array $tokens, int $index): bool
        {
            $previous = self::previousSignificant($tokens, $index);
            if ($previous === null) {
                return true;
            }
            return !$tokens[$previous]->is(
                T_FUNCTION, T_DOUBLE_COLON, T_OBJECT_OPERATOR, T_NULLSAFE_OBJECT_OPERATOR, T_CONST,
                self::AMPERSAND, T_AMPERSAND_FOLLOWED_BY_VAR_OR_VARARG,
            );
        }

        /**
         * The index of the first token of the statement that ends at `$end` (its `;`), or null.
         *
         * A `}` ends the statement before unless `$boundaries` (token indices where top-level
         * statements end, from analyse()) says it closes an expression's braces.
         *
         * @param list<Token> $tokens
         * @param array<int, true>|null $boundaries
         */
        public static function lastStatementStart(array $tokens, int $end, ?array $boundaries = null): ?int
        {
            $depth = 0;
            $first = null;
            for ($i = $end - 1; $i >= 0; $i--) {
                $token = $tokens[$i];
                if (\in_array($token->id, self::CLOSERS, true)) {
                    if ($depth === 0 && $token->id === '}' && ($boundaries === null || isset($boundaries[$i]))) {
                        break;
                    }
                    $depth++;
                } elseif (\in_array($token->id, self::OPENERS, true)) {
                    if ($depth === 0) {
                        break;
                    }
                    $depth--;
                } elseif ($depth === 0 && $token->is(';', T_OPEN_TAG, T_CLOSE_TAG, T_INLINE_HTML)) {
                    break;
                }
                if (!\in_array($token->id, self::TRIVIA, true)) {
                    $first = $i;
                }
            }
            return $first;
        }

        /**
         * Walks the cell's top-level statements.
         *
         * Returns the functions and classes it declares, its `use` imports, where imports of
         * earlier cells may go (`preamble`: after any `declare`), the runs of statements between
         * declarations and the offsets where top-level statements end.
         *
         * @param list<Token> $tokens
         * @param array<int, int> $pairs
         */
        private static function analyse(array $tokens, array $pairs): array
        {
            $found = [
                'functions' => [], 'classes' => [], 'imports' => [], 'runs' => [],
                'namespaced' => false, 'preamble' => \strlen(reset($tokens)->text),
                'boundaries' => [],
            ];
            $namespace = '';
            $count = \count($tokens);
            $namespaceBraces = [];
            $altDepth = 0;
            $runStart = null;
            $runEnd = null;
            $preambleOpen = true;
            $closeRun = function () use (&$runStart, &$runEnd, &$found) {
                if ($runStart !== null) {
                    $found['runs'][] = [$runStart, $runEnd];
                    $runStart = $runEnd = null;
                }
            };

            $i = 0;
            while ($i < $count) {
                $token = $tokens[$i];
                if ($token->is(T_WHITESPACE, T_COMMENT, T_DOC_COMMENT, T_OPEN_TAG, T_CLOSE_TAG, T_INLINE_HTML)) {
                    $i++;
                    continue;
                }
                if ($token->id === '}' && isset($namespaceBraces[$i])) {
                    // The end of a braced namespace.
                    $closeRun();
                    $namespace = '';
                    $found['boundaries'][] = $i;
                    $i++;
                    continue;
                }
                if ($token->id === T_HALT_COMPILER) {
                    break;
                }

                // A statement starts at $i.
                $declaration = $altDepth === 0 ? self::declarationAt($tokens, $pairs, $i) : null;
                if ($declaration !== null) {
                    [$kind, $end, $name] = $declaration;
                    $closeRun();
                    if ($kind === 'namespace') {
                        $found['namespaced'] = true;
                        $namespace = $name;
                        if ($tokens[$end]->id === '{') {
                            $namespaceBraces[$pairs[$end]] = true;
                        }
                    } elseif ($kind === 'function') {
                        $qualified = ltrim("$namespace\\$name", '\\');
                        $found['functions'][strtolower($qualified)] = $qualified;
                    } elseif ($kind === 'class') {
                        $qualified = ltrim("$namespace\\$name", '\\');
                        $found['classes'][strtolower($qualified)] = $qualified;
                    } elseif ($kind === 'use' && $namespace === '') {
                        foreach (self::importClauses($tokens, $i, $end) as $key => $statement) {
                            $found['imports'][$key] = $statement;
                        }
                    }
                    if ($kind !== 'declare') {
                        $preambleOpen = false;
                    }
                    if ($preambleOpen || $kind === 'namespace') {
                        $found['preamble'] = $tokens[$end]->end();
                    }
                    $found['boundaries'][] = $end;
                    $i = $end + 1;
                    continue;
                }

                // An ordinary statement: find where it ends.
                $preambleOpen = false;
                $runStart ??= $token->offset;
                if ($token->is(...self::ALT_OPENERS)) {
                    $altDepth += self::opensAltBlock($tokens, $pairs, $i) ? 1 : 0;
                }
                $block = $token->is(T_IF, T_WHILE, T_FOR, T_FOREACH, T_SWITCH, T_TRY, T_DECLARE, '{');
                $j = $i;
                while ($j < $count) {
                    $current = $tokens[$j];
                    if (isset($pairs[$j]) && \in_array($current->id, self::OPENERS, true)) {
                        $j = $pairs[$j];
                        if ($block && $current->id === '{') {
                            // A control statement ends with its block, unless `else`, `catch`
                            // or `finally` carry it on. (Braces in an expression statement,
                            // such as a closure's, do not end it.)
                            $next = self::nextSignificant($tokens, $j);
                            if ($next === null || !$tokens[$next]->is(T_ELSE, T_ELSEIF, T_CATCH, T_FINALLY)) {
                                break;
                            }
                        }
                        $j++;
                        continue;
                    }
                    if ($current->is(';', T_CLOSE_TAG)) {
                        break;
                    }
                    if ($current->id === ':' && self::isAltColon($tokens, $pairs, $i, $j)) {
                        break;
                    }
                    if ($current->is(...self::ALT_CLOSERS)) {
                        $altDepth = max(0, $altDepth - 1);
                    }
                    $j++;
                }
                $j = min($j, $count - 1);
                $runEnd = $tokens[$j]->end();
                $found['boundaries'][] = $j;
                $i = $j + 1;
            }
            $closeRun();
            return $found;
        }

        /** Whether the control statement at `$index` uses the alternative syntax. */
        private static function opensAltBlock(array $tokens, array $pairs, int $index): bool
        {
            $open = self::nextSignificant($tokens, $index);
            if ($open === null || $tokens[$open]->id !== '(' || !isset($pairs[$open])) {
                return false;
            }
            $after = self::nextSignificant($tokens, $pairs[$open]);
            return $after !== null && $tokens[$after]->id === ':';
        }

        /** Whether the `:` at `$colon` opens an alternative-syntax block (`else:`, `case 1:`). */
        private static function isAltColon(array $tokens, array $pairs, int $start, int $colon): bool
        {
            if ($tokens[$start]->is(T_ELSE, T_ELSEIF, T_CASE, T_DEFAULT)) {
                return true;
            }
            return $tokens[$start]->is(...self::ALT_OPENERS) && self::opensAltBlock($tokens, $pairs, $start)
                && self::nextSignificant($tokens, $pairs[self::nextSignificant($tokens, $start)]) === $colon;
        }

        /**
         * The declaration starting at `$index`, as [kind, index of its last token, name], or null
         * when the statement there is not one.
         */
        private static function declarationAt(array $tokens, array $pairs, int $index): ?array
        {
            $token = $tokens[$index];
            $i = $index;
            // Attributes and modifiers before a declaration.
            while ($tokens[$i]->id === T_ATTRIBUTE && isset($pairs[$i])) {
                $i = self::nextSignificant($tokens, $pairs[$i]);
                if ($i === null) {
                    return null;
                }
            }
            while ($tokens[$i]->is(...self::CLASS_MODIFIERS)) {
                $i = self::nextSignificant($tokens, $i);
                if ($i === null) {
                    return null;
                }
            }
            $token = $tokens[$i];
            if ($token->id === T_FUNCTION) {
                $name = self::nextSignificant($tokens, $i);
                if ($name !== null && $tokens[$name]->is(self::AMPERSAND, T_AMPERSAND_FOLLOWED_BY_VAR_OR_VARARG)) {
                    $name = self::nextSignificant($tokens, $name);
                }
                if ($name === null || $tokens[$name]->id !== T_STRING) {
                    return null;
                }
                $body = self::findBody($tokens, $pairs, $name);
                return $body === null ? null : ['function', $body, $tokens[$name]->text];
            }
            if ($token->is(...self::CLASS_LIKE)) {
                $name = self::nextSignificant($tokens, $i);
                if ($name === null || $tokens[$name]->id !== T_STRING) {
                    return null;
                }
                $body = self::findBody($tokens, $pairs, $name);
                return $body === null ? null : ['class', $body, $tokens[$name]->text];
            }
            if ($i !== $index) {
                return null;
            }
            if ($token->is(T_USE, T_CONST)) {
                $end = self::statementEnd($tokens, $pairs, $i);
                return $end === null ? null : [$token->id === T_USE ? 'use' : 'const', $end, ''];
            }
            if ($token->id === T_NAMESPACE) {
                $next = self::nextSignificant($tokens, $i);
                if ($next === null) {
                    return null;
                }
                if ($tokens[$next]->id === '{') {
                    return ['namespace', $next, ''];
                }
                if (!$tokens[$next]->is(T_STRING, T_NAME_QUALIFIED)) {
                    return null;
                }
                $after = self::nextSignificant($tokens, $next);
                if ($after !== null && $tokens[$after]->is(';', '{')) {
                    return ['namespace', $after, $tokens[$next]->text];
                }
                return null;
            }
            if ($token->id === T_DECLARE) {
                $open = self::nextSignificant($tokens, $i);
                if ($open !== null && isset($pairs[$open])) {
                    $after = self::nextSignificant($tokens, $pairs[$open]);
                    if ($after !== null && $tokens[$after]->id === ';') {
                        return ['declare', $after, ''];
                    }
                }
            }
            return null;
        }

        /** The closing brace of the body of the declaration named at `$name`. */
        private static function findBody(array $tokens, array $pairs, int $name): ?int
        {
            for ($i = $name + 1, $n = \count($tokens); $i < $n; $i++) {
                if ($tokens[$i]->id === '{') {
                    return $pairs[$i] ?? null;
                }
                if ($tokens[$i]->id === '(' && isset($pairs[$i])) {
                    $i = $pairs[$i];
                } elseif ($tokens[$i]->id === ';') {
                    return null;
                }
            }
            return null;
        }

        /** The `;` that ends the simple statement starting at `$index`. */
        private static function statementEnd(array $tokens, array $pairs, int $index): ?int
        {
            for ($i = $index, $n = \count($tokens); $i < $n; $i++) {
                if (isset($pairs[$i]) && \in_array($tokens[$i]->id, self::OPENERS, true)) {
                    $i = $pairs[$i];
                } elseif ($tokens[$i]->is(';', T_CLOSE_TAG)) {
                    return $i;
                }
            }
            return null;
        }

        /**
         * The imports of a top-level `use` statement, one statement per imported name, keyed by
         * what they import and the alias (`class:bar`, `function:f`, `const:X`).
         *
         * @return array<string, string>
         */
        private static function importClauses(array $tokens, int $start, int $end): array
        {
            $clauses = [];
            $kind = 'class';
            $prefix = '';
            $name = '';
            $alias = null;
            $itemKind = null;
            $expectAlias = false;
            $finish = function () use (&$clauses, &$kind, &$prefix, &$name, &$alias, &$itemKind) {
                if ($name === '') {
                    return;
                }
                $full = ltrim($prefix . $name, '\\');
                $used = $itemKind ?? $kind;
                $alias ??= substr(strrchr('\\' . $full, '\\'), 1);
                $key = $used . ':' . ($used === 'const' ? $alias : strtolower($alias));
                $keyword = $used === 'class' ? 'use' : "use $used";
                $clauses[$key] = "$keyword $full as $alias;";
                $name = '';
                $alias = null;
                $itemKind = null;
            };
            for ($i = $start + 1; $i < $end; $i++) {
                $token = $tokens[$i];
                if ($token->is(...self::TRIVIA)) {
                    continue;
                }
                if ($token->is(T_FUNCTION, T_CONST)) {
                    $which = $token->id === T_FUNCTION ? 'function' : 'const';
                    if ($prefix === '' && $name === '' && !$clauses) {
                        $kind = $which;
                    } else {
                        $itemKind = $which;
                    }
                } elseif ($token->id === T_AS) {
                    $expectAlias = true;
                } elseif ($token->is(T_STRING, T_NAME_QUALIFIED, T_NAME_FULLY_QUALIFIED, T_NS_SEPARATOR)) {
                    if ($expectAlias) {
                        $alias = $token->text;
                        $expectAlias = false;
                    } else {
                        $name .= $token->text;
                    }
                } elseif ($token->id === '{') {
                    $prefix = rtrim($name, '\\') . '\\';
                    $name = '';
                } elseif ($token->is(',', '}')) {
                    $finish();
                }
            }
            $finish();
            return $clauses;
        }

        /**
         * The edits that make the cell return the value of its final expression statement, or
         * null when it does not end in one (or in one whose value is not worth showing).
         */
        private static function resultEdits(string $source, array $tokens, array $pairs, array $analysis): ?array
        {
            // The cell must end with `;` and nothing after it but whitespace and comments.
            $end = null;
            for ($i = \count($tokens) - 1; $i >= 0; $i--) {
                if (!$tokens[$i]->is(...self::TRIVIA)) {
                    $end = $i;
                    break;
                }
            }
            if ($end === null || $tokens[$end]->id !== ';' || !\in_array($end, $analysis['boundaries'], true)) {
                return null;
            }
            $start = self::lastStatementStart($tokens, $end, array_fill_keys($analysis['boundaries'], true));
            if ($start === null) {
                return null;
            }
            // The statement must begin at a top-level boundary, not inside a block.
            $previous = self::previousSignificant($tokens, $start);
            if ($previous !== null && !\in_array($previous, $analysis['boundaries'], true)
                && !$tokens[$previous]->is(T_OPEN_TAG)) {
                return null;
            }
            $first = $tokens[$start];
            if ($first->is(...self::CONTROL) || $first->is(...self::STATEMENTS)) {
                return null;
            }
            // Assignments are statements to a notebook user, even though PHP calls them
            // expressions; their value is not shown.
            for ($i = $start; $i < $end; $i++) {
                if (isset($pairs[$i]) && \in_array($tokens[$i]->id, self::OPENERS, true)) {
                    $i = $pairs[$i];
                } elseif ($tokens[$i]->is(...self::ASSIGNMENTS)) {
                    return null;
                }
            }
            if (self::isQuietCall($tokens, $pairs, $start, $end)) {
                return null;
            }
            $close = $tokens[$end]->offset;
            $edits = [[$first->offset, $first->offset, 'return (', 2], [$close, $close, ')', 2]];
            return self::parses(self::apply($source, $edits)) ? $edits : null;
        }

        /** Whether the statement is a call to printf() and the like, or print_r() printing. */
        private static function isQuietCall(array $tokens, array $pairs, int $start, int $end): bool
        {
            $name = strtolower(ltrim($tokens[$start]->text, '\\'));
            $open = self::nextSignificant($tokens, $start);
            if (!$tokens[$start]->is(T_STRING, T_NAME_FULLY_QUALIFIED) || $open === null
                || $tokens[$open]->id !== '(' || !isset($pairs[$open])
                || self::nextSignificant($tokens, $pairs[$open]) !== $end) {
                return false;
            }
            if (\in_array($name, self::QUIET_FUNCTIONS, true)) {
                return true;
            }
            if ($name === 'print_r' || $name === 'var_export') {
                // With one argument they print; with `true` as a second they return a string.
                for ($i = $open + 1; $i < $pairs[$open]; $i++) {
                    if (isset($pairs[$i]) && \in_array($tokens[$i]->id, self::OPENERS, true)) {
                        $i = $pairs[$i];
                    } elseif ($tokens[$i]->id === ',') {
                        return false;
                    }
                }
                return true;
            }
            return false;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Showing values.

    /**
     * A readable text form of any PHP value, in the spirit of PsySH: `[1, 2]`, `"text"`,
     * `Foo {#12 +public: 1, #protected: 2, -private: 3}`. Short values stay on one line, long
     * ones spread over several; deep, long and recursive structures are cut.
     */
    final class Render
    {
        private const WIDTH = 80;
        private const MAX_DEPTH = 6;
        private const MAX_ITEMS = 200;

        /** @var array<int, true> Objects being shown, to spot recursion. */
        private array $open = [];

        public static function value(mixed $value): string
        {
            return (new self())->render($value, 0, 0);
        }

        private function render(mixed $value, int $indent, int $depth): string
        {
            $line = $this->line($value, $depth, self::WIDTH - $indent);
            if ($line !== null) {
                return $line;
            }
            $pad = str_repeat(' ', $indent + 2);
            $close = str_repeat(' ', $indent);
            if (\is_array($value)) {
                $list = array_is_list($value);
                $out = "[\n";
                $shown = 0;
                foreach ($value as $key => $item) {
                    if ($shown++ >= self::MAX_ITEMS) {
                        $out .= $pad . '…(' . (\count($value) - self::MAX_ITEMS) . " more)\n";
                        break;
                    }
                    $out .= $pad . ($list ? '' : $this->scalar($key) . ' => ')
                        . $this->render($item, $indent + 2, $depth + 1) . ",\n";
                }
                return $out . $close . ']';
            }
            // An object.
            $id = spl_object_id($value);
            $this->open[$id] = true;
            $out = $this->objectHead($value) . "\n";
            $shown = 0;
            $properties = $this->properties($value);
            foreach ($properties as $label => $item) {
                if ($shown++ >= self::MAX_ITEMS) {
                    $out .= $pad . '…(' . (\count($properties) - self::MAX_ITEMS) . " more)\n";
                    break;
                }
                $out .= "$pad$label: " . $this->render($item, $indent + 2, $depth + 1) . ",\n";
            }
            unset($this->open[$id]);
            return $out . $close . '}';
        }

        /** The value on one line, or null when that would be wider than `$room`. */
        private function line(mixed $value, int $depth, int $room): ?string
        {
            if (!\is_array($value) && !\is_object($value)) {
                return $this->scalar($value);
            }
            if ($depth >= self::MAX_DEPTH) {
                return \is_array($value) ? ($value ? '[…]' : '[]') : $this->objectHead($value, true) . '…}';
            }
            if (\is_object($value)) {
                if ($value instanceof \UnitEnum) {
                    return '\\' . \get_class($value) . '::' . $value->name;
                }
                if (isset($this->open[spl_object_id($value)])) {
                    return $this->objectHead($value, true) . '…}';
                }
                $properties = $this->properties($value);
                if (!$properties) {
                    return rtrim($this->objectHead($value, true)) . '}';
                }
                $this->open[spl_object_id($value)] = true;
                $parts = [];
                $size = 0;
                foreach ($properties as $label => $item) {
                    $text = $this->line($item, $depth + 1, $room - $size);
                    if ($text === null) {
                        unset($this->open[spl_object_id($value)]);
                        return null;
                    }
                    $parts[] = "$label: $text";
                    $size += \strlen($text) + \strlen($label) + 4;
                    if ($size > $room || \count($parts) > self::MAX_ITEMS) {
                        unset($this->open[spl_object_id($value)]);
                        return null;
                    }
                }
                unset($this->open[spl_object_id($value)]);
                $text = $this->objectHead($value, true) . implode(', ', $parts) . '}';
                return \strlen($text) <= $room ? $text : null;
            }
            if (!$value) {
                return '[]';
            }
            $list = array_is_list($value);
            $parts = [];
            $size = 2;
            foreach ($value as $key => $item) {
                $text = $this->line($item, $depth + 1, $room - $size);
                if ($text === null) {
                    return null;
                }
                $part = $list ? $text : $this->scalar($key) . " => $text";
                $parts[] = $part;
                $size += \strlen($part) + 2;
                if ($size > $room || \count($parts) > self::MAX_ITEMS) {
                    return null;
                }
            }
            return '[' . implode(', ', $parts) . ']';
        }

        private function objectHead(object $value, bool $inline = false): string
        {
            $class = \get_class($value);
            $id = spl_object_id($value);
            if ($value instanceof \Closure) {
                try {
                    $parameters = array_map(
                        fn (\ReflectionParameter $p) => Introspection::parameter($p),
                        (new \ReflectionFunction($value))->getParameters(),
                    );
                    $class = 'Closure(' . implode(', ', $parameters) . ')';
                } catch (\Throwable) {
                }
            } elseif (str_contains($class, '@anonymous')) {
                $class = 'class@anonymous';
            }
            return "$class {#$id" . ($inline ? ' ' : '');
        }

        /** @return array<string, mixed> The object's properties, labelled +public #protected -private. */
        private function properties(object $value): array
        {
            if ($value instanceof \Closure || $value instanceof \Generator) {
                return [];
            }
            $properties = [];
            // The array cast shows every initialized property without calling user code.
            foreach ((array) $value as $key => $item) {
                $key = (string) $key;
                if ($key !== '' && $key[0] === "\0") {
                    [, $owner, $name] = explode("\0", $key, 3) + ['', '', ''];
                    $label = ($owner === '*' ? '#' : '-') . $name;
                } else {
                    $label = '+' . $key;
                }
                $properties[$label] = $item;
            }
            return $properties;
        }

        private function scalar(mixed $value): string
        {
            return match (true) {
                $value === null => 'null',
                \is_bool($value) => $value ? 'true' : 'false',
                \is_int($value) => (string) $value,
                \is_float($value) => var_export($value, true),
                \is_string($value) => self::quote($value),
                \is_resource($value) => 'resource(' . get_resource_type($value) . ') #' . get_resource_id($value),
                // A closed resource.
                default => \gettype($value) === 'resource (closed)'
                    ? 'resource(closed) #' . get_resource_id($value) : \gettype($value),
            };
        }

        /** A string in double quotes, with control characters escaped (all of it, if not UTF-8). */
        public static function quote(string $text): string
        {
            $pattern = preg_match('//u', $text) ? '/[\x00-\x1f\x7f"\\\\]/' : '/[\x00-\x1f\x7f-\xff"\\\\]/';
            $escaped = preg_replace_callback(
                $pattern,
                fn (array $match): string => match ($match[0]) {
                    "\n" => '\\n',
                    "\t" => '\\t',
                    "\r" => '\\r',
                    "\e" => '\\e',
                    '"' => '\\"',
                    '\\' => '\\\\',
                    default => sprintf('\\x%02x', \ord($match[0])),
                },
                $text,
            );
            return '"' . $escaped . '"';
        }
    }

    // -----------------------------------------------------------------------------------------
    // Completion, inspection and completeness.

    final class Introspection
    {
        private const IDENTIFIER = '[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*';
        private const KEYWORDS = [
            'abstract', 'and', 'array', 'as', 'break', 'callable', 'case', 'catch', 'class',
            'clone', 'const', 'continue', 'declare', 'default', 'do', 'echo', 'else', 'elseif',
            'empty', 'enddeclare', 'endfor', 'endforeach', 'endif', 'endswitch', 'endwhile', 'enum',
            'exit', 'die', 'extends', 'false', 'final', 'finally', 'fn', 'for', 'foreach',
            'function', 'global', 'goto', 'if', 'implements', 'include', 'include_once',
            'instanceof', 'insteadof', 'interface', 'isset', 'list', 'match', 'namespace', 'new',
            'null', 'or', 'print', 'private', 'protected', 'public', 'readonly', 'require',
            'require_once', 'return', 'static', 'switch', 'throw', 'trait', 'true', 'try',
            'unset', 'use', 'var', 'while', 'xor', 'yield',
        ];

        /** `$code`'s first `$count` code points, as bytes. */
        public static function prefix(string $code, int $count): string
        {
            if ($count <= 0) {
                return '';
            }
            if (preg_match('//u', $code)) {
                $chunk = @iconv_substr($code, 0, $count, 'UTF-8');
                if (\is_string($chunk)) {
                    return $chunk;
                }
            }
            return substr($code, 0, $count);
        }

        /** How many code points `$text` holds. */
        public static function length(string $text): int
        {
            $count = preg_match_all('/./us', $text);
            return $count === false ? \strlen($text) : $count;
        }

        public static function complete(string $code, int $cursor): array
        {
            $before = self::prefix($code, $cursor);
            $cursor = self::length($before);
            $id = self::IDENTIFIER;
            $matches = [];
            $token = '';
            if (preg_match("/\\$($id)(?:->|\\?->)(\\w*)\\z/", $before, $m)) {
                // $object->member
                $token = $m[2];
                $object = $GLOBALS[$m[1]] ?? null;
                if (\is_object($object)) {
                    $matches = self::memberNames($object, $token);
                }
            } elseif (preg_match("/(\\\\?(?:$id\\\\)*$id)::(\\$?\\w*)\\z/", $before, $m)) {
                // Class::member
                $token = $m[2];
                $class = ltrim($m[1], '\\');
                if (class_exists($class, false) || interface_exists($class, false) || enum_exists($class, false)) {
                    $matches = self::staticNames($class, $token);
                }
            } elseif (preg_match('/\$(\w*)\z/', $before, $m)) {
                $token = '$' . $m[1];
                $names = array_merge(array_keys($GLOBALS), SUPERGLOBALS);
                foreach ($names as $name) {
                    $name = (string) $name;
                    if (str_starts_with($name, $m[1]) && !str_starts_with($name, '__cellgate_')) {
                        $matches[] = '$' . $name;
                    }
                }
            } elseif (preg_match("/(?<![\\w\\\\$>:])(\\\\?(?:$id\\\\)*\\w*)\\z/", $before, $m)
                && $m[1] !== '') {
                $token = $m[1];
                $matches = self::globalNames(ltrim($token, '\\'), str_starts_with($token, '\\'));
            }
            $matches = array_values(array_unique($matches));
            sort($matches, SORT_STRING | SORT_FLAG_CASE);
            return [
                'matches' => $matches,
                'cursor_start' => $cursor - self::length($token),
                'cursor_end' => $cursor,
                'metadata' => new \stdClass(),
            ];
        }

        private static function memberNames(object $object, string $prefix): array
        {
            $names = [];
            foreach (get_class_methods($object) as $method) {
                if (stripos($method, $prefix) === 0) {
                    $names[] = $method;
                }
            }
            foreach (array_keys(get_object_vars($object)) as $property) {
                if (str_starts_with((string) $property, $prefix)) {
                    $names[] = (string) $property;
                }
            }
            return $names;
        }

        private static function staticNames(string $class, string $prefix): array
        {
            $names = [];
            try {
                $reflection = new \ReflectionClass($class);
            } catch (\Throwable) {
                return [];
            }
            if (str_starts_with($prefix, '$')) {
                foreach ($reflection->getProperties(\ReflectionProperty::IS_STATIC) as $property) {
                    if ($property->isPublic() && str_starts_with('$' . $property->getName(), $prefix)) {
                        $names[] = '$' . $property->getName();
                    }
                }
                return $names;
            }
            foreach ($reflection->getMethods(\ReflectionMethod::IS_STATIC) as $method) {
                if ($method->isPublic() && stripos($method->getName(), $prefix) === 0) {
                    $names[] = $method->getName();
                }
            }
            foreach (array_keys($reflection->getConstants()) as $constant) {
                if (str_starts_with($constant, $prefix)) {
                    $names[] = $constant;
                }
            }
            if (stripos('class', $prefix) === 0) {
                $names[] = 'class';
            }
            return $names;
        }

        private static function globalNames(string $prefix, bool $qualified): array
        {
            $names = [];
            $lower = strtolower($prefix);
            $functions = get_defined_functions();
            foreach (array_merge($functions['internal'], $functions['user']) as $function) {
                if (str_starts_with($function, $lower) && !str_starts_with($function, 'cellgate\\')) {
                    $names[] = $function;
                }
            }
            foreach (array_merge(get_declared_classes(), get_declared_interfaces(), get_declared_traits()) as $class) {
                if (stripos($class, $prefix) === 0 && !str_starts_with($class, 'Cellgate\\')) {
                    $names[] = $class;
                }
            }
            foreach (array_keys(get_defined_constants()) as $constant) {
                if (str_starts_with($constant, $prefix) && !str_starts_with($constant, 'Cellgate\\')) {
                    $names[] = $constant;
                }
            }
            if (!$qualified && !str_contains($prefix, '\\')) {
                foreach (self::KEYWORDS as $keyword) {
                    if (str_starts_with($keyword, $lower)) {
                        $names[] = $keyword;
                    }
                }
            }
            if ($qualified) {
                $names = array_map(fn ($name) => '\\' . $name, $names);
            }
            return $names;
        }

        public static function isComplete(string $code): array
        {
            if (trim($code) === '' || preg_match('/\A\s*<\?php\s*\z/i', $code)) {
                return ['status' => 'complete'];
            }
            $source = Cell::withOpenTag($code);
            try {
                token_get_all($source, TOKEN_PARSE);
                return ['status' => 'complete'];
            } catch (\Throwable $error) {
                $message = $error->getMessage();
            }
            $unfinished = str_contains($message, 'end of file') || str_starts_with($message, 'Unclosed ')
                || str_starts_with($message, 'Unterminated comment');
            if (!$unfinished) {
                return ['status' => 'invalid'];
            }
            // A last statement without its semicolon runs as it is (see Cell::plan).
            $fixed = $source . "\n;";
            if (Cell::parses($fixed)) {
                $tokens = Cell::tokens($fixed);
                $start = Cell::lastStatementStart($tokens, \count($tokens) - 1);
                if ($start !== null && !$tokens[$start]->is(...Cell::UNFINISHED)) {
                    return ['status' => 'complete'];
                }
            }
            try {
                $depth = Cell::openBrackets(Cell::tokens($source));
            } catch (\Throwable) {
                $depth = 0;
            }
            return ['status' => 'incomplete', 'indent' => str_repeat('    ', $depth)];
        }

        public static function inspect(string $code, int $cursor, int $detail): array
        {
            $before = self::prefix($code, $cursor);
            $after = substr($code, \strlen($before));
            $id = self::IDENTIFIER;
            $candidates = [];
            if (preg_match('/[\w$\\\\\x80-\xff]*(?:(?:->|::)[\w$\x80-\xff]*)*\z/', $before, $left)
                && preg_match('/\A[\w\x80-\xff]*/', $after, $right)) {
                $candidates[] = $left[0] . $right[0];
            }
            // The function whose call the cursor is in.
            $depth = 0;
            for ($i = \strlen($before) - 1; $i >= 0; $i--) {
                $char = $before[$i];
                if ($char === ')') {
                    $depth++;
                } elseif ($char === '(') {
                    if ($depth-- === 0) {
                        $pattern = '/[\w$\\\\\x80-\xff]+(?:(?:->|::)[\w\x80-\xff]+)*\s*\z/';
                        if (preg_match($pattern, substr($before, 0, $i), $callee)) {
                            $candidates[] = trim($callee[0]);
                        }
                        break;
                    }
                }
            }
            foreach ($candidates as $name) {
                $text = self::describe($name, $detail);
                if ($text !== null) {
                    return ['found' => true, 'data' => ['text/plain' => $text], 'metadata' => new \stdClass()];
                }
            }
            return ['found' => false, 'data' => new \stdClass(), 'metadata' => new \stdClass()];
        }

        private static function describe(string $name, int $detail): ?string
        {
            $id = self::IDENTIFIER;
            try {
                if (preg_match("/\\A\\$($id)\\z/", $name, $m)) {
                    if (!\array_key_exists($m[1], $GLOBALS) || str_starts_with($m[1], '__cellgate_')) {
                        return null;
                    }
                    $value = $GLOBALS[$m[1]];
                    return "\$$m[1]: " . self::typeOf($value) . "\n" . Render::value($value);
                }
                if (preg_match("/\\A\\$($id)(?:->|\\?->)($id)\\z/", $name, $m)) {
                    $object = $GLOBALS[$m[1]] ?? null;
                    if (\is_object($object) && method_exists($object, $m[2])) {
                        return self::describeFunction(new \ReflectionMethod($object, $m[2]), $detail);
                    }
                    return null;
                }
                if (preg_match("/\\A\\\\?((?:$id\\\\)*$id)::($id)\\z/", $name, $m)) {
                    if (!class_exists($m[1], false) && !interface_exists($m[1], false)) {
                        return null;
                    }
                    $class = new \ReflectionClass($m[1]);
                    if ($class->hasMethod($m[2])) {
                        return self::describeFunction($class->getMethod($m[2]), $detail);
                    }
                    if ($class->hasConstant($m[2])) {
                        return "const {$class->getName()}::{$m[2]} = " . Render::value($class->getConstant($m[2]));
                    }
                    return null;
                }
                if (preg_match("/\\A\\\\?((?:$id\\\\)*$id)\\z/", $name, $m)) {
                    if (function_exists($m[1])) {
                        return self::describeFunction(new \ReflectionFunction($m[1]), $detail);
                    }
                    if (class_exists($m[1], false) || interface_exists($m[1], false) || trait_exists($m[1], false)) {
                        return self::describeClass(new \ReflectionClass($m[1]), $detail);
                    }
                    if (\defined($m[1])) {
                        return "const {$m[1]} = " . Render::value(\constant($m[1]));
                    }
                }
            } catch (\Throwable) {
            }
            return null;
        }

        private static function typeOf(mixed $value): string
        {
            return match (true) {
                \is_array($value) => 'array(' . \count($value) . ')',
                \is_object($value) => \get_class($value),
                \is_string($value) => 'string(' . \strlen($value) . ')',
                default => get_debug_type($value),
            };
        }

        public static function parameter(\ReflectionParameter $parameter): string
        {
            $text = '';
            if ($parameter->hasType()) {
                $text .= $parameter->getType() . ' ';
            }
            if ($parameter->isPassedByReference()) {
                $text .= '&';
            }
            if ($parameter->isVariadic()) {
                $text .= '...';
            }
            $text .= '$' . $parameter->getName();
            if ($parameter->isDefaultValueAvailable()) {
                try {
                    $text .= ' = ' . ($parameter->isDefaultValueConstant()
                        ? $parameter->getDefaultValueConstantName()
                        : Render::value($parameter->getDefaultValue()));
                } catch (\Throwable) {
                    $text .= ' = …';
                }
            } elseif ($parameter->isOptional() && !$parameter->isVariadic()) {
                $text .= ' = …';
            }
            return $text;
        }

        public static function signature(\ReflectionFunctionAbstract $function): string
        {
            $parameters = array_map([self::class, 'parameter'], $function->getParameters());
            $name = $function instanceof \ReflectionMethod
                ? $function->getDeclaringClass()->getName() . '::' . $function->getName()
                : $function->getName();
            $text = 'function ' . ($function->returnsReference() ? '&' : '') . $name
                . '(' . implode(', ', $parameters) . ')';
            if ($function->hasReturnType()) {
                $text .= ': ' . $function->getReturnType();
            }
            if ($function instanceof \ReflectionMethod) {
                $text = implode(' ', \Reflection::getModifierNames($function->getModifiers())) . ' ' . $text;
            }
            return $text;
        }

        private static function where(\ReflectionFunctionAbstract|\ReflectionClass $item): string
        {
            if ($item->isInternal()) {
                $extension = $item->getExtensionName();
                return 'Built in' . ($extension ? " (extension $extension)" : '');
            }
            return 'Defined in ' . Kernel::location((string) $item->getFileName()) . ' on line ' . $item->getStartLine();
        }

        private static function describeFunction(\ReflectionFunctionAbstract $function, int $detail): string
        {
            $lines = [self::signature($function), self::where($function)];
            $doc = $function->getDocComment();
            if ($doc) {
                $lines[] = self::cleanDoc($doc);
            }
            return implode("\n", $lines);
        }

        private static function describeClass(\ReflectionClass $class, int $detail): string
        {
            $kind = match (true) {
                $class->isInterface() => 'interface',
                $class->isTrait() => 'trait',
                $class->isEnum() => 'enum',
                default => 'class',
            };
            $head = implode(' ', \Reflection::getModifierNames($class->getModifiers()));
            $head = ltrim("$head $kind " . $class->getName());
            if ($class->getParentClass()) {
                $head .= ' extends ' . $class->getParentClass()->getName();
            }
            if ($class->getInterfaceNames()) {
                $head .= ($class->isInterface() ? ' extends ' : ' implements ') . implode(', ', $class->getInterfaceNames());
            }
            $lines = [$head, self::where($class)];
            $doc = $class->getDocComment();
            if ($doc) {
                $lines[] = self::cleanDoc($doc);
            }
            $constructor = $class->getConstructor();
            if ($constructor) {
                $lines[] = 'Constructor: ' . self::signature($constructor);
            }
            $methods = array_filter($class->getMethods(), fn ($m) => $m->isPublic());
            if ($methods) {
                $lines[] = 'Methods:';
                foreach ($methods as $method) {
                    $lines[] = '  ' . ($detail > 0 ? self::signature($method) : $method->getName() . '()');
                }
            }
            return implode("\n", $lines);
        }

        private static function cleanDoc(string $doc): string
        {
            $lines = preg_split('/\R/', $doc);
            $lines = array_map(fn ($line) => preg_replace('#^\s*(/\*\*|\*/|\*)\s?#', '', $line), $lines);
            return trim(implode("\n", $lines));
        }
    }

    // -----------------------------------------------------------------------------------------
    // The kernel (main process).

    /**
     * Shows `$value` as display_data. An array whose keys are all MIME types is a MIME bundle
     * (`['text/html' => '<b>hi</b>', 'text/plain' => 'hi']`); anything else is shown as the
     * value of a cell is. A `$displayId` lets update_display() replace it later.
     */
    function display(mixed $value, ?string $displayId = null, array $metadata = []): void
    {
        $output = ['data' => mime_bundle($value), 'metadata' => (object) $metadata];
        if ($displayId !== null) {
            $output['transient'] = ['display_id' => $displayId];
        }
        Kernel::userEvent('display', $output);
    }

    /** Replaces what the display shown with `$displayId` holds. */
    function update_display(mixed $value, string $displayId, array $metadata = []): void
    {
        Kernel::userEvent('update_display', [
            'data' => mime_bundle($value),
            'metadata' => (object) $metadata,
            'transient' => ['display_id' => $displayId],
        ]);
    }

    /** Clears the cell's output; with `$wait`, only once new output arrives. */
    function clear_output(bool $wait = false): void
    {
        Kernel::userEvent('clear_output', ['wait' => $wait]);
    }

    /** Shows text in the frontend's pager (help text, in IPython). */
    function page(string $text): void
    {
        Kernel::addPayload(['source' => 'page', 'data' => ['text/plain' => $text], 'start' => 0]);
    }

    /** What `readline()` in a cell calls: a line from the frontend, false at the end of input. */
    function readline(?string $prompt = null): string|false
    {
        return Kernel::requestInput((string) $prompt, false) ?? false;
    }

    /** What `STDIN` in a cell means: a stream whose lines come from the frontend. */
    function stdin()
    {
        static $stream = null;
        if ($stream === null) {
            if (!\in_array('cellgate-stdin', stream_get_wrappers(), true)) {
                stream_wrapper_register('cellgate-stdin', FrontendInput::class);
            }
            $stream = fopen('cellgate-stdin://', 'rb');
        }
        return $stream;
    }

    function mime_bundle(mixed $value): array
    {
        if (\is_array($value) && $value !== []) {
            $bundle = true;
            foreach ($value as $key => $item) {
                if (!\is_string($key) || !preg_match('~\A[\w.+-]+/[\w.+-]+\z~', $key)) {
                    $bundle = false;
                    break;
                }
            }
            if ($bundle) {
                return array_map(
                    fn ($item) => \is_string($item) || \is_array($item) ? $item : (string) $item,
                    $value,
                );
            }
        }
        return ['text/plain' => \is_string($value) ? $value : Render::value($value)];
    }

    /** The stream wrapper behind stdin(): each read that finds nothing asks for a line. */
    final class FrontendInput
    {
        /** @var resource|null Set by PHP for every stream wrapper. */
        public $context;
        private string $buffer = '';
        private bool $ended = false;

        public function stream_open(string $path, string $mode, int $options, ?string &$opened): bool
        {
            return true;
        }

        public function stream_read(int $count): string|false
        {
            if ($this->buffer === '' && !$this->ended) {
                $line = Kernel::requestInput('', false);
                if ($line === null) {
                    $this->ended = true;
                } else {
                    $this->buffer = $line . "\n";
                }
            }
            $chunk = substr($this->buffer, 0, $count);
            $this->buffer = (string) substr($this->buffer, \strlen($chunk));
            return $chunk;
        }

        public function stream_eof(): bool
        {
            // Each end of input is one: the next read asks the frontend again.
            if ($this->ended && $this->buffer === '') {
                $this->ended = false;
                return true;
            }
            return false;
        }

        public function stream_stat(): array
        {
            return [];
        }

        public function stream_set_option(int $option, int $arg1, ?int $arg2): bool
        {
            return false;
        }
    }

    final class Kernel
    {
        /** @var resource */
        private static $commands;
        /** @var resource */
        private static $socket;
        /** @var resource */
        private static $diagnostics;
        /** @var resource Private copies of fds 1 and 2 for the fence markers. */
        private static $stdout;
        /** @var resource */
        private static $stderr;

        private static int $pid = 0;
        private static int $forwarderPid = 0;
        private static string $driverFile = '';
        private static string $markerPrefix = '';
        private static int $fence = 0;
        private static int $executionCount = 0;
        // True while a cell is being run; a SIGINT outside a cell is ignored.
        private static bool $cellRunning = false;
        // True while the user's code runs; only then may a SIGINT throw.
        private static bool $inUserCode = false;
        // A SIGINT that arrived during a cell while the driver's own code ran.
        private static bool $interruptPending = false;
        /** @var list<array> The running cell's execute_reply payloads (pager text). */
        private static array $payloads = [];
        private static ?CellPlan $plan = null;
        private static int $cellNumber = 0;
        // The current cell as the user wrote it (behind an opening tag), for error messages.
        private static string $cellText = '';
        /** @var array<string, string> `use` imports carried from cell to cell. */
        private static array $imports = [];
        // Set once a fatal error forced the kernel to go on inside a shutdown function.
        private static bool $afterFatal = false;
        private static bool $exiting = false;
        /** @var callable */
        private static $sigintHandler;
        /** @var callable */
        private static $errorHandler;
        // The process of a lint child, which reports to the main process and dies.
        private static bool $isLintChild = false;
        /** @var resource|null */
        private static $lintReport = null;

        public static function boot(string $driverFile): void
        {
            self::$driverFile = $driverFile;
            self::$pid = getmypid();
            foreach ([FD_COMMANDS, FD_EVENTS, FD_DIAGNOSTICS, FD_STDOUT_READER, FD_STDERR_READER] as $fd) {
                if (@fopen("php://fd/$fd", 'rb') === false && @fopen("php://fd/$fd", 'wb') === false) {
                    fwrite(STDERR, "driver.php: fd $fd is not open; start the driver with launch.sh\n");
                    exit(2);
                }
            }
            foreach (['pcntl_fork', 'pcntl_signal', 'posix_kill'] as $function) {
                if (!\function_exists($function)) {
                    $message = "driver.php: PHP lacks $function() (the pcntl and posix extensions)\n";
                    fwrite(fopen('php://fd/' . FD_DIAGNOSTICS, 'wb'), $message);
                    exit(2);
                }
            }

            // Until the real handler is installed a SIGINT must not kill the process; it must
            // not be ignored either, because child processes would inherit that.
            pcntl_async_signals(true);
            pcntl_signal(SIGINT, fn () => null);

            self::$markerPrefix = "\0cellgate-fence-" . bin2hex(random_bytes(12)) . '-';
            [$ours, $theirs] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
            $forwarder = pcntl_fork();
            if ($forwarder < 0) {
                fwrite(fopen('php://fd/' . FD_DIAGNOSTICS, 'wb'), "driver.php: cannot fork the forwarder\n");
                exit(1);
            }
            if ($forwarder === 0) {
                // The forwarder must outlive an interrupted cell.
                pcntl_signal(SIGINT, SIG_IGN);
                fclose($ours);
                (new Forwarder($theirs, self::$markerPrefix, self::$pid))->run();
            }
            fclose($theirs);
            self::$forwarderPid = $forwarder;
            self::$socket = $ours;
            // The forwarder owns the event pipe and the FIFOs' reading ends.
            Descriptors::close(FD_EVENTS, FD_STDOUT_READER, FD_STDERR_READER);
            self::$commands = fopen('php://fd/' . FD_COMMANDS, 'rb');
            self::$diagnostics = fopen('php://fd/' . FD_DIAGNOSTICS, 'wb');
            self::$stdout = fopen('php://fd/1', 'wb');
            self::$stderr = fopen('php://fd/2', 'wb');
            Descriptors::close(FD_COMMANDS, FD_DIAGNOSTICS);
            $protected = Descriptors::keepFromChildren();

            // Warnings and notices take the driver's handler, which names cells the way
            // tracebacks do; fatal errors become error events. PHP's own display of errors
            // would only repeat them.
            ini_set('display_errors', '0');
            ini_set('log_errors', '0');
            ini_set('html_errors', '0');
            ini_set('zend.exception_ignore_args', '0');
            error_reporting(E_ALL);
            self::$errorHandler = [self::class, 'onError'];
            set_error_handler(self::$errorHandler);
            CellSource::register();
            register_shutdown_function([self::class, 'onShutdown']);
            self::$sigintHandler = [self::class, 'onSigint'];
            pcntl_signal(SIGINT, self::$sigintHandler);

            // As in an interactive interpreter: no script arguments.
            $GLOBALS['argv'] = [''];
            $GLOBALS['argc'] = 1;
            $_SERVER['argv'] = [''];
            $_SERVER['argc'] = 1;

            self::send('ready', json([
                'implementation' => 'cellgate-php',
                'implementation_version' => DRIVER_VERSION,
                'language_info' => [
                    'name' => 'php',
                    'version' => PHP_VERSION,
                    'mimetype' => 'text/x-php',
                    'file_extension' => '.php',
                    'pygments_lexer' => 'php',
                    'codemirror_mode' => 'php',
                ],
                'banner' => 'PHP ' . PHP_VERSION . " (cellgate PHP driver " . DRIVER_VERSION . ")\n"
                    . 'The value of a final expression is shown; exit() ends the cell, not the kernel.',
            ]));
            if (!$protected) {
                self::log('FFI is unavailable: child processes of cells inherit the driver\'s pipes');
            }
        }

        // -- Frames ------------------------------------------------------------------------

        /** Hands one frame to the forwarder. */
        private static function send(string $kind, string $body): void
        {
            if (getmypid() !== self::$pid) {
                // A process a cell forked and that went on past the cell: it must not speak
                // for the kernel.
                exit(0);
            }
            if (!write_fully(self::$socket, encode_frame($kind, $body))) {
                // The forwarder, and so the runner, has gone away.
                self::$exiting = true;
                exit(0);
            }
        }

        /** Sends an event after all output written so far: see the fence in the file header. */
        private static function emit(string $kind, array $payload): void
        {
            $body = json($payload);
            if (\strlen($body) > MAX_BODY) {
                $body = json(self::shrink($kind, $payload));
            }
            flush();
            $fence = ++self::$fence;
            $marker = self::$markerPrefix . $fence . "\0";
            @fwrite(self::$stdout, $marker);
            @fwrite(self::$stderr, $marker);
            self::send('fence', (string) $fence);
            self::send($kind, $body);
        }

        private static function shrink(string $kind, array $payload): array
        {
            if ($kind === 'error') {
                return [
                    'ename' => $payload['ename'],
                    'evalue' => shrink_text((string) $payload['evalue']),
                    'traceback' => [shrink_text(implode("\n", $payload['traceback']))],
                ];
            }
            if ($kind === 'result') {
                $text = shrink_text($payload['data']['text/plain']);
                return ['data' => ['text/plain' => $text], 'metadata' => new \stdClass()];
            }
            if ($kind === 'complete_reply') {
                $payload['matches'] = \array_slice($payload['matches'], 0, 10000);
            }
            return $payload;
        }

        public static function log(string $text): void
        {
            self::send('log', $text);
        }

        /** Reads one command, as [kind, body]; ends the process when the runner closes stdin. */
        private static function receive(): array
        {
            $header = fgets(self::$commands, MAX_HEADER_LEN + 1);
            while ($header === false && !feof(self::$commands)) {
                // A read cut short by a signal.
                $header = fgets(self::$commands, MAX_HEADER_LEN + 1);
            }
            if ($header === false || $header === '') {
                self::quit(0);
            }
            if (!preg_match('/\A([a-z0-9_]+) (\d+)\n\z/', $header, $match)) {
                fwrite(self::$diagnostics, 'cellgate php driver: malformed frame header ' . json($header) . "\n");
                self::quit(2);
            }
            $length = (int) $match[2];
            $body = '';
            while (\strlen($body) < $length) {
                $chunk = fread(self::$commands, min($length - \strlen($body), 1 << 20));
                if ($chunk === false || $chunk === '') {
                    if (feof(self::$commands)) {
                        self::quit(0);
                    }
                    continue;
                }
                $body .= $chunk;
            }
            return [$match[1], $body];
        }

        /** Ends the kernel: the forwarder sends what is left, then both processes exit. */
        private static function quit(int $status): never
        {
            self::$exiting = true;
            self::$cellRunning = false;
            @fclose(self::$socket);
            // Give the forwarder a moment to flush; it exits once its socket closes.
            for ($i = 0; $i < 200; $i++) {
                if (pcntl_waitpid(self::$forwarderPid, $ignored, WNOHANG) !== 0) {
                    break;
                }
                usleep(10000);
            }
            exit($status);
        }

        // -- The command loop --------------------------------------------------------------

        /**
         * Answers commands until one asks to run a cell, and returns the path that `include`
         * runs it from. Cells that fail before they start are answered here.
         */
        public static function nextCell(): string
        {
            while (true) {
                [$kind, $body] = self::receive();
                try {
                    switch ($kind) {
                        case 'execute':
                            $path = self::startCell($body);
                            if ($path !== null) {
                                return $path;
                            }
                            break;
                        case 'complete':
                            [$code, $cursor, ] = self::request($body);
                            self::emit('complete_reply', Introspection::complete($code, $cursor));
                            break;
                        case 'is_complete':
                            [$code, , ] = self::request($body);
                            self::emit('is_complete_reply', Introspection::isComplete($code));
                            break;
                        case 'inspect':
                            [$code, $cursor, $detail] = self::request($body);
                            self::emit('inspect_reply', Introspection::inspect($code, $cursor, $detail));
                            break;
                        case 'shutdown':
                            self::quit(0);
                        case 'input_reply':
                        case 'input_abort':
                            // PHP reads user input from stdin, which is /dev/null here.
                            break;
                        default:
                            self::log("ignored unknown command $kind");
                    }
                } catch (Interrupt $interrupt) {
                    throw $interrupt;
                } catch (\Throwable $problem) {
                    // A bug in the driver must not end the kernel, and the runner must get an answer.
                    self::log("driver error handling $kind: $problem");
                    $empty = new \stdClass();
                    $fallback = match ($kind) {
                        'complete' => ['complete_reply', [
                            'matches' => [], 'cursor_start' => 0, 'cursor_end' => 0, 'metadata' => $empty,
                        ]],
                        'is_complete' => ['is_complete_reply', ['status' => 'unknown']],
                        'inspect' => ['inspect_reply', ['found' => false, 'data' => $empty, 'metadata' => $empty]],
                        'execute' => ['done', ['status' => 'error']],
                        default => null,
                    };
                    if ($fallback !== null) {
                        if (self::$cellRunning) {
                            self::$cellRunning = false;
                            self::$inUserCode = false;
                        }
                        self::emit(...$fallback);
                    }
                }
            }
        }

        /** A request's code, cursor (at the end if absent) and detail level. */
        private static function request(string $body): array
        {
            $request = json_decode($body, true);
            $request = \is_array($request) ? $request : [];
            $code = (string) ($request['code'] ?? '');
            $cursor = (int) ($request['cursor_pos'] ?? Introspection::length($code));
            return [$code, $cursor, (int) ($request['detail_level'] ?? 0)];
        }

        /** Prepares a cell; returns its path, or null when it failed before starting. */
        private static function startCell(string $code): ?string
        {
            // A SIGINT that arrived while the kernel was idle is dealt with (ignored) now,
            // before the cell counts as running.
            pcntl_signal_dispatch();
            $number = ++self::$executionCount;
            self::$cellNumber = $number;
            self::$cellRunning = true;
            self::$interruptPending = false;
            self::$plan = null;
            self::$cellText = Cell::withOpenTag($code);

            try {
                $plan = Cell::plan($code, $number, self::$imports, (string) getcwd());
            } catch (\ParseError $error) {
                // The tokenizer's parse errors name no file; they are the cell's.
                $lines = ['ParseError: ' . $error->getMessage() . " in <cell $number>:" . $error->getLine()];
                $source = self::sourceLine("cell://$number", $error->getLine());
                if ($source !== null) {
                    $lines[] = $source;
                }
                self::endCell([
                    'ename' => 'ParseError', 'evalue' => $error->getMessage(), 'traceback' => $lines,
                ]);
                return null;
            }
            $problem = self::redeclarations($plan) ?? self::lint($plan, $number);
            if ($problem !== null) {
                self::endCell($problem);
                return null;
            }
            if (self::$interruptPending) {
                self::endCell(self::describe(new Interrupt('Interrupted')));
                return null;
            }
            foreach ($plan->imports as $key => $statement) {
                self::$imports[$key] = $statement;
            }
            self::$plan = $plan;
            $path = CellSource::put((string) $number, $plan->source);
            self::$inUserCode = true;
            return $path;
        }

        /** The include ended: shows the cell's result, if it has one, and ends the cell. */
        public static function cellReturned(mixed $value): void
        {
            self::$inUserCode = false;
            if (!self::$cellRunning) {
                return;
            }
            $error = null;
            if (self::$plan !== null && self::$plan->showsResult && $value !== null) {
                try {
                    $data = ['text/plain' => Render::value($value)];
                    self::emit('result', ['data' => $data, 'metadata' => new \stdClass()]);
                } catch (\Throwable $problem) {
                    $error = self::describe($problem);
                }
            }
            self::endCell($error);
        }

        /** The include threw. */
        public static function cellThrew(\Throwable $thrown): void
        {
            self::$inUserCode = false;
            if (!self::$cellRunning) {
                // Not the user's: a bug in the driver between cells.
                self::log("driver error: $thrown");
                return;
            }
            if ($thrown instanceof ExitRequest && $thrown->getCode() === 0) {
                // Like IPython: a clean exit ends the cell quietly.
                self::endCell(null);
                return;
            }
            self::endCell(self::describe($thrown));
        }

        /** Reports the cell's error, if any, and its end. */
        private static function endCell(?array $error): void
        {
            self::$inUserCode = false;
            // Output buffers a cell leaves open would hide its output for good.
            while (ob_get_level() > 0) {
                if (!@ob_end_flush()) {
                    break;
                }
            }
            // A cell may have changed how SIGINT is handled; between cells the driver's own
            // handling must be in place, or an interrupt while idle could end the kernel.
            pcntl_async_signals(true);
            pcntl_sigprocmask(SIG_UNBLOCK, [SIGINT]);
            if (pcntl_signal_get_handler(SIGINT) !== self::$sigintHandler) {
                pcntl_signal(SIGINT, self::$sigintHandler);
            }
            if ($error !== null) {
                self::emit('error', $error);
            }
            $done = ['status' => $error === null ? 'ok' : 'error'];
            if (self::$payloads) {
                $done['payload'] = self::$payloads;
                self::$payloads = [];
            }
            self::emit('done', $done);
            self::$cellRunning = false;
            self::$interruptPending = false;
            self::$plan = null;
            CellSource::forget((string) self::$cellNumber);
        }

        /** An `error` event for a throwable from a cell. */
        private static function describe(\Throwable $thrown): array
        {
            if ($thrown instanceof ExitRequest) {
                $call = "exit({$thrown->getCode()})";
                return ['ename' => 'ExitRequest', 'evalue' => $call, 'traceback' => ["The cell called $call"]];
            }
            return [
                'ename' => \get_class($thrown),
                'evalue' => self::cellNames($thrown->getMessage()),
                'traceback' => self::traceback($thrown),
            ];
        }

        /** An `error` event for a fatal error reported by PHP (error_get_last() style). */
        private static function fatal(array $error, ?string $hint = null): array
        {
            $message = self::cellNames((string) $error['message']);
            $lines = ["PHP Fatal error: $message in " . self::location((string) $error['file']) . ':' . $error['line']];
            $source = self::sourceLine((string) $error['file'], (int) $error['line']);
            if ($source !== null) {
                $lines[] = $source;
            }
            if ($hint !== null) {
                $lines[] = $hint;
            }
            return ['ename' => 'FatalError', 'evalue' => $message, 'traceback' => $lines];
        }

        /** `cell://N` as the user knows it: `<cell N>`. */
        public static function location(string $file): string
        {
            return preg_match('~\Acell://(\d+)\z~', $file, $m) ? "<cell $m[1]>" : $file;
        }

        private static function cellNames(string $text): string
        {
            return preg_replace('~cell://(\d+)~', '<cell $1>', $text) ?? $text;
        }

        /** The line of the current cell an error points at, indented, or null. */
        private static function sourceLine(string $file, int $line): ?string
        {
            if ($file !== 'cell://' . self::$cellNumber) {
                return null;
            }
            $lines = preg_split('/\r\n|\r|\n/', self::$cellText);
            $text = $lines[$line - 1] ?? null;
            if ($line === 1 && $text !== null) {
                $text = preg_replace('/\A<\?php /', '', $text);
            }
            return $text === null || trim($text) === '' ? null : '    ' . trim($text);
        }

        /** A traceback in PHP's own format, without the driver's frames. */
        private static function traceback(\Throwable $thrown): array
        {
            $chain = [];
            for ($current = $thrown; $current !== null && \count($chain) < 20; $current = $current->getPrevious()) {
                $chain[] = $current;
            }
            $lines = [];
            foreach (array_reverse($chain) as $index => $current) {
                $file = $current->getFile();
                $line = $current->getLine();
                $frames = $current->getTrace();
                // Thrown by the driver on the user's behalf (an interrupt, exit()): the user's
                // code is where the driver was called from.
                while ($file === self::$driverFile && $frames) {
                    $frame = array_shift($frames);
                    if (isset($frame['file'])) {
                        $file = $frame['file'];
                        $line = $frame['line'] ?? 0;
                    }
                }
                if ($index > 0) {
                    $lines[] = '';
                }
                $lines[] = ($index > 0 ? 'Next ' : '') . \get_class($current) . ': ' . self::cellNames($current->getMessage())
                    . ' in ' . self::location($file) . ':' . $line;
                $source = self::sourceLine($file, $line);
                if ($source !== null) {
                    $lines[] = $source;
                }
                $shown = [];
                foreach ($frames as $frame) {
                    if (($frame['file'] ?? null) === self::$driverFile) {
                        break;
                    }
                    $call = ($frame['class'] ?? '') . ($frame['type'] ?? '') . $frame['function']
                        . '(' . implode(', ', array_map([self::class, 'argument'], $frame['args'] ?? [])) . ')';
                    $where = isset($frame['file'])
                        ? self::location($frame['file']) . '(' . ($frame['line'] ?? 0) . ')'
                        : '[internal function]';
                    $shown[] = "$where: " . self::cellNames($call);
                }
                if ($shown) {
                    $lines[] = 'Stack trace:';
                    foreach ($shown as $number => $text) {
                        $lines[] = "#$number $text";
                    }
                    $lines[] = '#' . \count($shown) . ' {main}';
                }
            }
            return $lines;
        }

        /** An argument in a stack trace, shortened the way PHP's own traces do. */
        private static function argument(mixed $value): string
        {
            return match (true) {
                \is_string($value) => "'" . (\strlen($value) > 15 ? substr($value, 0, 15) . "...'" : "$value'"),
                \is_array($value) => 'Array',
                \is_object($value) => 'Object(' . \get_class($value) . ')',
                $value === null => 'NULL',
                \is_bool($value) => $value ? 'true' : 'false',
                \is_float($value) => var_export($value, true),
                \is_resource($value) => 'Resource id #' . get_resource_id($value),
                default => (string) $value,
            };
        }

        /**
         * A top-level function or class the cell declares that already exists. PHP cannot
         * declare a name twice and treats trying as a fatal error; better to refuse the cell.
         */
        private static function redeclarations(CellPlan $plan): ?array
        {
            foreach ($plan->functions as $name) {
                if (\function_exists($name)) {
                    $function = new \ReflectionFunction($name);
                    $where = $function->isInternal() ? 'it is built in' : 'previously declared in '
                        . self::location((string) $function->getFileName()) . ':' . $function->getStartLine();
                    return [
                        'ename' => 'FatalError',
                        'evalue' => "Cannot redeclare $name() ($where)",
                        'traceback' => [
                            "PHP Fatal error: Cannot redeclare $name() ($where)",
                            'PHP cannot change a function once it is declared: give it another name, or restart the kernel.',
                        ],
                    ];
                }
            }
            foreach ($plan->classes as $name) {
                if (class_exists($name, false) || interface_exists($name, false) || trait_exists($name, false)) {
                    $class = new \ReflectionClass($name);
                    $where = $class->isInternal() ? 'it is built in' : 'previously declared in '
                        . self::location((string) $class->getFileName()) . ':' . $class->getStartLine();
                    return [
                        'ename' => 'FatalError',
                        'evalue' => "Cannot declare $name, because the name is already in use ($where)",
                        'traceback' => [
                            "PHP Fatal error: Cannot declare $name, because the name is already in use ($where)",
                            'PHP cannot change a class once it is declared: give it another name, or restart the kernel.',
                        ],
                    ];
                }
            }
            return null;
        }

        /**
         * Compiles the cell and performs its declarations in a forked copy of the kernel, which
         * then dies; returns the error that would have been fatal, or null.
         */
        private static function lint(CellPlan $plan, int $number): ?array
        {
            if ($plan->lintSource === null) {
                return null;
            }
            $pair = @stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
            if ($pair === false) {
                return null;
            }
            $child = pcntl_fork();
            if ($child < 0) {
                fclose($pair[0]);
                fclose($pair[1]);
                return null;
            }
            if ($child === 0) {
                self::runLint($pair[1], $plan->lintSource, $number);
            }
            fclose($pair[1]);
            $report = '';
            $interrupted = false;
            while (!feof($pair[0])) {
                $read = [$pair[0]];
                $write = $except = null;
                if (@stream_select($read, $write, $except, 0, 100000)) {
                    $chunk = fread($pair[0], READ_CHUNK);
                    if ($chunk === false || $chunk === '') {
                        break;
                    }
                    $report .= $chunk;
                } elseif (self::$interruptPending) {
                    // An interrupt while an autoloader keeps the child busy.
                    $interrupted = true;
                    break;
                }
            }
            fclose($pair[0]);
            posix_kill($child, SIGKILL);
            pcntl_waitpid($child, $status);
            if ($interrupted || $report === 'ok') {
                return null;
            }
            $found = json_decode($report, true);
            if (\is_array($found) && isset($found['message'])) {
                return self::fatal($found);
            }
            // The child died without a report: PHP ended it before it could write one. That
            // happens after an earlier fatal error, when shutdown functions no longer run, or
            // when compiling the cell crashes PHP outright.
            $message = 'This cell would end PHP with a fatal error (a compile or declaration error)';
            return [
                'ename' => 'FatalError',
                'evalue' => $message,
                'traceback' => [
                    "PHP Fatal error: $message.",
                    'The kernel cannot say more about it; restart the kernel.',
                ],
            ];
        }

        /** The lint child: reports what compiling and declaring the cell did, then dies. */
        private static function runLint($report, string $source, int $number): never
        {
            pcntl_signal(SIGINT, SIG_IGN);
            self::$isLintChild = true;
            self::$lintReport = $report;
            ini_set('display_errors', '0');
            set_error_handler(fn () => true);
            // Nothing the declarations do may reach the user's output.
            ob_start(fn () => '', 1);
            CellSource::put((string) $number, $source);
            $found = null;
            try {
                include "cell://$number";
            } catch (\CompileError $error) {
                $found = ['message' => $error->getMessage(), 'file' => $error->getFile(), 'line' => $error->getLine()];
            } catch (\Throwable) {
                // Runtime errors (a parent class not loaded yet) are the real run's to report.
            }
            self::lintDone($found);
        }

        private static function lintDone(?array $found): never
        {
            write_fully(self::$lintReport, $found === null ? 'ok' : json($found));
            // Dying by SIGKILL skips destructors and shutdown functions, which belong to the
            // kernel, not to this copy of it.
            posix_kill(getmypid(), SIGKILL);
            exit(0);
        }

        // -- What cells call: rich output and input ----------------------------------------

        /**
         * Sends an event on behalf of the user's code. A SIGINT meanwhile waits until the
         * frame is out, then interrupts the cell.
         */
        public static function userEvent(string $kind, array $payload): void
        {
            if (getmypid() !== self::$pid) {
                return;
            }
            $wasInUserCode = self::$inUserCode;
            self::$inUserCode = false;
            try {
                self::emit($kind, $payload);
            } finally {
                self::$inUserCode = $wasInUserCode;
            }
            self::interruptIfPending($wasInUserCode);
        }

        /** Adds a payload to the running cell's execute_reply (`page` for the pager). */
        public static function addPayload(array $payload): void
        {
            if (self::$cellRunning) {
                self::$payloads[] = $payload;
            }
        }

        private static function interruptIfPending(bool $inUserCode): void
        {
            if ($inUserCode && self::$interruptPending) {
                self::$interruptPending = false;
                throw new Interrupt('Interrupted');
            }
        }

        /**
         * Asks the frontend for a line of input; null at the end of input (no frontend stdin,
         * or outside a cell). An interrupt while waiting stops the cell.
         */
        public static function requestInput(string $prompt, bool $password): ?string
        {
            if (getmypid() !== self::$pid || !self::$cellRunning) {
                return null;
            }
            $wasInUserCode = self::$inUserCode;
            self::$inUserCode = false;
            try {
                self::emit('input_request', ['prompt' => $prompt, 'password' => $password]);
                while (true) {
                    self::interruptIfPending($wasInUserCode);
                    // Waiting in select rather than in a read lets a SIGINT be noticed.
                    $read = [self::$commands];
                    $none = null;
                    if (!@stream_select($read, $none, $none, 0, 50000)) {
                        continue;
                    }
                    [$kind, $body] = self::receive();
                    switch ($kind) {
                        case 'input_reply':
                            return $body;
                        case 'input_abort':
                            return null;
                        case 'shutdown':
                            self::quit(0);
                        case 'complete':
                        case 'is_complete':
                        case 'inspect':
                            // The cell is not finished, so the kernel cannot look inside it.
                            $empty = new \stdClass();
                            self::emit(...match ($kind) {
                                'complete' => ['complete_reply', [
                                    'matches' => [], 'cursor_start' => 0, 'cursor_end' => 0,
                                    'metadata' => $empty,
                                ]],
                                'is_complete' => ['is_complete_reply', ['status' => 'unknown']],
                                'inspect' => ['inspect_reply', [
                                    'found' => false, 'data' => $empty, 'metadata' => $empty,
                                ]],
                            });
                            break;
                        default:
                            self::log("ignored a $kind command while a cell waits for input");
                    }
                }
            } finally {
                self::$inUserCode = $wasInUserCode;
            }
        }

        // -- Signals and errors ------------------------------------------------------------

        /** Turns SIGINT into an Interrupt, but only inside the user's code. */
        public static function onSigint(int $signal, mixed $info = null): void
        {
            if (getmypid() !== self::$pid || !self::$cellRunning) {
                return;
            }
            if (self::$inUserCode) {
                self::$interruptPending = false;
                throw new Interrupt('Interrupted');
            }
            // Throwing in the driver's own code could cut a frame in half or lose a `done`.
            self::$interruptPending = true;
        }

        /** Warnings, notices and deprecations: written to the user's stderr, PHP-style. */
        public static function onError(int $type, string $message, string $file = '', int $line = 0): bool
        {
            if (!(error_reporting() & $type)) {
                // Silenced with @.
                return false;
            }
            if ($type === E_USER_ERROR || $type === E_RECOVERABLE_ERROR) {
                throw new \ErrorException($message, 0, $type, $file, $line);
            }
            $label = match ($type) {
                E_WARNING, E_USER_WARNING, E_CORE_WARNING, E_COMPILE_WARNING => 'Warning',
                E_NOTICE, E_USER_NOTICE => 'Notice',
                E_DEPRECATED, E_USER_DEPRECATED => 'Deprecated',
                default => 'Error',
            };
            $text = "$label: " . self::cellNames($message) . ' in ' . self::location($file) . " on line $line\n";
            @fwrite(self::$stderr ?? STDERR, $text);
            return true;
        }

        /**
         * PHP is ending: a fatal error, or exit() somewhere the driver could not rewrite it
         * (in an included file). The kernel reports the cell's end and goes on serving from
         * here; the global scope is gone, so cells now run with the globals bound by reference.
         * This works once: PHP runs no shutdown function after a second fatal error.
         */
        public static function onShutdown(): void
        {
            if (self::$isLintChild) {
                $error = error_get_last();
                self::lintDone($error !== null && ($error['type'] & FATAL_ERRORS) ? $error : null);
            }
            if (getmypid() !== self::$pid || self::$exiting) {
                return;
            }
            $error = error_get_last();
            // The error may have been running out of memory; reporting it takes a little more.
            ini_set('memory_limit', '-1');
            if (!self::$cellRunning) {
                self::log('PHP is ending outside a cell: ' . json($error));
                return;
            }
            if (self::$afterFatal) {
                return;
            }
            self::$afterFatal = true;
            error_clear_last();
            // Another fatal error ends PHP for good, before the driver can report it (PHP runs
            // no more shutdown functions, nor destructors): PHP's own message on the user's
            // stderr is then the only word of it.
            ini_set('display_errors', 'stderr');
            if ($error !== null && ($error['type'] & FATAL_ERRORS)) {
                $hint = 'The kernel goes on after this fatal error, but another one will end it; '
                    . 'restart the kernel to be safe.';
                self::endCell(self::fatal($error, $hint));
            } else {
                self::endCell(null);
            }
            self::serveAfterFatal();
        }

        private static function serveAfterFatal(): never
        {
            while (true) {
                try {
                    self::cellReturned(run_with_globals(self::nextCell()));
                } catch (\Throwable $thrown) {
                    self::cellThrew($thrown);
                }
            }
        }
    }
}

namespace {
    // The cells run here, in the global scope, so that their variables are globals.
    \Cellgate\Kernel::boot(__FILE__);
    for (;;) {
        try {
            \Cellgate\Kernel::cellReturned(include \Cellgate\Kernel::nextCell());
        } catch (\Throwable $__cellgate_thrown) {
            \Cellgate\Kernel::cellThrew($__cellgate_thrown);
        }
        unset($__cellgate_thrown);
    }
}
