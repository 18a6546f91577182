"""cellgate's Python 3 language driver.

The kernel runner starts this program once per kernel, as ``python3 -u driver.py`` in the
kernel's working directory, and drives it over the framed protocol of
``docs/driver-protocol.md``: commands arrive on the original stdin and events leave on the
original stdout. User code runs in one persistent ``__main__`` namespace with IPython-like
conveniences: the value of a cell's last expression is shown, rich ``_repr_*_`` methods are
honoured, ``display()`` is a builtin, matplotlib figures appear inline and ``input()`` asks the
frontend. Only the standard library is required.
"""

import signal

# A SIGINT can arrive while the rest of the driver is still loading. Until the real handler is
# installed it must not kill the process, and it must not be ignored with SIG_IGN either,
# because child processes inherit ignored signals and would then be impossible to interrupt.
signal.signal(signal.SIGINT, lambda signum, frame: None)

import ast  # noqa: E402
import builtins  # noqa: E402
import fcntl  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import sys  # noqa: E402
import termios  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402

DRIVER_VERSION = "0.1.0"
PYTHON_VERSION = sys.version.split()[0]

# The longest frame header the protocol allows, newline included.
MAX_HEADER_LEN = 64
# The largest frame body the runner accepts; a bigger event would break the stream.
MAX_BODY = 64 * 1024 * 1024
# How much of an oversized event's text survives; even at the worst case of six bytes of JSON
# per character this stays well under MAX_BODY.
SHRUNK_TEXT_CHARS = 4 * 1024 * 1024
# The bytes a frame kind may be made of.
KIND_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789_"
# How much is read from a pipe at once; below glibc's mmap threshold, so reads stay cheap.
READ_CHUNK = 64 * 1024
# How often a pending input() looks for an interrupt that arrived while it waited.
INPUT_POLL_SECONDS = 0.05

# Every function of this file carries this file name; the SIGINT handler and the traceback
# formatter use it to tell the driver's own frames from the user's.
DRIVER_FILE = (lambda: None).__code__.co_filename

# The code flag of a code object that must be awaited (a cell with top-level `await`).
CO_COROUTINE = 0x0080

# Rich representations, in the order IPython tries them, and the MIME type each produces.
REPR_METHODS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_latex_", "text/latex"),
    ("_repr_json_", "application/json"),
    ("_repr_javascript_", "application/javascript"),
    ("_repr_pdf_", "application/pdf"),
)
# MIME types whose content travels base64-encoded in a bundle.
BINARY_MIME_TYPES = frozenset(("image/png", "image/jpeg", "image/gif", "application/pdf"))
# An attribute no honest object has. An object that claims to have it answers every attribute
# lookup (a mock, a proxy), so its `_repr_*_` methods cannot be trusted to be real.
CANARY_ATTRIBUTE = "_cellgate_canary_method_should_not_exist_"

# JSON for event bodies. `default=str` keeps an odd value in a bundle from losing the event.
JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def json_body(value):
    """The UTF-8 JSON body of an event; lone surrogates become '?' instead of failing."""
    return JSON_ENCODER.encode(value).encode("utf-8", "replace")


def bytes_available(fd):
    """How many bytes can be read from pipe `fd` right now."""
    try:
        answer = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(answer, sys.byteorder, signed=True)
    except OSError:
        # Without FIONREAD, read until the pipe is empty, but never for ever.
        return 16 * READ_CHUNK


class ProtocolError(Exception):
    """The runner sent bytes that are not a frame; the stream cannot be put back in step."""


class ChannelClosed(Exception):
    """The runner closed the control channel."""


class ControlChannel:
    """Frames over the driver's private copies of its original stdin and stdout."""

    def __init__(self, in_fd, out_fd):
        self._in_fd = in_fd
        self._out_fd = out_fd
        self._buffer = bytearray()
        # How many more bytes the frame at the head of the buffer needs, to read it in one go.
        self._missing = 0
        self._write_lock = threading.Lock()
        self._poller = select.poll()
        self._poller.register(in_fd, select.POLLIN)

    def send(self, kind, body=b""):
        """Writes one frame; the lock keeps frames from several threads from interleaving."""
        frame = b"%s %d\n%s" % (kind.encode("ascii"), len(body), body)
        with self._write_lock:
            try:
                view = memoryview(frame)
                while view:
                    view = view[os.write(self._out_fd, view):]
            except OSError:
                # The runner has gone away, so there is nobody left to report to.
                os._exit(0)

    def receive(self, timeout=None):
        """The next command as `(kind, body)`, or None if `timeout` seconds pass first.

        The buffer is only changed by complete, uninterruptible steps, so a call that gives
        up on its timeout leaves the stream in step for the next one.
        """
        while True:
            frame = self._next_buffered_frame()
            if frame is not None:
                return frame
            if timeout is not None and not self._poller.poll(int(timeout * 1000)):
                return None
            chunk = os.read(self._in_fd, max(READ_CHUNK, self._missing))
            if not chunk:
                raise ChannelClosed()
            self._buffer += chunk

    def _next_buffered_frame(self):
        buffer = self._buffer
        newline = buffer.find(b"\n", 0, MAX_HEADER_LEN)
        if newline < 0:
            if len(buffer) >= MAX_HEADER_LEN:
                raise ProtocolError("frame header is longer than %d bytes" % MAX_HEADER_LEN)
            self._missing = 0
            return None
        header = bytes(buffer[:newline])
        kind, _, length = header.partition(b" ")
        if not kind or kind.strip(KIND_BYTES) or not length.isdigit():
            raise ProtocolError("frame header %r is not `KIND LEN`" % header)
        start = newline + 1
        end = start + int(length)
        if len(buffer) < end:
            self._missing = end - len(buffer)
            return None
        body = bytes(buffer[start:end])
        del buffer[:end]
        return kind.decode("ascii"), body


class OutputPipe:
    """Points one of the user's file descriptors at a pipe and forwards what comes out of it.

    A background thread forwards output as it arrives, so that a long cell streams. Before the
    driver sends any other event, `drain` forwards whatever is already in the pipe, so that
    output always precedes the events that follow it. Both run under one lock, so a chunk is
    never forwarded twice or out of order.
    """

    def __init__(self, kind, target_fd, channel):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, target_fd)
        os.close(write_fd)
        # Non-blocking reads let `drain` and the thread race for the same bytes harmlessly.
        os.set_blocking(read_fd, False)
        self._kind = kind
        self._fd = read_fd
        self._channel = channel
        self._lock = threading.Lock()
        thread = threading.Thread(target=self._forward, name="cellgate-" + kind, daemon=True)
        thread.start()

    def _forward(self):
        # Only the main thread may take SIGINT: a signal delivered to this thread would not
        # interrupt a `time.sleep()` running in the main thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while True:
            poller.poll()
            with self._lock:
                try:
                    data = os.read(self._fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                if not data:
                    return
                self._channel.send(self._kind, data)

    def drain(self):
        """Forwards the bytes that are in the pipe now.

        Only what is already there is read: a background process that keeps writing must not
        keep the driver here, and output still on its way belongs to later events anyway.
        """
        with self._lock:
            remaining = bytes_available(self._fd)
            while remaining > 0:
                try:
                    data = os.read(self._fd, min(remaining, READ_CHUNK))
                except BlockingIOError:
                    return
                if not data:
                    return
                remaining -= len(data)
                self._channel.send(self._kind, data)


class FdWriter(io.RawIOBase):
    """The raw layer under `sys.stdout` and `sys.stderr`: writes straight to a descriptor.

    Every write reaches the pipe at once (as with `python -u`), and a write that the pipe takes
    in several pieces is completed rather than cut short. Python code of the driver runs here,
    so an interrupt that lands during a write is postponed until the write is complete;
    `after_write` then delivers it.
    """

    def __init__(self, fd, name, after_write):
        super().__init__()
        self._fd = fd
        self._after_write = after_write
        self.name = name
        self.mode = "wb"

    def writable(self):
        return True

    def fileno(self):
        return self._fd

    def write(self, data):
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            view = view[os.write(self._fd, view):]
        self._after_write()
        return total


class Quitter:
    """`exit` and `quit`: end the cell the way `sys.exit()` does, without closing stdin."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "Use %s() to stop the cell; the kernel keeps running" % self.name

    def __call__(self, code=None):
        raise SystemExit(code)


class ImportPatcher:
    """A meta-path finder that lets the driver adjust a few modules right after they load.

    Patching on import, rather than importing the modules at start, keeps the driver's start
    fast and lets `import matplotlib.pyplot as plt; plt.show()` work within one cell.
    """

    def __init__(self, patches):
        self._patches = patches
        self._searching = set()

    def find_spec(self, fullname, path=None, target=None):
        patch = self._patches.get(fullname)
        if patch is None or fullname in self._searching:
            return None
        import importlib.util

        # Let the ordinary finders locate the module; this finder skips itself meanwhile.
        self._searching.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching.discard(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            try:
                original(module)
            finally:
                del loader.exec_module
            patch(module)

        try:
            loader.exec_module = exec_module
        except (AttributeError, TypeError):
            pass
        return spec


class DisplayHandle:
    """What `display(obj, display_id=...)` returns, as in IPython: a way to show more output
    under the same id, or to replace what is shown."""

    def __init__(self, display, display_id):
        self._show = display
        self.display_id = display_id

    def __repr__(self):
        return "<DisplayHandle display_id=%s>" % self.display_id

    def display(self, obj, **kwargs):
        """Shows `obj` as a new output with this handle's id."""
        kwargs.pop("display_id", None)
        self._show(obj, display_id=self.display_id, **kwargs)

    def update(self, obj, **kwargs):
        """Replaces every output shown with this handle's id by `obj`."""
        kwargs.pop("display_id", None)
        kwargs.pop("update", None)
        self._show(obj, display_id=self.display_id, update=True, **kwargs)


class Driver:
    """One kernel: the user's namespace and everything that runs code in it."""

    def __init__(self):
        self._main_thread = threading.get_ident()
        # True while a cell is being run; a SIGINT outside a cell is ignored.
        self._cell_running = False
        # True while the main thread runs the user's code (or code the user's code calls);
        # only then may a SIGINT raise KeyboardInterrupt.
        self._user_mode = False
        # A SIGINT that arrived during a cell while the driver's own code ran, to be raised
        # as soon as the user's code runs again.
        self._interrupt_pending = False
        self._execution_count = 0
        self._compile_flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._event_loop = None
        self._jedi = None
        self._module_names = (None, [])
        # Figures already shown during the current cell, so its end does not show them twice.
        self._figures_shown = set()

        wake_fd, self._redelivery_fd = os.pipe()
        os.set_blocking(self._redelivery_fd, False)
        threading.Thread(
            target=self._redeliver_interrupts,
            args=(wake_fd,),
            name="cellgate-interrupts",
            daemon=True,
        ).start()
        self._sigint_handler = self._on_sigint
        signal.signal(signal.SIGINT, self._sigint_handler)

        self._setup_channels()
        self._setup_namespace()
        self._setup_builtins()

    # -- Start -------------------------------------------------------------------------

    def _setup_channels(self):
        # The original stdin and stdout become the private control channel. `os.dup` makes
        # descriptors that are not inherited, so child processes cannot write frames.
        control_in = os.dup(0)
        control_out = os.dup(1)
        self._diagnostics = os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")
        self._channel = ControlChannel(control_in, control_out)

        # A crash inside an extension module should leave a trace in the runner's log.
        import faulthandler

        faulthandler.enable(file=self._diagnostics)

        # The user's descriptors: stdin reads nothing, stdout and stderr go through pipes
        # this process reads, which also captures the output of child processes.
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        self._stdout_pipe = OutputPipe("stdout", 1, self._channel)
        self._stderr_pipe = OutputPipe("stderr", 2, self._channel)

        deliver = self._deliver_pending_interrupt
        self._stdout = io.TextIOWrapper(
            FdWriter(1, "<stdout>", deliver),
            encoding="utf-8",
            errors="backslashreplace",
            newline="\n",
            write_through=True,
        )
        self._stderr = io.TextIOWrapper(
            FdWriter(2, "<stderr>", deliver),
            encoding="utf-8",
            errors="backslashreplace",
            newline="\n",
            write_through=True,
        )
        # The interpreter's own stream objects never close their descriptors; they are kept
        # referenced all the same so that nothing about fds 0-2 changes when they are replaced.
        self._original_streams = (sys.stdin, sys.stdout, sys.stderr)
        sys.stdout = sys.__stdout__ = self._stdout
        sys.stderr = sys.__stderr__ = self._stderr

    def _setup_namespace(self):
        # The user's globals belong to a fresh module registered as `__main__`, so that
        # `pickle` and `multiprocessing` find classes and functions defined in cells. The
        # driver's own module stays referenced so that its globals live on.
        self._driver_module = sys.modules.get("__main__")
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
        self.namespace = main.__dict__

        # As in an interactive interpreter: no script arguments, and imports resolve against
        # the working directory rather than the folder the driver was installed in.
        sys.argv = [""]
        driver_dir = os.path.dirname(os.path.realpath(DRIVER_FILE))
        if sys.path and sys.path[0] and os.path.realpath(sys.path[0]) == driver_dir:
            sys.path[0] = ""

    def _setup_builtins(self):
        builtins.input = self._input
        builtins.display = self._display
        builtins.update_display = self._update_display
        builtins.clear_output = self._clear_output
        builtins.exit = Quitter("exit")
        builtins.quit = Quitter("quit")

        # matplotlib draws off-screen, and `plt.show()` sends figures to the frontend.
        os.environ.setdefault("MPLBACKEND", "Agg")
        patches = {
            "matplotlib.pyplot": self._patch_pyplot,
            "getpass": self._patch_getpass,
            # Notebooks often import these from IPython; when it is installed, its functions
            # would only print reprs outside an IPython kernel.
            "IPython.core.display_functions": self._patch_ipython_display,
            "IPython.core.display": self._patch_ipython_display,
        }
        for name, patch in patches.items():
            if name in sys.modules:
                patch(sys.modules[name])
        sys.meta_path.insert(0, ImportPatcher(patches))

    def _patch_pyplot(self, pyplot):
        # A plain function rather than a bound method: matplotlib sets `show.__signature__`.
        def show(*args, **kwargs):
            """Shows every open figure in the frontend and closes it."""
            return self._pyplot_show(*args, **kwargs)

        show.cellgate = True
        pyplot.show = show

    def _patch_getpass(self, getpass_module):
        getpass_module.getpass = self._getpass

    def _patch_ipython_display(self, module):
        # Only names the module really defines: newer IPythons answer the old names through
        # a module `__getattr__` that warns.
        names = vars(module)
        if "display" in names:
            module.display = self._display
        if "clear_output" in names:
            module.clear_output = self._clear_output
        # IPython's `update_display` and `DisplayHandle` call the module's `display` with
        # `update=True`, which the driver's `display` understands, so they are left as they are.

    # -- Events ------------------------------------------------------------------------

    def _log(self, text):
        self._channel.send("log", text.encode("utf-8", "replace"))

    def _flush_output(self):
        """Makes everything written so far reach the runner before the next event."""
        seen = []
        for stream in (sys.stdout, sys.stderr, self._stdout, self._stderr):
            if stream is None or any(stream is other for other in seen):
                continue
            seen.append(stream)
            try:
                stream.flush()
            except Exception:
                pass
        self._stdout_pipe.drain()
        self._stderr_pipe.drain()

    def _emit(self, kind, payload):
        """Sends a JSON event after all output that came before it."""
        self._flush_output()
        body = json_body(payload)
        if len(body) > MAX_BODY:
            body = json_body(_shrink_event(kind, payload))
        self._channel.send(kind, body)

    # -- Interrupts --------------------------------------------------------------------

    def _on_sigint(self, signum, frame):
        """Turns SIGINT into KeyboardInterrupt, but only inside the user's code.

        Raising in the driver's own frames could cut a frame in half or lose a `done`, so
        an interrupt that lands there is remembered and raised at the next safe point.
        """
        if not self._cell_running:
            return
        if self._user_mode and frame is not None and frame.f_code.co_filename != DRIVER_FILE:
            self._interrupt_pending = False
            raise KeyboardInterrupt
        self._interrupt_pending = True
        if self._user_mode:
            # The user's code is about to resume, possibly without passing a point that
            # delivers the interrupt; have the signal sent again shortly.
            try:
                os.write(self._redelivery_fd, b"\0")
            except OSError:
                pass

    def _redeliver_interrupts(self, wake_fd):
        """Re-sends SIGINT to the main thread while a postponed interrupt is undelivered."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        import time

        while True:
            os.read(wake_fd, 4096)
            time.sleep(0.01)
            if self._interrupt_pending and self._cell_running:
                signal.pthread_kill(self._main_thread, signal.SIGINT)

    def _deliver_pending_interrupt(self):
        """Raises a postponed interrupt, when called on behalf of the user's code."""
        if (
            self._interrupt_pending
            and self._user_mode
            and threading.get_ident() == self._main_thread
        ):
            self._interrupt_pending = False
            raise KeyboardInterrupt

    def _enter_user_code(self):
        self._user_mode = True
        self._deliver_pending_interrupt()

    # -- Main loop ---------------------------------------------------------------------

    def serve(self):
        self._emit(
            "ready",
            {
                "implementation": "cellgate-python",
                "implementation_version": DRIVER_VERSION,
                "language_info": {
                    "name": "python",
                    "version": PYTHON_VERSION,
                    "mimetype": "text/x-python",
                    "file_extension": ".py",
                    "pygments_lexer": "ipython3",
                    "codemirror_mode": {"name": "ipython", "version": 3},
                },
                "banner": "Python %s\ncellgate Python driver %s"
                % (sys.version.replace("\n", " "), DRIVER_VERSION),
            },
        )
        while True:
            try:
                kind, body = self._channel.receive()
            except ChannelClosed:
                self._exit(0)
            except ProtocolError as problem:
                self._diagnostics.write("cellgate driver: %s\n" % problem)
                self._exit(2)
            try:
                self._dispatch(kind, body)
            except (Exception, KeyboardInterrupt) as problem:
                # A bug in the driver must not end the kernel.
                self._log("driver error handling %s: %s" % (kind, _format_exception(problem)))

    def _dispatch(self, kind, body, waiting_for_input=False):
        if kind == "execute":
            if waiting_for_input:
                self._log("ignored an execute command while a cell waits for input")
                return
            self._execute(body.decode("utf-8", "replace"))
        elif kind == "complete":
            self._answer("complete_reply", self._complete, body, _EMPTY_COMPLETION)
        elif kind == "is_complete":
            self._answer("is_complete_reply", self._is_complete, body, {"status": "unknown"})
        elif kind == "inspect":
            self._answer("inspect_reply", self._inspect, body, _NOT_FOUND)
        elif kind == "shutdown":
            self._exit(0)
        elif kind in ("input_reply", "input_abort"):
            # The answer to an input() that was interrupted before the answer came.
            pass
        else:
            self._log("ignored unknown command %r" % kind)

    def _answer(self, reply_kind, compute, body, fallback):
        """Answers a request command, with `fallback` if anything goes wrong, so the runner
        always gets its reply."""
        try:
            reply = compute(json.loads(body))
        except Exception as problem:
            self._log("%s failed: %s" % (reply_kind, _format_exception(problem)))
            reply = dict(fallback)
            if reply_kind == "complete_reply":
                reply["cursor_start"] = reply["cursor_end"] = _cursor_of(body)
        self._emit(reply_kind, reply)

    def _exit(self, status):
        """Leaves at once: atexit callbacks run, but non-daemon threads are not waited for."""
        import atexit

        try:
            atexit._run_exitfuncs()
            self._flush_output()
        except BaseException:
            pass
        os._exit(status)

    # -- Running cells -----------------------------------------------------------------

    def _execute(self, source):
        self._execution_count += 1
        filename = "<cell %d>" % self._execution_count
        # Tracebacks and `inspect.getsource` find the cell's lines here; an entry without a
        # modification time is never thrown away by `linecache.checkcache`.
        lines = [line + "\n" for line in _source_lines(source)]
        linecache.cache[filename] = (len(source), None, lines, filename)
        self._figures_shown.clear()
        self._interrupt_pending = False
        self._cell_running = True
        failed = True
        payload = []
        try:
            help_request = _help_request(source)
            if help_request is None:
                failed = self._run_cell(source, filename)
            else:
                payload = self._page_help(*help_request)
                failed = payload is None
        except BaseException as problem:
            # A bug in the driver: the user should still see that the cell did not finish.
            self._log("driver error running a cell: %s" % _format_exception(problem))
            try:
                self._send_error(problem)
            except BaseException:
                pass
        finally:
            self._user_mode = False
            self._cell_running = False
            self._interrupt_pending = False
        # A cell may have installed its own SIGINT handler; between cells the driver's must be
        # in place, or an interrupt while idle could end the kernel.
        if signal.getsignal(signal.SIGINT) is not self._sigint_handler:
            signal.signal(signal.SIGINT, self._sigint_handler)
        done = {"status": "error" if failed else "ok"}
        if not failed and payload:
            done["payload"] = payload
        self._emit("done", done)

    def _page_help(self, name, detail_level):
        """IPython's `name?` and `name??`: help for `name` as a pager payload of the execute
        reply, or a note on stdout when there is no such object; None after an interrupt."""
        try:
            self._enter_user_code()
            try:
                # Looking up attributes may run the user's properties.
                obj = self._resolve(name)
            finally:
                self._user_mode = False
        except KeyboardInterrupt as problem:
            self._send_error(problem)
            return None
        except Exception:
            self._stdout.write("Object `%s` not found.\n" % name)
            return []
        text = _describe(name, obj, detail_level)
        return [{"source": "page", "data": {"text/plain": text}, "start": 0}]

    def _run_cell(self, source, filename):
        """Runs one cell and sends its result or error; True when the cell failed."""
        try:
            body_code, expression_code, quiet = self._compile_cell(source, filename)
        except Exception as problem:
            self._send_error(problem)
            return True

        error = None
        result = None
        try:
            self._enter_user_code()
            try:
                if body_code is not None:
                    self._run_code(body_code)
                if expression_code is not None:
                    value = self._run_code(expression_code)
                    if value is not None and not quiet:
                        result = self._mime_bundle(value)
                        self._remember_result(value)
            finally:
                self._user_mode = False
        except SystemExit as exit_request:
            # Like IPython: a clean exit ends the cell quietly, any other is an error.
            if exit_request.code is not None and exit_request.code != 0:
                error = exit_request
        except BaseException as problem:
            error = problem

        if error is not None:
            self._send_error(error)
        elif result is not None:
            data, metadata = result
            self._emit("result", {"data": data, "metadata": metadata})

        figure_error = self._show_figures_at_end_of_cell()
        if figure_error is not None:
            if error is None:
                self._send_error(figure_error)
                error = figure_error
            else:
                self._stderr.write(_format_exception(figure_error) + "\n")
        return error is not None

    def _compile_cell(self, source, filename):
        """The cell's statements and its final expression as two code objects.

        The final expression is compiled on its own so that its value can be shown, as
        IPython does; a trailing semicolon hides it.
        """
        flags = self._compile_flags
        tree = compile(source, filename, "exec", flags | ast.PyCF_ONLY_AST, dont_inherit=True)
        statements = tree.body
        last = statements[-1] if statements and isinstance(statements[-1], ast.Expr) else None
        if last is not None:
            statements = statements[:-1]
        body_code = expression_code = None
        if statements:
            module = ast.Module(body=statements, type_ignores=[])
            body_code = compile(module, filename, "exec", flags, dont_inherit=True)
            # `from __future__ import ...` in one cell holds for every later cell.
            self._compile_flags |= body_code.co_flags & _future_flags()
        quiet = False
        if last is not None:
            expression = ast.Expression(body=last.value)
            expression_code = compile(
                expression, filename, "eval", self._compile_flags, dont_inherit=True
            )
            quiet = _followed_by_semicolon(source, last)
        return body_code, expression_code, quiet

    def _run_code(self, code):
        value = eval(code, self.namespace)
        if code.co_flags & CO_COROUTINE:
            value = self._run_coroutine(value)
        return value

    def _run_coroutine(self, coroutine):
        """Runs a cell that uses top-level `await` on an event loop kept across cells."""
        import asyncio

        loop = self._event_loop
        if loop is None or loop.is_closed():
            loop = self._event_loop = asyncio.new_event_loop()
        task = loop.create_task(coroutine)
        try:
            return loop.run_until_complete(task)
        except BaseException:
            # An interrupted cell must not leave its coroutine behind to resume in a later
            # cell: cancel it and let its `finally` blocks run.
            if not task.done():
                task.cancel()
                try:
                    loop.run_until_complete(task)
                except BaseException:
                    pass
            raise

    def _remember_result(self, value):
        namespace = self.namespace
        namespace["___"] = namespace.get("__", "")
        namespace["__"] = namespace.get("_", "")
        namespace["_"] = value

    def _send_error(self, problem):
        self._emit(
            "error",
            {
                "ename": type(problem).__name__,
                "evalue": _safe_str(problem),
                "traceback": _traceback_lines(problem),
            },
        )

    # -- Rich output -------------------------------------------------------------------

    def _display(
        self,
        *objs,
        raw=False,
        metadata=None,
        include=None,
        exclude=None,
        display_id=None,
        transient=None,
        update=False,
        **_ignored,
    ):
        """Shows each object as rich output, the way IPython's `display()` does.

        With `raw=True` each object is taken to be a MIME bundle already. A `display_id`
        (`True` makes a new one) names the output so that a later `update_display()`, or the
        returned `DisplayHandle`, can replace it; `update=True` replaces it now.
        """
        if display_id is True:
            display_id = os.urandom(16).hex()
        transient = dict(transient or {})
        if display_id is not None:
            transient["display_id"] = str(display_id)
        if update and "display_id" not in transient:
            raise TypeError("display(..., update=True) needs a display_id")
        kind = "update_display" if update else "display"
        for obj in objs:
            if raw:
                data, extra = dict(obj), {}
            else:
                data, extra = self._mime_bundle(obj, include, exclude)
            if metadata:
                extra = dict(extra, **metadata)
            event = {"data": data, "metadata": extra}
            if transient:
                event["transient"] = transient
            self._emit(kind, event)
        self._deliver_pending_interrupt()
        if display_id is not None and not update:
            return DisplayHandle(self._display, transient["display_id"])
        return None

    def _update_display(self, obj, *, display_id, **kwargs):
        """IPython's `update_display()`: replaces the output shown with this `display_id`."""
        kwargs.pop("update", None)
        self._display(obj, display_id=display_id, update=True, **kwargs)

    def _clear_output(self, wait=False):
        """IPython's `clear_output()`: clears the cell's output, or with `wait=True` clears
        it once new output arrives."""
        self._emit("clear_output", {"wait": bool(wait)})
        self._deliver_pending_interrupt()

    def _mime_bundle(self, obj, include=None, exclude=None):
        """The MIME bundle and metadata for `obj`: its rich reprs plus `text/plain`.

        A failing rich repr is reported on stderr and skipped, as IPython does; a failing
        `repr()` is the cell's error.
        """
        data = {}
        metadata = {}
        if _trusts_attributes(obj):
            method = _method(obj, "_repr_mimebundle_")
            if method is not None:
                produced = self._call_repr(method, include=include, exclude=exclude)
                if isinstance(produced, tuple) and len(produced) == 2:
                    produced, extra = produced
                    if isinstance(extra, dict):
                        metadata.update(extra)
                if isinstance(produced, dict):
                    for mime, value in produced.items():
                        value = _bundle_value(mime, value)
                        if value is not None:
                            data[mime] = value
            for name, mime in REPR_METHODS:
                if mime in data:
                    continue
                method = _method(obj, name)
                if method is None:
                    continue
                produced = self._call_repr(method)
                if isinstance(produced, tuple) and len(produced) == 2:
                    produced, extra = produced
                    if extra:
                        metadata[mime] = extra
                value = _bundle_value(mime, produced)
                if value is not None:
                    data[mime] = value
        if _is_figure(obj):
            png = _figure_png(obj)
            if png is not None:
                data["image/png"] = png
            self._figures_shown.add(id(obj))
        if "text/plain" not in data:
            data["text/plain"] = _plain_text(obj)
        if include:
            data = {mime: value for mime, value in data.items() if mime in include}
        if exclude:
            data = {mime: value for mime, value in data.items() if mime not in exclude}
        return data, metadata

    def _call_repr(self, method, **kwargs):
        try:
            return method(**kwargs)
        except Exception as problem:
            name = getattr(method, "__name__", "repr")
            self._stderr.write("Error in %s:\n%s\n" % (name, _format_exception(problem)))
            return None

    # -- matplotlib --------------------------------------------------------------------

    def _pyplot_show(self, *args, **kwargs):
        """`plt.show()`: sends every open figure to the frontend and closes it."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            self._show_open_figures(pyplot, skip_shown=False)
        self._deliver_pending_interrupt()

    def _show_open_figures(self, pyplot, skip_shown):
        from matplotlib._pylab_helpers import Gcf

        try:
            for manager in Gcf.get_all_fig_managers():
                figure = manager.canvas.figure
                if skip_shown and id(figure) in self._figures_shown:
                    continue
                data, metadata = self._mime_bundle(figure)
                self._emit("display", {"data": data, "metadata": metadata})
        finally:
            pyplot.close("all")

    def _show_figures_at_end_of_cell(self):
        """Shows the figures a cell left open, like IPython's inline backend; returns the
        exception drawing them raised, if any."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return None
        if not getattr(getattr(pyplot, "show", None), "cellgate", False):
            self._patch_pyplot(pyplot)
        try:
            # Drawing runs the user's data through matplotlib, so it may be interrupted.
            self._enter_user_code()
            try:
                self._show_open_figures(pyplot, skip_shown=True)
            finally:
                self._user_mode = False
        except BaseException as problem:
            return problem
        return None

    # -- input() -----------------------------------------------------------------------

    def _input(self, prompt=""):
        """`input()`: asks the frontend for a line; the prompt is shown there, not printed."""
        return self._request_input(str(prompt), False)

    def _getpass(self, prompt="Password: ", stream=None):
        """`getpass.getpass()`: like `input()`, but the frontend hides what is typed."""
        return self._request_input(str(prompt), True)

    def _request_input(self, prompt, password):
        # Only the main thread of a running cell may read the control channel; anywhere
        # else there is no frontend waiting, which is what end-of-file means.
        if threading.get_ident() != self._main_thread or not self._cell_running:
            raise EOFError("EOF when reading a line")
        self._emit("input_request", {"prompt": prompt, "password": password})
        while True:
            try:
                command = self._channel.receive(timeout=INPUT_POLL_SECONDS)
            except ChannelClosed:
                self._exit(0)
            if command is None:
                self._deliver_pending_interrupt()
                continue
            kind, body = command
            if kind == "input_reply":
                return body.decode("utf-8", "replace")
            if kind == "input_abort":
                raise EOFError("EOF when reading a line")
            # A request answered meanwhile must not be cut short by an interrupt, or its
            # reply would never be sent; an interrupt waits until the loop comes round.
            user_mode, self._user_mode = self._user_mode, False
            try:
                self._dispatch(kind, body, waiting_for_input=True)
            finally:
                self._user_mode = user_mode

    # -- Introspection -----------------------------------------------------------------

    def _complete(self, request):
        code = request.get("code", "")
        cursor = _clamp_cursor(request.get("cursor_pos"), code)
        matches, start = self._completions(code, cursor)
        return {"matches": matches, "cursor_start": start, "cursor_end": cursor, "metadata": {}}

    def _completions(self, code, cursor):
        """Completions for the text before `cursor`, and where the text they replace starts.

        Names, dotted attribute chains and imports are completed from the live namespace,
        as rlcompleter does; anything else is left to jedi when it is installed.
        """
        import re

        before = code[:cursor]
        line = before[before.rfind("\n") + 1:]
        imported = _import_completions(line, self)
        if imported is not None:
            matches, token = imported
            return matches, cursor - len(token)

        token = re.search(r"[\w.]*$", before).group()
        expression, dot, prefix = token.rpartition(".")
        matches = None
        if not dot:
            if not token or token.isidentifier():
                names = set(self.namespace) | set(dir(builtins))
                names.update(_keywords())
                matches = _visible(names, token)
        elif all(part.isidentifier() for part in expression.split(".")):
            try:
                obj = self._resolve(expression)
            except Exception:
                obj = _UNRESOLVED
            if obj is not _UNRESOLVED:
                matches = [expression + "." + name for name in _visible(_attributes(obj), prefix)]
        if matches:
            return matches, cursor - len(token)
        return self._jedi_completions(code, cursor)

    def _jedi_completions(self, code, cursor):
        jedi = self._load_jedi()
        if jedi is None:
            return [], cursor
        before = code[:cursor]
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1)
        try:
            completions = jedi.Interpreter(code, [self.namespace]).complete(line, column)
        except Exception:
            return [], cursor
        matches = []
        start = None
        for completion in completions:
            typed = len(completion.name) - len(completion.complete)
            if start is None:
                start = cursor - typed
            if cursor - typed == start:
                matches.append(completion.name_with_symbols)
        return matches, cursor if start is None else start

    def _load_jedi(self):
        if self._jedi is None:
            try:
                import jedi
            except Exception:
                jedi = False
            self._jedi = jedi
        return self._jedi or None

    def _resolve(self, dotted):
        """The object a dotted name stands for in the user's namespace."""
        first, *rest = dotted.split(".")
        if first in self.namespace:
            obj = self.namespace[first]
        else:
            obj = getattr(builtins, first)
        for name in rest:
            obj = getattr(obj, name)
        return obj

    def _is_complete(self, request):
        status, indent = _completeness(request.get("code", ""))
        reply = {"status": status}
        if indent is not None:
            reply["indent"] = indent
        return reply

    def _inspect(self, request):
        code = request.get("code", "")
        cursor = _clamp_cursor(request.get("cursor_pos"), code)
        detail = request.get("detail_level", 0) or 0
        for name in _names_at(code, cursor):
            try:
                obj = self._resolve(name)
            except Exception:
                continue
            text = _describe(name, obj, detail)
            return {"found": True, "data": {"text/plain": text}, "metadata": {}}
        return dict(_NOT_FOUND)


# -- Helpers for rich output -------------------------------------------------------------


def _trusts_attributes(obj):
    """Whether `obj`'s `_repr_*_` attributes can be believed (see CANARY_ATTRIBUTE)."""
    if isinstance(obj, type):
        # A class has its instances' repr methods as plain functions; they are not its own.
        return False
    try:
        return getattr(obj, CANARY_ATTRIBUTE, None) is None
    except Exception:
        return False


def _method(obj, name):
    try:
        method = getattr(obj, name, None)
    except Exception:
        return None
    return method if callable(method) else None


def _bundle_value(mime, value):
    """`value` as it must appear in a MIME bundle, or None if it cannot."""
    if value is None:
        return None
    if mime in BINARY_MIME_TYPES:
        if isinstance(value, (bytes, bytearray, memoryview)):
            import binascii

            return binascii.b2a_base64(bytes(value), newline=False).decode("ascii")
        return str(value)
    if mime == "application/json" or mime.endswith("+json"):
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        try:
            # Strict JSON: the runner cannot read NaN or Infinity.
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return None
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _shrink_event(kind, payload):
    """A version of an event too big for one frame that keeps the start of its text."""

    def cut(text):
        text = str(text)
        if len(text) <= SHRUNK_TEXT_CHARS:
            return text
        return text[:SHRUNK_TEXT_CHARS] + "\n[%d more characters not shown]" % (
            len(text) - SHRUNK_TEXT_CHARS
        )

    if kind == "error":
        traceback_lines = payload.get("traceback") or []
        return {
            "ename": payload.get("ename", ""),
            "evalue": cut(payload.get("evalue", "")),
            "traceback": [cut("\n".join(traceback_lines))],
        }
    if kind in ("result", "display"):
        text = payload.get("data", {}).get("text/plain", "")
        return {"data": {"text/plain": cut(text)}, "metadata": {}}
    if kind == "complete_reply":
        return dict(payload, matches=payload.get("matches", [])[:10000])
    if kind == "inspect_reply" and payload.get("found"):
        return dict(payload, data={"text/plain": cut(payload["data"].get("text/plain", ""))})
    return payload


def _plain_text(obj):
    """`repr(obj)`, pretty-printed over several lines for long built-in containers."""
    text = repr(obj)
    if type(obj) in (dict, list, tuple, set, frozenset) and 79 < len(text) < 100_000:
        import pprint

        text = pprint.pformat(obj, width=79, sort_dicts=False)
    return text


def _is_figure(obj):
    figure_module = sys.modules.get("matplotlib.figure")
    return figure_module is not None and isinstance(obj, figure_module.Figure)


def _figure_png(figure):
    """A figure as base64 PNG, or None for a figure with nothing drawn (as IPython does)."""
    if not figure.axes and not getattr(figure, "lines", None):
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return _bundle_value("image/png", buffer.getvalue())


# -- Helpers for running cells -----------------------------------------------------------


def _future_flags():
    import __future__

    flags = 0
    for name in __future__.all_feature_names:
        flags |= getattr(__future__, name).compiler_flag
    return flags


def _followed_by_semicolon(source, statement):
    """Whether the cell's final expression statement is followed by `;` (IPython's way to
    hide a value)."""
    lines = _source_lines(source)
    if statement.end_lineno is None or statement.end_lineno > len(lines):
        return False
    # AST column offsets count UTF-8 bytes.
    line = lines[statement.end_lineno - 1].encode("utf-8")
    rest = line[statement.end_col_offset:].decode("utf-8", "replace")
    return rest.lstrip().startswith(";")


def _source_lines(source):
    """The lines of a cell as the parser counts them: only LF, CRLF and CR end a line."""
    return source.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _safe_str(obj):
    try:
        return str(obj)
    except Exception:
        return "<unprintable %s object>" % type(obj).__name__


def _traceback_lines(problem):
    """The traceback of `problem` as lines, without the driver's own frames."""
    import traceback

    try:
        report = traceback.TracebackException(type(problem), problem, problem.__traceback__)
    except Exception:
        return ["%s: %s" % (type(problem).__name__, _safe_str(problem))]
    pending = [report]
    seen = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.stack = traceback.StackSummary.from_list(
            [frame for frame in current.stack if frame.filename != DRIVER_FILE]
        )
        pending.append(current.__cause__)
        pending.append(current.__context__)
        pending.extend(getattr(current, "exceptions", None) or ())
    try:
        text = "".join(report.format())
    except Exception:
        text = "%s: %s" % (type(problem).__name__, _safe_str(problem))
    return text.rstrip("\n").split("\n")


def _format_exception(problem):
    import traceback

    return "".join(traceback.format_exception(type(problem), problem, problem.__traceback__))


# -- Helpers for completion and inspection ------------------------------------------------

_UNRESOLVED = object()
_EMPTY_COMPLETION = {"matches": [], "cursor_start": 0, "cursor_end": 0, "metadata": {}}
_NOT_FOUND = {"found": False, "data": {}, "metadata": {}}


def _clamp_cursor(cursor, code):
    if not isinstance(cursor, int) or cursor < 0 or cursor > len(code):
        return len(code)
    return cursor


def _cursor_of(body):
    try:
        request = json.loads(body)
        return _clamp_cursor(request.get("cursor_pos"), request.get("code", ""))
    except Exception:
        return 0


def _keywords():
    import keyword

    return keyword.kwlist


def _visible(names, prefix):
    """The names that start with `prefix`, sorted; private names only once `_` is typed."""
    show_private = prefix.startswith("_")
    return sorted(
        name
        for name in set(names)
        if name.startswith(prefix) and (show_private or not name.startswith("_"))
    )


def _attributes(obj):
    try:
        names = set(dir(obj))
    except Exception:
        names = set()
    cls = getattr(obj, "__class__", None)
    if cls is not None and cls is not type:
        try:
            names.update(dir(cls))
        except Exception:
            pass
    return names


def _import_completions(line, driver):
    """Completions inside an import statement: `(matches, token)`, or None elsewhere."""
    import re

    match = re.match(r"\s*(?:import\s+(?:[\w.]+\s*(?:as\s+\w+\s*)?,\s*)*|from\s+)([\w.]*)$", line)
    if match is not None:
        token = match.group(1)
        return _module_completions(token, driver), token
    match = re.match(r"\s*from\s+([\w.]+)\s+import\s+(?:.*,\s*)?(\w*)$", line)
    if match is not None:
        module_name, prefix = match.groups()
        names = set(_submodules(module_name))
        module = sys.modules.get(module_name)
        if module is not None:
            names.update(_attributes(module))
        return _visible(names, prefix), prefix
    return None


def _module_completions(token, driver):
    package, dot, prefix = token.rpartition(".")
    if dot:
        return [package + "." + name for name in _visible(_submodules(package), prefix)]
    key = tuple(sys.path)
    if driver._module_names[0] != key:
        import pkgutil

        names = set(sys.builtin_module_names)
        names.update(name for name in sys.modules if "." not in name)
        try:
            names.update(module.name for module in pkgutil.iter_modules())
        except Exception:
            pass
        driver._module_names = (key, sorted(names))
    return _visible(driver._module_names[1], prefix)


def _submodules(package):
    """The submodule names of `package`, found without importing them."""
    import importlib.util
    import pkgutil

    try:
        spec = importlib.util.find_spec(package)
    except Exception:
        return []
    locations = getattr(spec, "submodule_search_locations", None)
    if not locations:
        return []
    try:
        return [module.name for module in pkgutil.iter_modules(list(locations))]
    except Exception:
        return []


def _names_at(code, cursor):
    """The dotted names worth inspecting at `cursor`: the one under it, then the function
    whose call the cursor is in."""
    import re

    names = []
    before = code[:cursor]
    left = re.search(r"[\w.]*$", before).group()
    right = re.match(r"\w*", code[cursor:]).group()
    name = (left + right).strip(".")
    if name:
        names.append(name)
    depth = 0
    for index in range(len(before) - 1, -1, -1):
        char = before[index]
        if char in ")]}":
            depth += 1
        elif char in "([{":
            if depth == 0:
                if char == "(":
                    callee = re.search(r"[\w.]*$", before[:index]).group().strip(".")
                    if callee and callee not in names:
                        names.append(callee)
                break
            depth -= 1
    return [
        name for name in names if all(part.isidentifier() for part in name.split("."))
    ]


def _help_request(source):
    """`(name, detail_level)` when the cell is IPython's help syntax (`name?`, `name??`,
    `?name`, `??name`), else None. None of these is valid Python, so no cell changes meaning."""
    import re

    match = re.fullmatch(r"\s*(\?{0,2})\s*([^\W\d][\w.]*)\s*(\?{0,2})\s*", source)
    if match is None:
        return None
    before, name, after = match.groups()
    marks = before or after
    if not marks or (before and after) or not all(
        part.isidentifier() for part in name.split(".")
    ):
        return None
    return name, len(marks) - 1


def _describe(name, obj, detail_level):
    """IPython-style help text for `obj`: signature, docstring, file and type."""
    import inspect

    fields = []
    if callable(obj):
        try:
            signature = str(inspect.signature(obj))
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            label = "Init signature" if inspect.isclass(obj) else "Signature"
            fields.append((label, name + signature))
    is_code = inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)
    if not is_code:
        try:
            form = repr(obj)
        except Exception:
            form = "<unprintable>"
        if len(form) > 200:
            form = form[:100] + " ... " + form[-95:]
        fields.append(("String form", form))
        try:
            length = len(obj)
        except Exception:
            length = None
        if length is not None:
            fields.append(("Length", str(length)))
    source = None
    if detail_level and is_code:
        try:
            source = inspect.getsource(obj)
        except (OSError, TypeError):
            source = None
    try:
        filename = inspect.getsourcefile(obj) or inspect.getfile(obj)
    except (TypeError, OSError):
        filename = None
    if filename and not filename.startswith("<"):
        fields.append(("File", filename))
    fields.append(("Type", type(obj).__name__))

    width = max(len(label) for label, _ in fields) + 2
    lines = ["%-*s%s" % (width, label + ":", value) for label, value in fields]
    if source is not None:
        lines.append("Source:")
        lines.append(source.rstrip("\n"))
    else:
        doc = inspect.getdoc(obj)
        lines.append("Docstring:" if doc else "Docstring: <no docstring>")
        if doc:
            lines.append(doc)
    return "\n".join(lines)


def _completeness(code):
    """`(status, indent)` for `is_complete`, after IPython's rules.

    codeop decides between complete, incomplete and invalid. On top of that, a cell whose
    last line is still inside an indented block is incomplete until it ends with an empty
    line, so that a console keeps the block open.
    """
    import codeop

    if not code.strip():
        return "complete", None
    lines = code.split("\n")
    last_line = next((line for line in reversed(lines) if line.strip()), "")
    indent = last_line[: len(last_line) - len(last_line.lstrip())]
    if code.rstrip(" \t").endswith("\\"):
        return "incomplete", indent
    compiler = codeop.CommandCompiler()
    compiler.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        compiled = compiler(code, "<input>", "exec")
    except (SyntaxError, OverflowError, ValueError, TypeError, MemoryError, RecursionError):
        return "invalid", None
    if compiled is None:
        if _strip_comment(last_line).rstrip().endswith(":"):
            indent += "    "
        return "incomplete", indent
    if not code.endswith("\n") and _inside_block(code):
        return "incomplete", indent
    return "complete", None


def _strip_comment(line):
    import io as _io
    import tokenize

    try:
        tokens = list(tokenize.generate_tokens(_io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError):
        return line
    for token in tokens:
        if token.type == tokenize.COMMENT:
            return line[: token.start[1]]
    return line


def _inside_block(code):
    """Whether the code's last statement is in an indented block that is still open."""
    import tokenize

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    trailing = [token for token in tokens if token.type != tokenize.ENDMARKER]
    # The block closes only at the end of the input, so a DEDENT comes last.
    return bool(trailing) and trailing[-1].type == tokenize.DEDENT


def main():
    Driver().serve()


if __name__ == "__main__":
    main()
