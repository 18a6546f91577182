/*
 * cellgate Java driver: the long-lived JVM behind one Java kernel.
 *
 * launch.sh starts it with the runner's command pipe on fd 3, the event pipe on fd 4, the
 * runner's stderr (driver diagnostics) on fd 5, fd 0 reading /dev/null, and fds 1 and 2 pointing
 * at FIFOs whose reading ends are fds 6 and 7. The frames spoken on fds 3 and 4 are described in
 * docs/driver-protocol.md. Java cannot move its own file descriptors, which is why the launcher
 * sets them up before the JVM starts.
 *
 * Cells run in one jdk.jshell.JShell instance, so classes, methods, imports and variables persist
 * between cells. The snippets run inside this JVM (JShell's "local" execution model, through the
 * CellExecution engine below) rather than in a remote agent JVM: starting is faster, System.out of
 * a snippet is this process's fd 1, and child processes inherit the same fds 1 and 2, so their
 * output is captured as well.
 *
 * Threads:
 *  - The main thread reads commands from a queue and runs them; during a cell it sits in
 *    JShell.eval(), which compiles each snippet on this thread.
 *  - Each snippet runs on a fresh "cell thread" in its own thread group, so that an interrupt can
 *    stop exactly the code of the running cell.
 *  - The command reader moves frames from fd 3 into the queue, and handles `shutdown` and the end
 *    of the stream itself, because both may come while a cell is running.
 *  - Two output pumps read the user's stdout and stderr FIFOs and forward what arrives as output
 *    events while the cell is still running.
 *  - The JVM runs the SIGINT handler on a thread of its own.
 */

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.security.Permission;
import java.security.SecureRandom;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

import jdk.jshell.DeclarationSnippet;
import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.JShell;
import jdk.jshell.JShellException;
import jdk.jshell.MethodSnippet;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.SourceCodeAnalysis.Completeness;
import jdk.jshell.SourceCodeAnalysis.CompletionInfo;
import jdk.jshell.UnresolvedReferenceException;
import jdk.jshell.execution.DirectExecutionControl;
import jdk.jshell.spi.ExecutionControl;
import jdk.jshell.spi.ExecutionControlProvider;
import jdk.jshell.spi.ExecutionEnv;

import sun.misc.Signal;
import sun.misc.SignalHandler;

public final class CellgateDriver {
    static final String DRIVER_VERSION = "0.1.0";

    // The descriptors launch.sh sets up.
    static final int CONTROL_FD = 3;
    static final int EVENTS_FD = 4;
    static final int DIAGNOSTICS_FD = 5;
    static final int STDOUT_READER_FD = 6;
    static final int STDERR_READER_FD = 7;

    /** The longest frame header the protocol allows, newline included. */
    static final int MAX_HEADER_LEN = 64;
    /** The largest frame body the runner accepts. */
    static final int MAX_BODY = 64 * 1024 * 1024;
    /**
     * How much of an oversized text survives in an event. Even at six bytes of JSON per character
     * this stays well under MAX_BODY.
     */
    static final int MAX_TEXT_CHARS = 4 * 1024 * 1024;
    /** How much is read from an output FIFO at once, and so the largest output frame. */
    static final int READ_CHUNK = 64 * 1024;
    /** How many stack frames of one exception a traceback shows. */
    static final int MAX_FRAMES = 40;

    /**
     * The imports the jshell tool starts with. Java users expect `List`, `Map`, `Files` and friends
     * to work in a JShell session without importing them.
     */
    static final String[] DEFAULT_IMPORTS = {
        "import java.io.*;",
        "import java.math.*;",
        "import java.net.*;",
        "import java.nio.file.*;",
        "import java.util.*;",
        "import java.util.concurrent.*;",
        "import java.util.function.*;",
        "import java.util.prefs.*;",
        "import java.util.regex.*;",
        "import java.util.stream.*;",
    };

    /**
     * The display functions every shell starts with, much as IJava offers them: `display(value)`
     * (a Map is a MIME bundle, `Map.of("text/html", "<b>hi</b>")`; anything else is shown as
     * text), `display(value, id)` and `updateDisplay(id, value)` for a display that changes,
     * `clearOutput()`, `page(text)`, which shows text in the frontend's pager, and
     * `readLine(prompt)` and `readPassword(prompt)`, which ask the frontend for a line with a
     * prompt (System.in asks without one; both give null at the end of input). They reach the
     * driver through bridge().
     */
    static final String[] DISPLAY_HELPERS = {
        "Object cellgate$bridge(String operation, Object... arguments) {"
            + " try { return Class.forName(\"CellgateDriver\")"
            + ".getMethod(\"bridge\", String.class, Object[].class)"
            + ".invoke(null, operation, arguments); }"
            + " catch (java.lang.reflect.InvocationTargetException e) {"
            + " if (e.getCause() instanceof RuntimeException)"
            + " throw (RuntimeException) e.getCause();"
            + " throw new IllegalStateException(e.getCause()); }"
            + " catch (ReflectiveOperationException e) {"
            + " throw new IllegalStateException(\"display is not available here\", e); } }",
        "void display(Object value) { cellgate$bridge(\"display\", value, null); }",
        "void display(Object value, String displayId) {"
            + " cellgate$bridge(\"display\", value, displayId); }",
        "void updateDisplay(String displayId, Object value) {"
            + " if (displayId == null) throw new IllegalArgumentException("
            + "\"updateDisplay needs the id given to display(value, id)\");"
            + " cellgate$bridge(\"update_display\", value, displayId); }",
        "void clearOutput(boolean wait) { cellgate$bridge(\"clear_output\", wait); }",
        "void clearOutput() { cellgate$bridge(\"clear_output\", false); }",
        "void page(Object text) { cellgate$bridge(\"page\", String.valueOf(text)); }",
        "String readLine(String prompt) {"
            + " return (String) cellgate$bridge(\"input\", prompt, false); }",
        "String readPassword(String prompt) {"
            + " return (String) cellgate$bridge(\"input\", prompt, true); }",
    };

    static Diagnostics diagnostics;

    public static void main(String[] args) {
        // A SIGINT can arrive while the driver is still starting. It must not end the JVM (its
        // default handler runs the shutdown sequence), so a handler that does nothing is installed
        // first; the kernel's own handler replaces it once there is a kernel to interrupt.
        Signal.handle(new Signal("INT"), signal -> { });
        try {
            Kernel kernel = new Kernel();
            Kernel.current = kernel;
            kernel.serve();
        } catch (Throwable problem) {
            if (diagnostics != null) {
                diagnostics.report("the driver failed", problem);
            } else {
                problem.printStackTrace();
            }
            terminate(1);
        }
    }

    /**
     * Ends the process. Shutdown hooks registered by cells get a moment to run, but a hook that
     * hangs cannot keep the kernel alive: the process halts two seconds later regardless.
     */
    static void terminate(int status) {
        ExitGuard.allowExit();
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(2000);
            } catch (InterruptedException ignored) {
                // Halting now is just as good.
            }
            Runtime.getRuntime().halt(status);
        }, "cellgate-exit-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        System.exit(status);
    }

    /**
     * What the display helpers of the user's shell (DISPLAY_HELPERS) call, by reflection, since
     * snippets live in a package of their own and cannot name a class of the unnamed package.
     * `operation` is "display", "update_display", "clear_output" or "page".
     */
    public static Object bridge(String operation, Object[] arguments) {
        Kernel kernel = Kernel.current;
        if (kernel == null) {
            throw new IllegalStateException("the cellgate kernel is not running");
        }
        return kernel.rich(operation, arguments);
    }

    // ------------------------------------------------------------------------------------------
    // Descriptors.

    /**
     * A FileDescriptor object for an inherited descriptor number. Java has no public way to make
     * one, so the private constructor is used (launch.sh opens java.io to this class for it).
     * Failing that, the descriptor is reopened through /proc, which works for pipes and FIFOs.
     */
    static FileDescriptor descriptor(int fd) {
        try {
            Constructor<FileDescriptor> constructor =
                FileDescriptor.class.getDeclaredConstructor(int.class);
            constructor.setAccessible(true);
            return constructor.newInstance(fd);
        } catch (ReflectiveOperationException | RuntimeException unavailable) {
            return null;
        }
    }

    static FileInputStream openInput(int fd) throws IOException {
        FileDescriptor descriptor = descriptor(fd);
        FileInputStream stream = descriptor != null
            ? new FileInputStream(descriptor)
            : new FileInputStream("/proc/self/fd/" + fd);
        // Fails with EBADF when the descriptor is not open, so that a driver started without
        // launch.sh says so instead of waiting forever.
        stream.getChannel().size();
        return stream;
    }

    static FileOutputStream openOutput(int fd) throws IOException {
        FileDescriptor descriptor = descriptor(fd);
        FileOutputStream stream = descriptor != null
            ? new FileOutputStream(descriptor)
            : new FileOutputStream("/proc/self/fd/" + fd, true);
        stream.getChannel().size();
        return stream;
    }

    /**
     * The user's System.out and System.err: they write through to fd 1 or 2 at once (no
     * buffering), so a cell that prints and then works shows its output while it works; they
     * always speak UTF-8, whatever the locale says; and close() only flushes. A cell calling
     * System.out.close() must not silence every later cell, nor close fd 1, which child processes
     * and the driver's fence markers still need.
     *
     * println writes its text and the line end together. PrintStream only does that for its own
     * class, not for subclasses, and a line cut in two costs two system calls and two frames.
     */
    static final class UserPrintStream extends PrintStream {
        private static final String LINE_END = System.lineSeparator();

        UserPrintStream(FileDescriptor descriptor) {
            super(new FileOutputStream(descriptor), true, StandardCharsets.UTF_8);
        }

        @Override
        public void close() {
            flush();
        }

        @Override
        public void println() {
            print(LINE_END);
        }

        @Override
        public void println(boolean x) {
            print(x + LINE_END);
        }

        @Override
        public void println(char x) {
            print(x + LINE_END);
        }

        @Override
        public void println(int x) {
            print(x + LINE_END);
        }

        @Override
        public void println(long x) {
            print(x + LINE_END);
        }

        @Override
        public void println(float x) {
            print(x + LINE_END);
        }

        @Override
        public void println(double x) {
            print(x + LINE_END);
        }

        @Override
        public void println(char[] x) {
            print(new String(x) + LINE_END);
        }

        @Override
        public void println(String x) {
            print(x + LINE_END);
        }

        @Override
        public void println(Object x) {
            print(String.valueOf(x) + LINE_END);
        }
    }

    /** The driver's own messages for the runner's log, on the runner's stderr (fd 5). */
    static final class Diagnostics {
        private final PrintStream stream;

        Diagnostics(OutputStream target) {
            this.stream = new PrintStream(target, true, StandardCharsets.UTF_8);
        }

        PrintStream stream() {
            return stream;
        }

        void say(String message) {
            synchronized (stream) {
                stream.println("cellgate-java: " + message);
            }
        }

        void report(String message, Throwable problem) {
            synchronized (stream) {
                stream.println("cellgate-java: " + message + ":");
                problem.printStackTrace(stream);
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // Frames.

    static final class Frame {
        final String kind;
        final byte[] body;

        Frame(String kind, byte[] body) {
            this.kind = kind;
            this.body = body;
        }

        String text() {
            return new String(body, StandardCharsets.UTF_8);
        }
    }

    /** The event channel (fd 4). Frames from several threads never interleave. */
    static final class Events {
        private final OutputStream out;
        private boolean open = true;

        Events(OutputStream out) {
            this.out = out;
        }

        /**
         * Writes one frame with a single write call. Besides keeping frames whole between
         * threads, this matters for cell threads: an interrupt stops them with an asynchronous
         * exception, which the JVM only delivers between Java-level calls, never in the middle of
         * the native write of one array.
         */
        synchronized void send(String kind, byte[] body) {
            if (!open) {
                return;
            }
            byte[] header = (kind + " " + body.length + "\n").getBytes(StandardCharsets.US_ASCII);
            byte[] frame = new byte[header.length + body.length];
            System.arraycopy(header, 0, frame, 0, header.length);
            System.arraycopy(body, 0, frame, header.length, body.length);
            try {
                out.write(frame);
            } catch (IOException gone) {
                // The runner has gone away, so there is nobody left to report to.
                open = false;
                terminate(0);
            }
        }

        void sendJson(String kind, Object payload) {
            send(kind, Json.write(payload).getBytes(StandardCharsets.UTF_8));
        }
    }

    /**
     * The commands the runner has sent and nobody has taken yet.
     *
     * This is a plain monitor rather than a java.util.concurrent queue on purpose: a cell thread
     * waits here for the answer to an input request, and an interrupt stops that thread with
     * Thread.stop. A thread stopped while parked inside a java.util.concurrent lock leaves the lock
     * in a broken state; a thread stopped in Object.wait() gives its monitor back cleanly.
     */
    static final class CommandQueue {
        private final ArrayDeque<Frame> frames = new ArrayDeque<>();

        synchronized void put(Frame frame) {
            frames.addLast(frame);
            notifyAll();
        }

        synchronized Frame take() throws InterruptedException {
            while (frames.isEmpty()) {
                wait();
            }
            return frames.removeFirst();
        }
    }

    /** The command channel is out of step and cannot be trusted any more. */
    static final class ProtocolException extends IOException {
        private static final long serialVersionUID = 1L;

        ProtocolException(String message) {
            super(message);
        }
    }

    /**
     * Reads frames from fd 3. `shutdown` and the end of the stream end the process right here,
     * since both can come while the main thread is busy with a cell; everything else is queued.
     */
    static final class CommandReader implements Runnable {
        private final InputStream in;
        private final CommandQueue queue;

        CommandReader(InputStream in, CommandQueue queue) {
            this.in = in;
            this.queue = queue;
        }

        @Override
        public void run() {
            try {
                while (true) {
                    Frame frame = readFrame();
                    if (frame == null || frame.kind.equals("shutdown")) {
                        terminate(0);
                        return;
                    }
                    queue.put(frame);
                }
            } catch (ProtocolException problem) {
                diagnostics.say("protocol error on the command channel: " + problem.getMessage());
                terminate(2);
            } catch (IOException problem) {
                diagnostics.report("reading commands failed", problem);
                terminate(0);
            }
        }

        /** The next frame, or null at the end of the stream. */
        private Frame readFrame() throws IOException {
            ByteArrayOutputStream header = new ByteArrayOutputStream();
            while (true) {
                int b = in.read();
                if (b < 0) {
                    return null;
                }
                if (b == '\n') {
                    break;
                }
                header.write(b);
                if (header.size() >= MAX_HEADER_LEN) {
                    throw new ProtocolException("frame header is longer than " + MAX_HEADER_LEN
                        + " bytes");
                }
            }
            String line = header.toString(StandardCharsets.ISO_8859_1);
            int space = line.indexOf(' ');
            String kind = space > 0 ? line.substring(0, space) : "";
            String length = space > 0 ? line.substring(space + 1) : "";
            if (!kind.matches("[a-z0-9_]+") || !length.matches("[0-9]{1,10}")) {
                throw new ProtocolException("frame header " + Json.write(line)
                    + " is not `KIND LEN`");
            }
            long size = Long.parseLong(length);
            if (size > MAX_BODY) {
                throw new ProtocolException("frame body of " + size + " bytes is too large");
            }
            byte[] body = in.readNBytes((int) size);
            if (body.length < size) {
                return null;
            }
            return new Frame(kind, body);
        }
    }

    // ------------------------------------------------------------------------------------------
    // The user's output.

    /**
     * Forwards what arrives on one of the user's output FIFOs as `stdout` or `stderr` events.
     *
     * Ordering uses fence markers: to send an event after all output written before it, the
     * driver writes a marker (a NUL, a random prefix, a number and a NUL) to fds 1 and 2 and waits
     * until both pumps have read their marker. Everything ahead of a marker in a FIFO has been
     * forwarded by then. Markers are taken out of the stream and never reach the user. Output
     * that comes before the first marker is the JVM's own start-up chatter (warnings about
     * options, JAVA_TOOL_OPTIONS) and goes to the runner's log instead.
     */
    static final class OutputPump implements Runnable {
        final String kind;
        private final InputStream source;
        private final byte[] prefix;
        private final Events events;
        private final Fences fences;
        private byte[] carry = new byte[0];
        /** Output that came before the first marker, for the runner's log. */
        private final ByteArrayOutputStream startupOutput = new ByteArrayOutputStream();
        /** The highest marker this pump has read; guarded by the Fences object. */
        long seen;
        /** When the pump last started to wait for data, or 0 while it is not waiting. */
        volatile long waitingSince;

        OutputPump(String kind, InputStream source, byte[] prefix, Events events, Fences fences) {
            this.kind = kind;
            this.source = source;
            this.prefix = prefix;
            this.events = events;
            this.fences = fences;
        }

        @Override
        public void run() {
            byte[] buffer = new byte[READ_CHUNK];
            while (true) {
                int count;
                waitingSince = System.nanoTime();
                try {
                    count = source.read(buffer);
                } catch (IOException problem) {
                    diagnostics.report("reading the user's " + kind + " failed", problem);
                    return;
                } finally {
                    waitingSince = 0;
                }
                // The FIFO is also open for writing in this process, so the end of the stream
                // cannot come; should it, there is nothing more to forward.
                if (count < 0) {
                    return;
                }
                receive(buffer, count);
            }
        }

        /** Splits what arrived into output and markers. */
        private void receive(byte[] chunk, int length) {
            byte[] bytes;
            int size;
            if (carry.length > 0) {
                bytes = new byte[carry.length + length];
                System.arraycopy(carry, 0, bytes, 0, carry.length);
                System.arraycopy(chunk, 0, bytes, carry.length, length);
                size = bytes.length;
                carry = new byte[0];
            } else {
                bytes = chunk;
                size = length;
            }
            int start = 0; // The start of the output not forwarded yet.
            int from = 0; // Where to look for the next marker.
            while (true) {
                int at = indexOf(bytes, size, prefix, from);
                if (at < 0) {
                    break;
                }
                int digits = at + prefix.length;
                int end = digits;
                while (end < size && end - digits <= 18 && bytes[end] >= '0' && bytes[end] <= '9') {
                    end++;
                }
                if (end == size && end - digits <= 18) {
                    // A marker cut in two by the end of this read: keep its start for the next.
                    forward(bytes, start, at);
                    carry = slice(bytes, at, size);
                    return;
                }
                if (end == digits || end - digits > 18 || bytes[end] != 0) {
                    from = at + 1; // Not a marker after all, just output that looks like one.
                    continue;
                }
                forward(bytes, start, at);
                long number = Long.parseLong(new String(bytes, digits, end - digits,
                    StandardCharsets.US_ASCII));
                if (startupOutput.size() > 0) {
                    diagnostics.say("the JVM wrote to " + kind + " while starting:\n"
                        + startupOutput.toString(StandardCharsets.UTF_8).trim());
                    startupOutput.reset();
                }
                fences.passed(this, number);
                start = end + 1;
                from = start;
            }
            // Hold back a tail that could be the beginning of a marker.
            int keep = 0;
            for (int k = Math.min(prefix.length - 1, size - from); k > 0; k--) {
                if (bytes[size - k] == 0 && startsWith(bytes, size - k, size, prefix)) {
                    keep = k;
                    break;
                }
            }
            forward(bytes, start, size - keep);
            if (keep > 0) {
                carry = slice(bytes, size - keep, size);
            }
        }

        private void forward(byte[] bytes, int from, int to) {
            if (to <= from) {
                return;
            }
            boolean started;
            synchronized (fences) {
                started = seen > 0;
            }
            if (started) {
                events.send(kind, slice(bytes, from, to));
            } else if (startupOutput.size() < READ_CHUNK) {
                startupOutput.write(bytes, from, Math.min(to - from, READ_CHUNK));
            }
        }

        private static byte[] slice(byte[] bytes, int from, int to) {
            byte[] part = new byte[to - from];
            System.arraycopy(bytes, from, part, 0, part.length);
            return part;
        }

        /** Whether bytes[from, to) is a prefix of `pattern` (or the other way round). */
        private static boolean startsWith(byte[] bytes, int from, int to, byte[] pattern) {
            for (int i = 0; i < pattern.length && from + i < to; i++) {
                if (bytes[from + i] != pattern[i]) {
                    return false;
                }
            }
            return true;
        }

        private static int indexOf(byte[] bytes, int size, byte[] pattern, int from) {
            outer:
            for (int i = Math.max(from, 0); i + pattern.length <= size; i++) {
                for (int j = 0; j < pattern.length; j++) {
                    if (bytes[i + j] != pattern[j]) {
                        continue outer;
                    }
                }
                return i;
            }
            return -1;
        }
    }

    /** Fence markers: see OutputPump. */
    static final class Fences {
        /**
         * A pump that has been waiting for data for this long, having started to wait after the
         * marker was written, has read everything there is.
         */
        private static final long LOST_MARKER_NANOS = 500_000_000L;

        private final byte[] prefix;
        private final Object fenceLock = new Object();
        private final OutputStream rawOut = new FileOutputStream(FileDescriptor.out);
        private final OutputStream rawErr = new FileOutputStream(FileDescriptor.err);
        private OutputPump[] pumps = new OutputPump[0];
        private long issued;

        Fences() {
            byte[] random = new byte[12];
            new SecureRandom().nextBytes(random);
            StringBuilder text = new StringBuilder("\0cellgate-fence-");
            for (byte b : random) {
                text.append(String.format("%02x", b & 0xff));
            }
            text.append('-');
            this.prefix = text.toString().getBytes(StandardCharsets.US_ASCII);
        }

        byte[] prefix() {
            return prefix;
        }

        void attach(OutputPump stdout, OutputPump stderr) {
            pumps = new OutputPump[] {stdout, stderr};
        }

        synchronized void passed(OutputPump pump, long number) {
            pump.seen = Math.max(pump.seen, number);
            notifyAll();
        }

        /**
         * Returns once every output written to fds 1 and 2 before the call has been forwarded. One
         * fence at a time: markers of two fences written in the wrong order would let the later
         * one pass before the earlier one's output.
         */
        void fence(PrintStream... streams) {
            synchronized (fenceLock) {
                for (PrintStream stream : streams) {
                    try {
                        stream.flush();
                    } catch (Throwable ignored) {
                        // A broken stream of the user's has nothing left to flush.
                    }
                }
                long number;
                synchronized (this) {
                    number = ++issued;
                }
                byte[] marker = (new String(prefix, StandardCharsets.US_ASCII) + number + "\0")
                    .getBytes(StandardCharsets.US_ASCII);
                OutputStream[] targets = {rawOut, rawErr};
                for (int i = 0; i < targets.length; i++) {
                    try {
                        targets[i].write(marker);
                    } catch (IOException closed) {
                        // The user closed the descriptor; there is nothing to wait for on it.
                        passed(pumps[i], number);
                    }
                }
                awaitMarkers(number, System.nanoTime());
            }
        }

        private synchronized void awaitMarkers(long number, long writtenAt) {
            while (true) {
                boolean all = true;
                for (OutputPump pump : pumps) {
                    if (pump.seen >= number) {
                        continue;
                    }
                    // A pump that found the FIFO empty after the marker was written will never
                    // see it: something outside Java has moved the descriptor. Rather than hold
                    // every later event back forever, give up on it.
                    long since = pump.waitingSince;
                    if (since != 0 && since - writtenAt > 0
                        && System.nanoTime() - since > LOST_MARKER_NANOS) {
                        diagnostics.say("no fence marker arrived on " + pump.kind);
                        pump.seen = number;
                        continue;
                    }
                    all = false;
                }
                if (all) {
                    return;
                }
                try {
                    wait(100);
                } catch (InterruptedException ignored) {
                    // Keep waiting: the order of events matters more.
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // System.exit() and System.in.

    /**
     * Keeps cells from ending the kernel with System.exit() or Runtime.halt(): the call throws
     * ExitRequest instead, which ends the cell. Everything else is allowed, as without a
     * security manager. Security managers are deprecated; on JVMs that refuse one, the driver
     * runs without this guard.
     */
    @SuppressWarnings("removal")
    static final class ExitGuard extends SecurityManager {
        private static volatile boolean exitAllowed;

        static void allowExit() {
            exitAllowed = true;
        }

        /**
         * Installs the guard. The JVM prints a deprecation warning on its original stderr when
         * this happens; like all output before the first fence, it goes to the runner's log.
         */
        static void install() {
            try {
                System.setSecurityManager(new ExitGuard());
            } catch (UnsupportedOperationException | SecurityException refused) {
                diagnostics.say("System.exit() in a cell will end the kernel: " + refused);
            }
        }

        @Override
        public void checkExit(int status) {
            if (!exitAllowed) {
                throw new ExitRequest(status);
            }
        }

        @Override
        public void checkPermission(Permission permission) {
            // Everything is allowed.
        }

        @Override
        public void checkPermission(Permission permission, Object context) {
            // Everything is allowed.
        }
    }

    /** What System.exit() throws inside a cell. */
    public static final class ExitRequest extends SecurityException {
        private static final long serialVersionUID = 1L;

        ExitRequest(int status) {
            super("System.exit(" + status + ") was called; the kernel keeps running "
                + "(restart the kernel to start over)");
        }
    }

    /**
     * The user's System.in. Reading it during a cell asks the frontend for a line (an
     * `input_request` event) and delivers the answer followed by a newline; outside a cell, and
     * when the frontend has no input to give, it is at its end, like /dev/null.
     */
    static final class UserInput extends InputStream {
        private final Kernel kernel;
        private byte[] line = new byte[0];
        private int position;

        UserInput(Kernel kernel) {
            this.kernel = kernel;
        }

        @Override
        public synchronized int read() {
            byte[] one = new byte[1];
            return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
        }

        @Override
        public synchronized int read(byte[] buffer, int offset, int length) {
            if (length == 0) {
                return 0;
            }
            if (position >= line.length) {
                String answer = kernel.requestInput("", false);
                if (answer == null) {
                    return -1;
                }
                line = (answer + "\n").getBytes(StandardCharsets.UTF_8);
                position = 0;
            }
            int count = Math.min(length, line.length - position);
            System.arraycopy(line, position, buffer, offset, count);
            position += count;
            return count;
        }

        @Override
        public synchronized int available() {
            return line.length - position;
        }
    }

    // ------------------------------------------------------------------------------------------
    // Running snippets.

    /**
     * JShell's execution engine: runs each snippet in this JVM on a cell thread of its own.
     *
     * It works like JShell's own "local" engine, with three differences that matter to a kernel.
     * A stop request that arrives before the snippet's thread exists is remembered instead of
     * lost, so an interrupt during compilation still prevents the snippet from running. The value
     * of an expression is turned into text on the cell thread, so a toString() that never returns
     * can be interrupted too. And the JVM-wide uncaught exception handler is left alone, so an
     * exception in a background thread is printed as in any Java program.
     */
    static final class CellExecution extends DirectExecutionControl {
        /**
         * Thread.stop(), looked up at run time: it is the only way to stop a thread that never
         * checks for interruption, it works up to Java 19, and it is gone from the API of later
         * versions, against which this file must still compile.
         */
        private static final Method THREAD_STOP = threadStop();

        private final Object lock = new Object();
        /** The thread group of the running snippet; guarded by `lock`. */
        private ThreadGroup running;
        /** Whether the current cell is to stop; guarded by `lock`. */
        private boolean stopRequested;

        void beginCell() {
            synchronized (lock) {
                stopRequested = false;
            }
        }

        private static Method threadStop() {
            try {
                return Thread.class.getMethod("stop");
            } catch (NoSuchMethodException gone) {
                return null;
            }
        }

        /**
         * Stops the running snippet, or the next one to start in this cell. Threads the snippet
         * started are stopped too, as JShell's own local engine does.
         */
        void requestStop() {
            synchronized (lock) {
                stopRequested = true;
                if (running == null) {
                    return;
                }
                Thread[] threads = new Thread[running.activeCount() + 8];
                int count = running.enumerate(threads, true);
                for (int i = 0; i < count; i++) {
                    stop(threads[i]);
                }
            }
        }

        private static void stop(Thread thread) {
            if (THREAD_STOP != null) {
                try {
                    THREAD_STOP.invoke(thread);
                    return;
                } catch (InvocationTargetException | IllegalAccessException unsupported) {
                    // Java 20 and later refuse (UnsupportedOperationException).
                }
            }
            // Interrupting at least ends sleeps, waits and interruptible I/O.
            thread.interrupt();
        }

        @SuppressWarnings("removal")
        private static void setDaemon(ThreadGroup group) {
            group.setDaemon(true);
        }

        @Override
        protected String invoke(Method doit) throws Exception {
            ThreadGroup group = new ThreadGroup("cellgate-cell");
            // A daemon group goes away with its last thread instead of staying in its parent's
            // list for the life of the kernel.
            setDaemon(group);
            String[] value = new String[1];
            Throwable[] failure = new Throwable[1];
            Thread thread = new Thread(group, () -> {
                Object result;
                try {
                    result = doit.invoke(null);
                } catch (Throwable problem) {
                    failure[0] = problem;
                    return;
                }
                try {
                    value[0] = valueString(result);
                } catch (Throwable problem) {
                    // A toString() that throws is the cell's error like any other.
                    failure[0] = new InvocationTargetException(problem);
                }
            }, "cellgate-cell");
            // Libraries that look classes up through the context class loader (ServiceLoader,
            // many serialisation libraries) then see the classes the cells defined.
            thread.setContextClassLoader(doit.getDeclaringClass().getClassLoader());
            synchronized (lock) {
                if (stopRequested) {
                    throw new ExecutionControl.StoppedException();
                }
                running = group;
                thread.start();
            }
            try {
                thread.join();
            } finally {
                synchronized (lock) {
                    running = null;
                }
            }
            synchronized (lock) {
                if (stopRequested) {
                    throw new ExecutionControl.StoppedException();
                }
            }
            Throwable problem = failure[0];
            if (problem == null) {
                return value[0];
            }
            if (problem instanceof Exception) {
                // An InvocationTargetException carries the snippet's own exception, which the
                // caller turns into the EvalException that JShell reports.
                throw (Exception) problem;
            }
            throw new InvocationTargetException(problem);
        }
    }

    /** Where a snippet's source sits: its cell, and the cell line of the snippet's first line. */
    static final class SnippetOrigin {
        final int cell;
        final int firstLine;

        SnippetOrigin(int cell, int firstLine) {
            this.cell = cell;
            this.firstLine = firstLine;
        }
    }

    /** A cell's text with its line structure. */
    static final class CellText {
        final String text;
        private final int[] lineStarts;

        CellText(String text) {
            this.text = text;
            List<Integer> starts = new ArrayList<>();
            starts.add(0);
            for (int i = 0; i < text.length(); i++) {
                if (text.charAt(i) == '\n') {
                    starts.add(i + 1);
                }
            }
            lineStarts = starts.stream().mapToInt(Integer::intValue).toArray();
        }

        /** The 0-based line of a character offset. */
        int lineOf(int offset) {
            int low = 0;
            int high = lineStarts.length - 1;
            while (low < high) {
                int middle = (low + high + 1) >>> 1;
                if (lineStarts[middle] <= offset) {
                    low = middle;
                } else {
                    high = middle - 1;
                }
            }
            return low;
        }

        int lineStart(int line) {
            return lineStarts[line];
        }

        String line(int line) {
            int start = lineStarts[line];
            int end = line + 1 < lineStarts.length ? lineStarts[line + 1] - 1 : text.length();
            return text.substring(start, end);
        }
    }

    /**
     * One snippet of a cell as SourceCodeAnalysis splits it: the region [start, end) of the cell
     * and the source JShell should evaluate (the region, plus the semicolon JShell adds where one
     * may be left out).
     */
    static final class Piece {
        final int start;
        final int end;
        final Completeness completeness;
        final String source;

        Piece(int start, int end, Completeness completeness, String source) {
            this.start = start;
            this.end = end;
            this.completeness = completeness;
            this.source = source;
        }

        boolean complete() {
            return completeness == Completeness.COMPLETE
                || completeness == Completeness.COMPLETE_WITH_SEMI;
        }
    }

    /** How a cell ended: with a result, an error, or neither. */
    static final class Outcome {
        Map<String, Object> result;
        Map<String, Object> error;
        /** Set by System.exit(0): the cell ends early but successfully. */
        boolean exited;
    }

    // ------------------------------------------------------------------------------------------
    // The kernel.

    static final class Kernel {
        /** The kernel of this process, for bridge(). */
        static volatile Kernel current;
        private final CommandQueue commands = new CommandQueue();
        /** The pager payloads of the running cell, sent with its `done`; guarded by itself. */
        private final List<Object> payloads = new ArrayList<>();
        private final Fences fences = new Fences();
        private final CellExecution execution = new CellExecution();
        private final Map<String, SnippetOrigin> origins = new HashMap<>();
        private final Object cellLock = new Object();
        /** Whether a cell is running; guarded by `cellLock`. */
        private boolean cellRunning;
        /** Whether the running cell was interrupted; guarded by `cellLock`. */
        private boolean interrupted;
        private final SignalHandler sigintHandler = signal -> onSigint();
        /** Counts the driver's SIGWINCH barriers; see settleSignals(). */
        private final Object barrierLock = new Object();
        private long barriersRaised;
        private long barriersPassed;
        private final SignalHandler barrierHandler = signal -> {
            synchronized (barrierLock) {
                barriersPassed++;
                barrierLock.notifyAll();
            }
        };
        private Events events;
        private PrintStream userOut;
        private PrintStream userErr;
        private JShell shell;
        private SourceCodeAnalysis analysis;
        private int cellCount;

        void serve() throws IOException {
            setUpChannels();
            ExitGuard.install();
            startShell();
            installSignalHandlers();
            // Everything the JVM printed while starting is now in the runner's log; from here on,
            // output is the user's.
            fences.fence(System.out, System.err);
            events.sendJson("ready", readyPayload());
            // Commands that arrive meanwhile wait in the queue. Doing this after `ready` lets the
            // frontend show the kernel as ready about a second sooner, and the work is usually
            // done before anyone has typed a first cell.
            prepareShell();
            while (true) {
                Frame frame;
                try {
                    frame = commands.take();
                } catch (InterruptedException ignored) {
                    continue;
                }
                try {
                    dispatch(frame);
                } catch (RuntimeException | Error problem) {
                    // A bug in the driver must not end the kernel.
                    diagnostics.report("handling a " + frame.kind + " command failed", problem);
                }
            }
        }

        private void setUpChannels() throws IOException {
            FileOutputStream diagnosticsOut;
            try {
                diagnosticsOut = openOutput(DIAGNOSTICS_FD);
            } catch (IOException missing) {
                System.err.println("CellgateDriver: fd " + DIAGNOSTICS_FD
                    + " is not open; start the driver with launch.sh");
                throw missing;
            }
            diagnostics = new Diagnostics(diagnosticsOut);
            InputStream control;
            try {
                // Buffered, because frame headers are read a byte at a time; and because
                // FileInputStream.readNBytes tries to seek, which fails on a pipe.
                control = new BufferedInputStream(openInput(CONTROL_FD), READ_CHUNK);
                events = new Events(openOutput(EVENTS_FD));
            } catch (IOException missing) {
                diagnostics.say("the command and event descriptors (3 and 4) are not open; "
                    + "start the driver with launch.sh");
                throw missing;
            }
            InputStream stdoutReader = openInput(STDOUT_READER_FD);
            InputStream stderrReader = openInput(STDERR_READER_FD);

            userOut = new UserPrintStream(FileDescriptor.out);
            userErr = new UserPrintStream(FileDescriptor.err);
            System.setOut(userOut);
            System.setErr(userErr);
            System.setIn(new UserInput(this));

            OutputPump stdout = new OutputPump("stdout", stdoutReader, fences.prefix(), events,
                fences);
            OutputPump stderr = new OutputPump("stderr", stderrReader, fences.prefix(), events,
                fences);
            fences.attach(stdout, stderr);
            startDaemon(stdout, "cellgate-stdout");
            startDaemon(stderr, "cellgate-stderr");
            startDaemon(new CommandReader(control, commands), "cellgate-commands");
        }

        private static void startDaemon(Runnable body, String name) {
            Thread thread = new Thread(body, name);
            thread.setDaemon(true);
            thread.start();
        }

        private void startShell() {
            ExecutionControlProvider provider = new ExecutionControlProvider() {
                @Override
                public String name() {
                    return "cellgate";
                }

                @Override
                public ExecutionControl generate(ExecutionEnv env, Map<String, String> params) {
                    return execution;
                }
            };
            shell = JShell.builder()
                .executionEngine(provider, Collections.emptyMap())
                .out(diagnostics.stream())
                .err(diagnostics.stream())
                .build();
            analysis = shell.sourceCodeAnalysis();
        }

        /**
         * Evaluates the default imports, then compiles and runs one throw-away declaration. The
         * JShell compiler runs in the interpreter until the JIT has compiled it, so the first
         * snippets are several times slower than later ones; this way the user's first cell is
         * not one of them.
         */
        private void prepareShell() {
            for (String line : DEFAULT_IMPORTS) {
                for (SnippetEvent event : shell.eval(line)) {
                    if (event.status() == Snippet.Status.REJECTED) {
                        diagnostics.say("default import failed: " + line);
                    }
                }
            }
            for (String helper : DISPLAY_HELPERS) {
                for (SnippetEvent event : shell.eval(helper)) {
                    if (event.status() == Snippet.Status.REJECTED) {
                        diagnostics.say("display helper failed: " + helper);
                    }
                }
            }
            String warmUp = "String cellgate$warmUp = String.valueOf(1 + 1);";
            for (SnippetEvent event : shell.eval(warmUp)) {
                if (event.causeSnippet() == null) {
                    shell.drop(event.snippet());
                }
            }
        }

        private Map<String, Object> readyPayload() {
            Map<String, Object> languageInfo = new LinkedHashMap<>();
            languageInfo.put("name", "java");
            languageInfo.put("version", System.getProperty("java.version"));
            languageInfo.put("mimetype", "text/x-java");
            languageInfo.put("file_extension", ".jshell");
            languageInfo.put("pygments_lexer", "java");
            languageInfo.put("codemirror_mode", "text/x-java");
            Map<String, Object> ready = new LinkedHashMap<>();
            ready.put("implementation", "cellgate-java");
            ready.put("implementation_version", DRIVER_VERSION);
            ready.put("language_info", languageInfo);
            ready.put("banner", "Java " + Runtime.version() + " (JShell)\n"
                + "cellgate Java driver " + DRIVER_VERSION
                + ": classes, methods, imports and variables persist between cells.");
            return ready;
        }

        private void dispatch(Frame frame) {
            switch (frame.kind) {
                case "execute":
                    execute(frame.text());
                    break;
                case "complete":
                    answer(frame, "complete_reply", this::complete);
                    break;
                case "is_complete":
                    answer(frame, "is_complete_reply", this::isComplete);
                    break;
                case "inspect":
                    answer(frame, "inspect_reply", this::inspect);
                    break;
                case "input_reply":
                case "input_abort":
                    // The answer to an input request of a cell that was interrupted meanwhile.
                    break;
                default:
                    diagnostics.say("ignored an unknown command " + Json.write(frame.kind));
            }
        }

        private interface Request {
            Map<String, Object> answer(Map<String, Object> request);
        }

        /**
         * Answers a request command, falling back to an empty answer if anything goes wrong, so
         * that the runner always gets its reply.
         */
        private void answer(Frame frame, String replyKind, Request compute) {
            Map<String, Object> reply;
            Object request;
            try {
                request = Json.parse(frame.text());
            } catch (IllegalArgumentException malformed) {
                request = null;
            }
            if (!(request instanceof Map)) {
                diagnostics.say("the body of a " + frame.kind + " command is not a JSON object");
                reply = fallbackReply(replyKind, frame);
            } else {
                @SuppressWarnings("unchecked")
                Map<String, Object> fields = (Map<String, Object>) request;
                try {
                    reply = compute.answer(fields);
                } catch (RuntimeException | Error problem) {
                    diagnostics.report(replyKind + " failed", problem);
                    reply = fallbackReply(replyKind, frame);
                }
            }
            events.sendJson(replyKind, reply);
        }

        /** The empty answer to a request, for when there is no better one. */
        private static Map<String, Object> fallbackReply(String replyKind, Frame frame) {
            Map<String, Object> reply = new LinkedHashMap<>();
            switch (replyKind) {
                case "complete_reply":
                    long cursor = 0;
                    try {
                        @SuppressWarnings("unchecked")
                        Map<String, Object> request =
                            (Map<String, Object>) Json.parse(frame.text());
                        String code = stringField(request, "code");
                        cursor = codePointCursor(code, request.get("cursor_pos"));
                    } catch (RuntimeException unreadable) {
                        // Zero it is.
                    }
                    reply.put("matches", new ArrayList<>());
                    reply.put("cursor_start", cursor);
                    reply.put("cursor_end", cursor);
                    reply.put("metadata", new LinkedHashMap<>());
                    break;
                case "is_complete_reply":
                    reply.put("status", "unknown");
                    break;
                default:
                    reply.put("found", false);
                    reply.put("data", new LinkedHashMap<>());
                    reply.put("metadata", new LinkedHashMap<>());
            }
            return reply;
        }

        // -- Interrupts --------------------------------------------------------------------

        /** SIGINT: stops the running cell; ignored while idle. */
        private void onSigint() {
            synchronized (cellLock) {
                if (!cellRunning) {
                    return;
                }
                interrupted = true;
            }
            execution.requestStop();
        }

        private void installSignalHandlers() {
            Signal.handle(new Signal("INT"), sigintHandler);
            try {
                Signal.handle(new Signal("WINCH"), barrierHandler);
            } catch (IllegalArgumentException unavailable) {
                // Without the barrier signal, settleSignals() has nothing to wait for.
            }
        }

        /**
         * Returns once the handler has run for every SIGINT that reached the process before the
         * call.
         *
         * The JVM's signal dispatcher takes pending signals one at a time, lowest number first,
         * and starts a new thread for each handler. So the driver raises SIGWINCH (28) and waits
         * for its handler: by then the dispatcher has started the handler thread of any earlier
         * SIGINT (2), and joining the live "SIGINT handler" threads finishes the job. It all takes
         * well under a millisecond, and is bounded in case a signal is lost.
         */
        private void settleSignals() {
            long target;
            synchronized (barrierLock) {
                target = ++barriersRaised;
            }
            try {
                Signal.raise(new Signal("WINCH"));
            } catch (IllegalArgumentException unavailable) {
                return;
            }
            long deadline = System.nanoTime() + 200_000_000L;
            synchronized (barrierLock) {
                long left;
                while (barriersPassed < target && (left = deadline - System.nanoTime()) > 0) {
                    try {
                        barrierLock.wait(Math.max(1, left / 1_000_000));
                    } catch (InterruptedException ignored) {
                        return;
                    }
                }
            }
            ThreadGroup root = Thread.currentThread().getThreadGroup();
            while (root.getParent() != null) {
                root = root.getParent();
            }
            Thread[] threads = new Thread[root.activeCount() + 16];
            int count = root.enumerate(threads, true);
            for (int i = 0; i < count; i++) {
                if (threads[i].getName().equals("SIGINT handler")) {
                    try {
                        threads[i].join(200);
                    } catch (InterruptedException ignored) {
                        return;
                    }
                }
            }
        }

        private boolean interruptRequested() {
            synchronized (cellLock) {
                return interrupted;
            }
        }

        // -- Rich output -------------------------------------------------------------------

        /** Carries out one call of the display helpers; see bridge(). */
        Object rich(String operation, Object[] arguments) {
            switch (operation) {
                case "display":
                case "update_display": {
                    Object id = arguments[1];
                    if (id == null && operation.equals("update_display")) {
                        throw new IllegalArgumentException("updateDisplay needs a display id");
                    }
                    Map<String, Object> output = new LinkedHashMap<>();
                    output.put("data", mimeBundle(arguments[0]));
                    output.put("metadata", new LinkedHashMap<>());
                    if (id != null) {
                        output.put("transient", Map.of("display_id", String.valueOf(id)));
                    }
                    // What the cell printed before comes first.
                    fences.fence(System.out, System.err, userOut, userErr);
                    events.sendJson(operation, output);
                    return null;
                }
                case "clear_output": {
                    fences.fence(System.out, System.err, userOut, userErr);
                    boolean wait = Boolean.TRUE.equals(arguments[0]);
                    events.sendJson("clear_output", Map.of("wait", wait));
                    return null;
                }
                case "input":
                    return requestInput(String.valueOf(arguments[0]),
                        Boolean.TRUE.equals(arguments[1]));
                case "page": {
                    Map<String, Object> page = new LinkedHashMap<>();
                    page.put("source", "page");
                    page.put("data", Map.of("text/plain", cut(String.valueOf(arguments[0]))));
                    page.put("start", 0);
                    synchronized (payloads) {
                        payloads.add(page);
                    }
                    return null;
                }
                default:
                    throw new IllegalArgumentException("no display operation " + operation);
            }
        }

        /** A Map is a MIME bundle already; any other value is shown as text. */
        private static Map<String, Object> mimeBundle(Object value) {
            Map<String, Object> data = new LinkedHashMap<>();
            if (value instanceof Map) {
                for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                    Object item = entry.getValue();
                    // JSON MIME types carry structures; every other type is text.
                    boolean structured = item instanceof Map || item instanceof List
                        || item instanceof Number || item instanceof Boolean;
                    data.put(String.valueOf(entry.getKey()),
                        structured ? item : cut(String.valueOf(item)));
                }
                if (data.isEmpty()) {
                    data.put("text/plain", "{}");
                }
            } else {
                data.put("text/plain", cut(String.valueOf(value)));
            }
            return data;
        }

        // -- Running cells -----------------------------------------------------------------

        private void execute(String code) {
            cellCount++;
            // Line ends are made uniform so that line numbers mean the same everywhere.
            CellText cell = new CellText(code.replace("\r\n", "\n").replace('\r', '\n'));
            execution.beginCell();
            synchronized (cellLock) {
                cellRunning = true;
                interrupted = false;
            }
            Outcome outcome = new Outcome();
            try {
                runCell(cell, outcome);
            } catch (IllegalStateException closed) {
                // JShell refuses to work once its execution engine has failed.
                diagnostics.report("JShell failed", closed);
                outcome.error = errorPayload("InternalError",
                    "The Java engine failed; restart the kernel",
                    List.of("InternalError: the Java engine failed; restart the kernel"));
            } catch (RuntimeException | Error problem) {
                diagnostics.report("running a cell failed", problem);
                outcome.error = errorPayload("InternalError", String.valueOf(problem),
                    List.of("InternalError: the driver failed to run the cell: " + problem));
            }
            // A cell may have installed its own SIGINT handler; between cells the driver's must be
            // in place, or an interrupt while idle could end the kernel.
            installSignalHandlers();
            // The cell counts as running until its outcome is decided, and an interrupt that
            // reached the process before then belongs to it: a child process that the same
            // SIGINT ended may well have let the cell finish before the JVM ran the handler.
            settleSignals();
            fences.fence(System.out, System.err, userOut, userErr);
            boolean wasInterrupted;
            synchronized (cellLock) {
                cellRunning = false;
                wasInterrupted = interrupted;
            }
            String status = "ok";
            if (wasInterrupted) {
                events.sendJson("error", errorPayload("Interrupted",
                    "Execution was interrupted by SIGINT",
                    List.of("Interrupted: execution was interrupted by SIGINT")));
                status = "error";
            } else if (outcome.error != null) {
                events.sendJson("error", outcome.error);
                status = "error";
            } else if (outcome.result != null && !outcome.exited) {
                events.sendJson("result", outcome.result);
            }
            Map<String, Object> done = new LinkedHashMap<>();
            done.put("status", status);
            synchronized (payloads) {
                if (!payloads.isEmpty()) {
                    done.put("payload", new ArrayList<>(payloads));
                    payloads.clear();
                }
            }
            events.sendJson("done", done);
        }

        /** Evaluates the cell's snippets in order until one fails or the cell is interrupted. */
        private void runCell(CellText cell, Outcome outcome) {
            for (Piece piece : split(cell.text)) {
                if (interruptRequested()) {
                    return;
                }
                String region = cell.text.substring(piece.start, piece.end);
                // JShell numbers the lines of a statement from its first token, but those of a
                // declaration from its first character that is not blank, a comment included. So
                // leading comments and blank lines are left out, and a snippet's line 1 is always
                // the line of its first token.
                int skip = leadingTriviaLength(region);
                String source = piece.source;
                if (!source.startsWith(region.substring(0, skip))) {
                    skip = 0;
                }
                source = source.substring(skip);
                int origin = piece.start + skip;
                List<SnippetEvent> snippetEvents = shell.eval(source);
                if (interruptRequested()) {
                    return;
                }
                SnippetEvent last = null;
                for (SnippetEvent event : snippetEvents) {
                    if (event.causeSnippet() != null) {
                        continue; // An update of an earlier snippet that depends on this one.
                    }
                    Snippet snippet = event.snippet();
                    origins.put(snippet.id(),
                        new SnippetOrigin(cellCount, cell.lineOf(origin) + 1));
                    if (event.status() == Snippet.Status.REJECTED) {
                        outcome.error = compileError(cell, origin, source, snippet);
                        return;
                    }
                    if (event.exception() != null) {
                        if (isExitRequest(event.exception())) {
                            if (event.exception().getMessage().startsWith("System.exit(0)")) {
                                outcome.exited = true;
                            } else {
                                outcome.error = errorPayload("SystemExit",
                                    event.exception().getMessage(),
                                    List.of("SystemExit: " + event.exception().getMessage()));
                            }
                        } else {
                            outcome.error = runtimeError(event.exception());
                        }
                        return;
                    }
                    reportWarnings(cell, origin, source, snippet);
                    reportUnresolved(event);
                    last = event;
                }
                outcome.result = last != null && showsValue(last) ? resultPayload(last.value())
                    : null;
            }
        }

        /** Splits a cell into snippets, the way JShell does. */
        private List<Piece> split(String code) {
            List<Piece> pieces = new ArrayList<>();
            int base = 0;
            String rest = code;
            while (!rest.isEmpty()) {
                CompletionInfo info = analysis.analyzeCompletion(rest);
                Completeness completeness = info.completeness();
                if (completeness == Completeness.EMPTY) {
                    break; // Only blanks and comments are left.
                }
                String remaining = info.remaining();
                int consumed = rest.length() - remaining.length();
                boolean whole = completeness == Completeness.COMPLETE
                    || completeness == Completeness.COMPLETE_WITH_SEMI;
                if (!whole || consumed <= 0 || !rest.endsWith(remaining)) {
                    // Incomplete or unknown input: the rest of the cell is one (failing) snippet.
                    String source = info.source() != null && !whole ? info.source() : rest;
                    if (completeness == Completeness.DEFINITELY_INCOMPLETE
                        || completeness == Completeness.CONSIDERED_INCOMPLETE) {
                        source = rest;
                    }
                    pieces.add(new Piece(base, code.length(), completeness, source));
                    break;
                }
                pieces.add(new Piece(base, base + consumed, completeness, info.source()));
                base += consumed;
                rest = remaining;
            }
            return pieces;
        }

        /** The snippet of `code` that the cursor (a UTF-16 index) is in, or null. */
        private Piece pieceAt(String code, int cursor) {
            for (Piece piece : split(code)) {
                if (piece.end >= cursor || !piece.complete()) {
                    return piece.start <= cursor ? piece : null;
                }
            }
            return null;
        }

        /** Whether the value of this snippet is the kind of thing a cell shows as its result. */
        private static boolean showsValue(SnippetEvent event) {
            if (event.value() == null || event.exception() != null) {
                return false;
            }
            switch (event.snippet().subKind()) {
                case TEMP_VAR_EXPRESSION_SUBKIND: // `1 + 1`, stored in a variable like $3
                case VAR_VALUE_SUBKIND: // `x`
                case OTHER_EXPRESSION_SUBKIND:
                    return true;
                default:
                    // Declarations, assignments, statements and void calls show nothing.
                    return false;
            }
        }

        private static Map<String, Object> resultPayload(String value) {
            Map<String, Object> data = new LinkedHashMap<>();
            data.put("text/plain", cut(value));
            Map<String, Object> result = new LinkedHashMap<>();
            result.put("data", data);
            result.put("metadata", new LinkedHashMap<>());
            return result;
        }

        private static boolean isExitRequest(JShellException exception) {
            return exception instanceof EvalException
                && ExitRequest.class.getName().equals(
                    ((EvalException) exception).getExceptionClassName());
        }

        // -- Errors ------------------------------------------------------------------------

        private static Map<String, Object> errorPayload(String ename, String evalue,
                List<String> traceback) {
            // The whole traceback is kept to what one event can carry, however long the
            // exception's message.
            List<String> lines = new ArrayList<>();
            long size = 0;
            for (String line : traceback) {
                if (size > MAX_TEXT_CHARS) {
                    lines.add("[" + (traceback.size() - lines.size()) + " more lines not shown]");
                    break;
                }
                lines.add(cut(line));
                size += line.length();
            }
            Map<String, Object> error = new LinkedHashMap<>();
            error.put("ename", ename);
            error.put("evalue", cut(evalue));
            error.put("traceback", lines);
            return error;
        }

        /** The error event of a snippet the compiler rejected, with javac-style context. */
        private Map<String, Object> compileError(CellText cell, int origin, String source,
                Snippet snippet) {
            List<String> traceback = new ArrayList<>();
            List<String> messages = new ArrayList<>();
            for (Diag diag : diagnosticsOf(snippet)) {
                if (!diag.isError()) {
                    continue;
                }
                String message = cleanMessage(diag.getMessage(Locale.ROOT));
                messages.add(message);
                traceback.addAll(describeDiagnostic(cell, origin, source, diag, "error", message));
            }
            if (messages.isEmpty()) {
                String message = "the snippet was not accepted";
                messages.add(message);
                int line = cell.lineOf(origin);
                traceback.add("cell " + cellCount + ", line " + (line + 1) + ": error: " + message);
                traceback.add(cell.line(line));
            }
            return errorPayload("CompilationError", String.join("\n", messages), traceback);
        }

        private List<Diag> diagnosticsOf(Snippet snippet) {
            return shell.diagnostics(snippet).collect(Collectors.toList());
        }

        /** Lines like javac's: `cell 3, line 2: error: message`, the source line, a caret. */
        private List<String> describeDiagnostic(CellText cell, int origin, String source,
                Diag diag, String severity, String message) {
            List<String> lines = new ArrayList<>();
            long position = diag.getPosition();
            if (position < 0) {
                position = diag.getStartPosition();
            }
            String[] messageLines = message.split("\n", -1);
            if (position < 0) {
                lines.add("cell " + cellCount + ": " + severity + ": " + messageLines[0]);
            } else {
                int offset = origin + (int) Math.min(position, source.length());
                offset = Math.min(offset, cell.text.length());
                int line = cell.lineOf(offset);
                String text = cell.line(line);
                int column = Math.min(offset - cell.lineStart(line), text.length());
                StringBuilder caret = new StringBuilder();
                for (int i = 0; i < column; i++) {
                    caret.append(text.charAt(i) == '\t' ? '\t' : ' ');
                }
                caret.append('^');
                lines.add("cell " + cellCount + ", line " + (line + 1) + ": " + severity + ": "
                    + messageLines[0]);
                lines.add(text);
                lines.add(caret.toString());
            }
            for (int i = 1; i < messageLines.length; i++) {
                lines.add(messageLines[i]);
            }
            return lines;
        }

        /** Warnings of an accepted snippet go to the user's stderr, as jshell shows them. */
        private void reportWarnings(CellText cell, int origin, String source, Snippet snippet) {
            for (Diag diag : diagnosticsOf(snippet)) {
                if (diag.isError()) {
                    continue;
                }
                String message = cleanMessage(diag.getMessage(Locale.ROOT));
                userErr.println(String.join("\n",
                    describeDiagnostic(cell, origin, source, diag, "warning", message)));
            }
        }

        /**
         * A declaration that uses something not declared yet is accepted, but cannot be used
         * until then; jshell says so, and so does the kernel, on stderr.
         */
        private void reportUnresolved(SnippetEvent event) {
            Snippet.Status status = event.status();
            if (status != Snippet.Status.RECOVERABLE_DEFINED
                && status != Snippet.Status.RECOVERABLE_NOT_DEFINED) {
                return;
            }
            Snippet snippet = event.snippet();
            if (!(snippet instanceof DeclarationSnippet)) {
                return;
            }
            DeclarationSnippet declaration = (DeclarationSnippet) snippet;
            String missing = shell.unresolvedDependencies(declaration)
                .collect(Collectors.joining(", "));
            String use = snippet.kind() == Snippet.Kind.METHOD ? "invoked" : "used";
            userErr.println("note: " + describe(declaration) + " was defined, but it cannot be "
                + use + " until " + missing + (missing.contains(",") ? " are" : " is")
                + " declared");
        }

        private static String describe(DeclarationSnippet snippet) {
            switch (snippet.kind()) {
                case METHOD:
                    return "method " + snippet.name() + "("
                        + ((MethodSnippet) snippet).parameterTypes() + ")";
                case VAR:
                    return "variable " + snippet.name();
                default:
                    String kind = snippet.subKind().name();
                    if (kind.startsWith("INTERFACE")) {
                        return "interface " + snippet.name();
                    }
                    if (kind.startsWith("ENUM")) {
                        return "enum " + snippet.name();
                    }
                    if (kind.startsWith("RECORD")) {
                        return "record " + snippet.name();
                    }
                    if (kind.startsWith("ANNOTATION")) {
                        return "annotation " + snippet.name();
                    }
                    return "class " + snippet.name();
            }
        }

        /** The error event of an exception a snippet threw. */
        private Map<String, Object> runtimeError(JShellException exception) {
            String ename;
            String evalue;
            String header;
            if (exception instanceof UnresolvedReferenceException) {
                DeclarationSnippet snippet =
                    ((UnresolvedReferenceException) exception).getSnippet();
                String missing = shell.unresolvedDependencies(snippet)
                    .collect(Collectors.joining(", "));
                ename = "UnresolvedReferenceException";
                evalue = describe(snippet) + " cannot be "
                    + (snippet.kind() == Snippet.Kind.METHOD ? "invoked" : "used") + " until "
                    + missing + (missing.contains(",") ? " are" : " is") + " declared";
                header = ename + ": " + evalue;
            } else {
                String className = exception instanceof EvalException
                    ? cleanClassName(((EvalException) exception).getExceptionClassName())
                    : exception.getClass().getName();
                ename = simpleName(className);
                evalue = exception.getMessage() == null ? "" : exception.getMessage();
                header = exception.getMessage() == null ? className
                    : className + ": " + exception.getMessage();
            }
            List<String> traceback = new ArrayList<>();
            traceback.addAll(List.of(header.split("\n", -1)));
            addFrames(traceback, exception);
            Set<Throwable> seen = Collections.newSetFromMap(new IdentityHashMap<>());
            seen.add(exception);
            for (Throwable cause = exception.getCause(); cause != null && seen.add(cause);
                    cause = cause.getCause()) {
                String causeName = cause instanceof EvalException
                    ? cleanClassName(((EvalException) cause).getExceptionClassName())
                    : cause.getClass().getName();
                String causeHeader = "Caused by: " + causeName
                    + (cause.getMessage() == null ? "" : ": " + cause.getMessage());
                traceback.addAll(List.of(causeHeader.split("\n", -1)));
                addFrames(traceback, cause);
            }
            return errorPayload(ename, evalue, traceback);
        }

        /** Stack frames, with the cells' frames pointing at cell lines. */
        private void addFrames(List<String> traceback, Throwable exception) {
            StackTraceElement[] frames = exception.getStackTrace();
            int shown = Math.min(frames.length, MAX_FRAMES);
            for (int i = 0; i < shown; i++) {
                traceback.add("    at " + describeFrame(frames[i]));
            }
            if (frames.length > shown) {
                traceback.add("    ... " + (frames.length - shown) + " more");
            }
        }

        private String describeFrame(StackTraceElement frame) {
            String file = frame.getFileName();
            if (file == null || !file.startsWith("#")) {
                return frame.toString();
            }
            // A frame of a snippet: JShell names its file after the snippet's id and leaves
            // the names of its synthetic wrapper class and method empty.
            SnippetOrigin origin = origins.get(file.substring(1));
            String where;
            if (origin != null && frame.getLineNumber() > 0) {
                where = "cell " + origin.cell + ", line "
                    + (origin.firstLine + frame.getLineNumber() - 1);
            } else {
                where = "snippet " + file + (frame.getLineNumber() > 0
                    ? ":" + frame.getLineNumber() : "");
            }
            String className = cleanClassName(frame.getClassName());
            String method = frame.getMethodName();
            String name = className.isEmpty() ? method
                : method.isEmpty() ? className : className + "." + method;
            return name.isEmpty() ? where : name + " (" + where + ")";
        }

        private static final Pattern REPL_PREFIX =
            Pattern.compile("(REPL\\.)?\\$JShell\\$\\d+[A-Z]?\\$");
        private static final Pattern EMPTY_LOCATION =
            Pattern.compile("(?m)^\\s*location: class\\s*$\\n?");

        /** A class name without JShell's wrapper: `REPL.$JShell$12$Point` becomes `Point`. */
        private static String cleanClassName(String name) {
            return name == null ? "" : REPL_PREFIX.matcher(name).replaceAll("");
        }

        /** A compiler message without mentions of JShell's invisible wrapper class. */
        private static String cleanMessage(String message) {
            String clean = REPL_PREFIX.matcher(message).replaceAll("");
            clean = EMPTY_LOCATION.matcher(clean).replaceAll("");
            return clean.replaceAll("\\s+$", "");
        }

        private static String simpleName(String className) {
            String name = className.substring(className.lastIndexOf('.') + 1);
            return name.substring(name.lastIndexOf('$') + 1);
        }

        // -- Input -------------------------------------------------------------------------

        /**
         * Asks the frontend for a line of input on behalf of a cell; null means end of input.
         * Runs on the thread that reads System.in, while the main thread waits in JShell.eval(),
         * so this thread is the only reader of the command queue meanwhile.
         */
        String requestInput(String prompt, boolean password) {
            synchronized (cellLock) {
                if (!cellRunning) {
                    return null;
                }
            }
            // The prompt the cell printed must reach the frontend before the request.
            fences.fence(System.out, System.err, userOut, userErr);
            Map<String, Object> request = new LinkedHashMap<>();
            request.put("prompt", prompt);
            request.put("password", password);
            events.sendJson("input_request", request);
            while (true) {
                Frame frame;
                try {
                    frame = commands.take();
                } catch (InterruptedException interrupted) {
                    return null;
                }
                switch (frame.kind) {
                    case "input_reply":
                        return frame.text();
                    case "input_abort":
                        return null;
                    case "complete":
                        events.sendJson("complete_reply", fallbackReply("complete_reply", frame));
                        break;
                    case "is_complete":
                        events.sendJson("is_complete_reply",
                            fallbackReply("is_complete_reply", frame));
                        break;
                    case "inspect":
                        events.sendJson("inspect_reply", fallbackReply("inspect_reply", frame));
                        break;
                    default:
                        // JShell is in the middle of a cell and cannot take another one.
                        diagnostics.say("ignored a " + frame.kind
                            + " command while a cell waits for input");
                }
            }
        }

        // -- Completion, completeness, inspection ------------------------------------------

        private Map<String, Object> complete(Map<String, Object> request) {
            String code = stringField(request, "code");
            int cursorPoints = codePointCursor(code, request.get("cursor_pos"));
            int cursor = code.offsetByCodePoints(0, cursorPoints);
            List<String> matches = new ArrayList<>();
            int start = cursor;
            Piece piece = pieceAt(code, cursor);
            if (piece != null) {
                String text = code.substring(piece.start, piece.end);
                int[] anchor = new int[1];
                List<SourceCodeAnalysis.Suggestion> suggestions =
                    analysis.completionSuggestions(text, cursor - piece.start, anchor);
                // Suggestions that fit the type expected at the cursor come first, as jshell
                // offers them first.
                Set<String> ordered = new LinkedHashSet<>();
                for (SourceCodeAnalysis.Suggestion suggestion : suggestions) {
                    if (suggestion.matchesType()) {
                        ordered.add(suggestion.continuation());
                    }
                }
                for (SourceCodeAnalysis.Suggestion suggestion : suggestions) {
                    ordered.add(suggestion.continuation());
                }
                matches.addAll(ordered);
                if (!matches.isEmpty()) {
                    start = piece.start + Math.max(0, Math.min(anchor[0], cursor - piece.start));
                }
            }
            Map<String, Object> reply = new LinkedHashMap<>();
            reply.put("matches", matches);
            reply.put("cursor_start", code.codePointCount(0, start));
            reply.put("cursor_end", cursorPoints);
            reply.put("metadata", new LinkedHashMap<>());
            return reply;
        }

        private Map<String, Object> isComplete(Map<String, Object> request) {
            String code = stringField(request, "code").replace("\r\n", "\n").replace('\r', '\n');
            Map<String, Object> reply = new LinkedHashMap<>();
            String status = "complete";
            for (Piece piece : split(code)) {
                if (piece.complete()) {
                    continue;
                }
                status = piece.completeness == Completeness.UNKNOWN ? "invalid" : "incomplete";
            }
            reply.put("status", status);
            if (status.equals("incomplete")) {
                reply.put("indent", nextIndent(code));
            }
            return reply;
        }

        /** The indent of the next line: the last line's, one level deeper after `{` or `(`. */
        private static String nextIndent(String code) {
            String[] lines = code.split("\n");
            for (int i = lines.length - 1; i >= 0; i--) {
                String line = lines[i];
                String trimmed = line.trim();
                if (trimmed.isEmpty()) {
                    continue;
                }
                String indent = line.substring(0, line.length() - line.stripLeading().length());
                if (trimmed.endsWith("{") || trimmed.endsWith("(")) {
                    indent += "    ";
                }
                return indent;
            }
            return "";
        }

        private Map<String, Object> inspect(Map<String, Object> request) {
            String code = stringField(request, "code");
            int cursor = code.offsetByCodePoints(0, codePointCursor(code,
                request.get("cursor_pos")));
            boolean detailed = request.get("detail_level") instanceof Number
                && ((Number) request.get("detail_level")).intValue() > 0;
            List<String> found = new ArrayList<>();
            Piece piece = pieceAt(code, cursor);
            if (piece != null) {
                String text = code.substring(piece.start, piece.end);
                int at = cursor - piece.start;
                List<SourceCodeAnalysis.Documentation> docs =
                    analysis.documentation(text, at, detailed);
                if (docs.isEmpty()) {
                    // JShell documents a method once its call is open: for `Math.max|` try as if
                    // `Math.max(` had been typed.
                    int end = at;
                    while (end < text.length()
                            && Character.isJavaIdentifierPart(text.charAt(end))) {
                        end++;
                    }
                    if (end > 0 && Character.isJavaIdentifierPart(text.charAt(end - 1))) {
                        String call = text.substring(0, end) + "(";
                        docs = analysis.documentation(call, call.length(), detailed);
                    }
                }
                for (SourceCodeAnalysis.Documentation doc : docs) {
                    String javadoc = doc.javadoc();
                    found.add(javadoc == null || javadoc.isEmpty() ? doc.signature()
                        : doc.signature() + "\n" + javadoc);
                }
            }
            Map<String, Object> reply = new LinkedHashMap<>();
            Map<String, Object> data = new LinkedHashMap<>();
            if (!found.isEmpty()) {
                data.put("text/plain", cut(String.join(detailed ? "\n\n" : "\n", found)));
            }
            reply.put("found", !found.isEmpty());
            reply.put("data", data);
            reply.put("metadata", new LinkedHashMap<>());
            return reply;
        }
    }

    // ------------------------------------------------------------------------------------------
    // Helpers.

    static String stringField(Map<String, Object> request, String name) {
        Object value = request.get(name);
        return value instanceof String ? (String) value : "";
    }

    /** A cursor position in code points, clamped to the code; a missing one means the end. */
    static int codePointCursor(String code, Object position) {
        int length = code.codePointCount(0, code.length());
        if (!(position instanceof Number)) {
            return length;
        }
        long cursor = ((Number) position).longValue();
        return cursor < 0 || cursor > length ? length : (int) cursor;
    }

    /** A text shortened to what an event can carry. */
    static String cut(String text) {
        if (text == null || text.length() <= MAX_TEXT_CHARS) {
            return text;
        }
        return text.substring(0, MAX_TEXT_CHARS) + "\n[" + (text.length() - MAX_TEXT_CHARS)
            + " more characters not shown]";
    }

    /** The length of the blanks and comments a snippet's text starts with. */
    static int leadingTriviaLength(String text) {
        int i = 0;
        while (i < text.length()) {
            char c = text.charAt(i);
            if (Character.isWhitespace(c)) {
                i++;
            } else if (text.startsWith("//", i)) {
                int end = text.indexOf('\n', i);
                i = end < 0 ? text.length() : end + 1;
            } else if (text.startsWith("/*", i)) {
                int end = text.indexOf("*/", i + 2);
                if (end < 0) {
                    return i; // An unterminated comment is the compiler's to report.
                }
                i = end + 2;
            } else {
                break;
            }
        }
        return i;
    }

    /** Just enough JSON for the protocol's bodies. */
    static final class Json {
        static String write(Object value) {
            StringBuilder out = new StringBuilder();
            append(out, value);
            return out.toString();
        }

        private static void append(StringBuilder out, Object value) {
            if (value == null) {
                out.append("null");
            } else if (value instanceof String) {
                quote(out, (String) value);
            } else if (value instanceof Boolean) {
                out.append(value.toString());
            } else if (value instanceof Double || value instanceof Float) {
                double number = ((Number) value).doubleValue();
                out.append(Double.isFinite(number) ? Double.toString(number) : "null");
            } else if (value instanceof Number) {
                out.append(((Number) value).longValue());
            } else if (value instanceof Map) {
                out.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                    if (!first) {
                        out.append(',');
                    }
                    first = false;
                    quote(out, String.valueOf(entry.getKey()));
                    out.append(':');
                    append(out, entry.getValue());
                }
                out.append('}');
            } else if (value instanceof Iterable) {
                out.append('[');
                boolean first = true;
                for (Object item : (Iterable<?>) value) {
                    if (!first) {
                        out.append(',');
                    }
                    first = false;
                    append(out, item);
                }
                out.append(']');
            } else {
                quote(out, String.valueOf(value));
            }
        }

        /**
         * A JSON string. Control characters are escaped; a lone surrogate, which cannot be
         * encoded in UTF-8 and which strict JSON readers reject, becomes U+FFFD.
         */
        private static void quote(StringBuilder out, String text) {
            out.append('"');
            for (int i = 0; i < text.length(); i++) {
                char c = text.charAt(i);
                switch (c) {
                    case '"':
                        out.append("\\\"");
                        break;
                    case '\\':
                        out.append("\\\\");
                        break;
                    case '\n':
                        out.append("\\n");
                        break;
                    case '\r':
                        out.append("\\r");
                        break;
                    case '\t':
                        out.append("\\t");
                        break;
                    case '\b':
                        out.append("\\b");
                        break;
                    case '\f':
                        out.append("\\f");
                        break;
                    default:
                        if (c < 0x20) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else if (Character.isHighSurrogate(c)) {
                            if (i + 1 < text.length()
                                && Character.isLowSurrogate(text.charAt(i + 1))) {
                                out.append(c).append(text.charAt(++i));
                            } else {
                                out.append('\uFFFD');
                            }
                        } else if (Character.isLowSurrogate(c)) {
                            out.append('\uFFFD');
                        } else {
                            out.append(c);
                        }
                }
            }
            out.append('"');
        }

        static Object parse(String text) {
            Json parser = new Json(text);
            parser.skipBlanks();
            Object value = parser.value();
            parser.skipBlanks();
            if (parser.at < text.length()) {
                throw parser.failure("unexpected text after the value");
            }
            return value;
        }

        private final String text;
        private int at;

        private Json(String text) {
            this.text = text;
        }

        private IllegalArgumentException failure(String message) {
            return new IllegalArgumentException("bad JSON at offset " + at + ": " + message);
        }

        private void skipBlanks() {
            while (at < text.length() && " \t\r\n".indexOf(text.charAt(at)) >= 0) {
                at++;
            }
        }

        private Object value() {
            if (at >= text.length()) {
                throw failure("unexpected end");
            }
            char c = text.charAt(at);
            switch (c) {
                case '{':
                    return object();
                case '[':
                    return array();
                case '"':
                    return string();
                case 't':
                    return literal("true", Boolean.TRUE);
                case 'f':
                    return literal("false", Boolean.FALSE);
                case 'n':
                    return literal("null", null);
                default:
                    if (c == '-' || (c >= '0' && c <= '9')) {
                        return number();
                    }
                    throw failure("unexpected character " + c);
            }
        }

        private Object literal(String word, Object value) {
            if (!text.startsWith(word, at)) {
                throw failure("expected " + word);
            }
            at += word.length();
            return value;
        }

        private Map<String, Object> object() {
            Map<String, Object> map = new LinkedHashMap<>();
            at++;
            skipBlanks();
            if (at < text.length() && text.charAt(at) == '}') {
                at++;
                return map;
            }
            while (true) {
                skipBlanks();
                if (at >= text.length() || text.charAt(at) != '"') {
                    throw failure("expected a key");
                }
                String key = string();
                skipBlanks();
                expect(':');
                skipBlanks();
                map.put(key, value());
                skipBlanks();
                if (at < text.length() && text.charAt(at) == ',') {
                    at++;
                    continue;
                }
                expect('}');
                return map;
            }
        }

        private List<Object> array() {
            List<Object> list = new ArrayList<>();
            at++;
            skipBlanks();
            if (at < text.length() && text.charAt(at) == ']') {
                at++;
                return list;
            }
            while (true) {
                skipBlanks();
                list.add(value());
                skipBlanks();
                if (at < text.length() && text.charAt(at) == ',') {
                    at++;
                    continue;
                }
                expect(']');
                return list;
            }
        }

        private void expect(char c) {
            if (at >= text.length() || text.charAt(at) != c) {
                throw failure("expected " + c);
            }
            at++;
        }

        private String string() {
            StringBuilder out = new StringBuilder();
            at++;
            while (true) {
                if (at >= text.length()) {
                    throw failure("unterminated string");
                }
                char c = text.charAt(at++);
                if (c == '"') {
                    return out.toString();
                }
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                if (at >= text.length()) {
                    throw failure("unterminated escape");
                }
                char escape = text.charAt(at++);
                switch (escape) {
                    case '"':
                    case '\\':
                    case '/':
                        out.append(escape);
                        break;
                    case 'b':
                        out.append('\b');
                        break;
                    case 'f':
                        out.append('\f');
                        break;
                    case 'n':
                        out.append('\n');
                        break;
                    case 'r':
                        out.append('\r');
                        break;
                    case 't':
                        out.append('\t');
                        break;
                    case 'u':
                        if (at + 4 > text.length()) {
                            throw failure("short \\u escape");
                        }
                        try {
                            out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
                        } catch (NumberFormatException bad) {
                            throw failure("bad \\u escape");
                        }
                        at += 4;
                        break;
                    default:
                        throw failure("bad escape \\" + escape);
                }
            }
        }

        private Object number() {
            int start = at;
            while (at < text.length() && "+-0123456789.eE".indexOf(text.charAt(at)) >= 0) {
                at++;
            }
            String digits = text.substring(start, at);
            try {
                if (digits.matches("-?\\d+")) {
                    return Long.parseLong(digits);
                }
                return Double.parseDouble(digits);
            } catch (NumberFormatException bad) {
                // A number too large for a long is still a number.
                try {
                    return Double.parseDouble(digits);
                } catch (NumberFormatException worse) {
                    throw failure("bad number " + digits);
                }
            }
        }
    }
}
