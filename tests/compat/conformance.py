"""Runs the `jupyter_kernel_test` conformance suite against one cellgate kernel, through
jupyter_server's own gateway client: the code nbclient and papermill run when given
`kernel_manager_class=jupyter_server.gateway.managers.GatewayKernelManager`.

Usage:
    python3 conformance.py GATEWAY_URL TOKEN KERNELSPEC [--samples DIR] [-k PATTERN]

GATEWAY_URL is cellgate's https address (its self-signed certificate is fetched and trusted
for this run); TOKEN may be empty for a gateway without authentication. The script prints
one line per test (PASS, SKIP with the reason, FAIL with the assertion) and a summary line
`KERNELSPEC: N passed, N skipped, N failed`; it exits non-zero when anything failed.

The kernel is started by an unmodified `GatewayKernelManager` and spoken to by an unmodified
`GatewayKernelClient`, configured through `GatewayClient.instance()` (url, auth_token,
validate_cert=False). The glue here only does what `KernelTests.setUpClass`/`tearDownClass`
would do with a local kernel (and remembers the last cell a test ran, so that a failure report
shows the error behind KernelTests' bare "'error' != 'ok'"), plus two things jupyter_server
leaves out:

* `GatewayKernelClient` is an asynchronous client, while `KernelTests` calls the blocking
  API (`kc.get_shell_msg(timeout=...)`); `BlockingGatewayClient` runs its coroutines to
  completion, as jupyter_client's own `BlockingKernelClient` does.
* `GatewayKernelClient.start_channels` opens its websocket (websocket-client's
  `create_connection`) without the gateway's headers and without `validate_cert`: against a
  gateway that wants a token it cannot connect at all (jupyter_server 2.21). When a token is
  given, the websocket connection is given the same headers `GatewayClient` puts on its REST
  calls (`load_connection_args()["headers"]`), and nothing else. TLS is verified for real, with
  the gateway's own certificate as the only trusted one (`GatewayClient.ca_certs`).

Samples
-------
The code each test runs comes from `samples/<KERNELSPEC>.py` next to this file (`--samples`
names another folder): one plain module per kernelspec, no imports needed, whose module-level
names are the `jupyter_kernel_test.KernelTests` attributes:

    language_name, file_extension          kernel_info's language_info name and extension
    code_hello_world                       prints "hello, world" to stdout
    code_stderr                            writes something to stderr
    code_generate_error                    fails with exactly one `error` output
    code_execute_result                    [{"code": ..., "result": "text/plain value"}, ...]
                                           ("mime" picks another MIME type than text/plain)
    code_display_data                      [{"code": ..., "mime": "text/html"}, ...]
    code_page_something                    makes an execute_reply payload {"source": "page"}
    code_clear_output                      sends clear_output
    code_inspect_sample                    code whose inspect_reply is found
    completion_samples                     [{"text": ..., "matches": [...]}, ...] (the cursor
                                           is at the end of "text"; "matches" is optional)
    complete_code_samples, incomplete_code_samples, invalid_code_samples   for is_complete
    code_history_pattern, supported_history_operations ("tail", "range", "search")
                                           (KernelTests runs test_history only with
                                           code_execute_result samples: it replays them)

and optionally these, for tests this script adds to the suite (cellgate's own, marked `+`):

    code_update_display      shows a display with a display_id and then updates it (every
                             update_display_data for that id must carry text/plain)
    code_stdin               asks for a line of input with the prompt "cellgate? " and prints
                             what it got back (the test answers "forty-two")
    completion_cursor_samples  [{"text": ..., "cursor_pos": N, "cursor_start": N,
                             "cursor_end": N}, ...]: cursor positions in code points, for
                             text with characters outside ASCII and the Basic Multilingual Plane

A name left out makes its test skip; a sample file says in a comment why the language cannot
do what it leaves out. Every test skipped for a missing sample is reported as such.
"""

import argparse
import importlib.util
import inspect
import os
import queue
import ssl
import sys
import tempfile
import time
import unittest
from pathlib import Path
from urllib.parse import urlsplit

import jupyter_kernel_test
from jupyter_client.utils import run_sync
from jupyter_kernel_test import TIMEOUT, KernelTests
from jupyter_kernel_test.msgspec_v5 import validate_message
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayKernelManager

HERE = Path(__file__).resolve().parent

# How long a kernel may take to start: a container and its language runtime.
START_TIMEOUT = 120

# The attributes a sample module may set: KernelTests' own, and this script's additions.
EXTRA_SAMPLE_NAMES = ("code_update_display", "code_stdin", "completion_cursor_samples")
# The answer test_stdin types, and the prompt it expects.
STDIN_ANSWER = "forty-two"
STDIN_PROMPT = "cellgate? "


class BlockingGatewayClient:
    """A `GatewayKernelClient` with the blocking API that `KernelTests` calls: every
    coroutine method runs to completion, as in jupyter_client's `BlockingKernelClient`."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        value = getattr(self._client, name)
        if inspect.iscoroutinefunction(value):
            return run_sync(value)
        return value


def trust_gateway_certificate(url):
    """Writes the certificate the gateway presents to a file and returns its path."""
    parts = urlsplit(url)
    pem = ssl.get_server_certificate((parts.hostname, parts.port or 443))
    handle, path = tempfile.mkstemp(prefix="cellgate-ca-", suffix=".pem")
    with os.fdopen(handle, "w") as file:
        file.write(pem)
    return path


def configure_gateway_client(url, token):
    gateway = GatewayClient.instance()
    gateway.url = url
    gateway.auth_token = token
    gateway.validate_cert = False
    if url.startswith("https:"):
        gateway.ca_certs = trust_gateway_certificate(url)
    gateway.request_timeout = float(START_TIMEOUT)
    gateway.connect_timeout = float(START_TIMEOUT)
    gateway.KERNEL_LAUNCH_TIMEOUT = START_TIMEOUT
    if token:
        send_gateway_headers_on_websockets(gateway)
    return gateway


def send_gateway_headers_on_websockets(gateway):
    """Makes websocket-client's `create_connection`, as `GatewayKernelClient` calls it, send the
    headers that `GatewayClient` sends on REST calls (see the module docstring)."""
    import websocket

    create_connection = websocket.create_connection

    def create_connection_with_gateway_headers(url, **options):
        headers = gateway.load_connection_args().get("headers", {})
        options.setdefault("header", [f"{key}: {value}" for key, value in headers.items()])
        return create_connection(url, **options)

    websocket.create_connection = create_connection_with_gateway_headers


class GatewayKernelTests(KernelTests):
    """`KernelTests` with the kernel started and reached through jupyter_server's gateway
    classes instead of a local kernel; plus a few checks of cellgate's own."""

    kernel_name = ""
    code_update_display = ""
    code_stdin = ""
    completion_cursor_samples = []

    @classmethod
    def setUpClass(cls):
        cls.km = GatewayKernelManager(kernel_name=cls.kernel_name)
        run_sync(cls.km.start_kernel)(kernel_name=cls.kernel_name)
        client = cls.km.client()
        run_sync(client.start_channels)()
        cls.kc = BlockingGatewayClient(client)
        cls.kc.wait_for_ready(timeout=START_TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.kc.stop_channels()
        finally:
            run_sync(cls.km.shutdown_kernel)()

    def setUp(self):
        type(self).last_cell = None

    def execute_helper(self, code, *args, **kwargs):
        """KernelTests' own, remembering the cell for the report: its assertions say only
        that a status was "error", not what the error was."""
        type(self).last_cell = {"code": code}
        reply, output_msgs = super().execute_helper(code, *args, **kwargs)
        type(self).last_cell.update(reply=reply["content"], outputs=output_msgs)
        return reply, output_msgs

    # -- cellgate's additions ------------------------------------------------------------

    def test_update_display_data(self):
        """+ A display with a display_id, then update_display_data for the same id."""
        if not self.code_update_display:
            raise unittest.SkipTest("No code update display")
        self.flush_channels()
        reply, output_msgs = self.execute_helper(self.code_update_display)
        self.assertEqual(reply["content"]["status"], "ok")
        shown = [m for m in output_msgs if m["msg_type"] == "display_data"]
        updated = [m for m in output_msgs if m["msg_type"] == "update_display_data"]
        self.assertTrue(shown, f"no display_data in {[m['msg_type'] for m in output_msgs]}")
        self.assertTrue(updated, f"no update_display_data in {[m['msg_type'] for m in output_msgs]}")
        display_id = shown[0]["content"].get("transient", {}).get("display_id")
        self.assertTrue(display_id, shown[0]["content"])
        for message in updated:
            self.assertEqual(message["content"]["transient"].get("display_id"), display_id)
            self.assertIn("text/plain", message["content"]["data"])

    def test_stdin(self):
        """+ input_request on the stdin channel; the answer reaches the cell."""
        if not self.code_stdin:
            raise unittest.SkipTest("No code stdin")
        self.flush_channels()
        msg_id = self.kc.execute(self.code_stdin, allow_stdin=True)
        try:
            request = self.kc.get_stdin_msg(timeout=TIMEOUT)
            # Not validate_message: jupyter_kernel_test's schema still wants `password` to be
            # a number, while the message spec (and ipykernel) make it a boolean.
            self.assertEqual(request["header"]["msg_type"], "input_request")
            self.assertEqual(request["parent_header"]["msg_id"], msg_id)
            self.assertEqual(request["content"]["prompt"], STDIN_PROMPT)
            self.assertIs(request["content"]["password"], False)
        finally:
            # Answered even when the request was wrong, so the kernel goes on to later tests.
            self.kc.input(STDIN_ANSWER)
        try:
            reply = self.get_non_kernel_info_reply(timeout=TIMEOUT)
        except queue.Empty:
            # The cell still waits for its answer: interrupt it, so the tests after this one
            # find the kernel idle, and forget what that leaves on the channels.
            run_sync(self.km.interrupt_kernel)()
            time.sleep(2)
            self.flush_channels()
            self.fail("the cell never got the input_reply sent on the stdin channel")
        validate_message(reply, "execute_reply", msg_id)
        self.assertEqual(reply["content"]["status"], "ok", reply["content"])
        stdout = ""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = run_sync(self.kc.iopub_channel.get_msg)(timeout=TIMEOUT)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
                stdout += message["content"]["text"]
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        self.assertIn(STDIN_ANSWER, stdout)

    def test_completion_cursor_positions(self):
        """+ complete_reply cursor positions count Unicode code points."""
        if not self.completion_cursor_samples:
            raise unittest.SkipTest("No completion cursor samples")
        for sample in self.completion_cursor_samples:
            with self.subTest(text=sample["text"]):
                msg_id = self.kc.complete(sample["text"], sample["cursor_pos"])
                reply = self.get_non_kernel_info_reply(timeout=TIMEOUT)
                validate_message(reply, "complete_reply", msg_id)
                content = reply["content"]
                self.assertTrue(content["matches"], content)
                self.assertEqual(content["cursor_start"], sample["cursor_start"], content)
                self.assertEqual(content["cursor_end"], sample["cursor_end"], content)
                if "matches" in sample:
                    self.assertEqual(set(content["matches"]), set(sample["matches"]))


def load_samples(folder, kernelspec):
    path = Path(folder) / f"{kernelspec}.py"
    if not path.is_file():
        raise SystemExit(f"no samples for {kernelspec}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"cellgate_samples_{kernelspec}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    known = set(dir(KernelTests)) | set(EXTRA_SAMPLE_NAMES)
    attributes = {}
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if name not in known or callable(getattr(KernelTests, name, None)):
            raise SystemExit(f"{path}: {name} is not a KernelTests sample attribute")
        attributes[name] = value
    return attributes


class Report(unittest.TextTestResult):
    """Collects one outcome per test (a test with subtests fails if any of them does)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}

    def _name(self, test):
        return getattr(test, "_testMethodName", str(test))

    def _set(self, test, outcome, detail=""):
        name = self._name(test)
        previous = self.outcomes.get(name)
        if previous is None or previous[0] in ("PASS", "SKIP") or outcome == "FAIL":
            if previous is not None and previous[0] == "FAIL" and outcome == "FAIL":
                detail = previous[1] + "\n" + detail
            self.outcomes[name] = (outcome, detail)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes.setdefault(self._name(test), ("PASS", ""))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, "SKIP", reason)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "FAIL", self._exc_info_to_string(err, test) + last_cell_of(test))

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, "FAIL", self._exc_info_to_string(err, test))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is None:
            return
        name = getattr(test, "_testMethodName", str(test))
        if issubclass(err[0], unittest.SkipTest):
            # A skipped subtest (history's "range" without "tail", say) leaves the test passed
            # but is worth saying.
            previous = self.outcomes.get(name)
            if previous is None or previous[0] != "FAIL":
                note = f"{subtest._subDescription()} skipped: {err[1]}"
                detail = previous[1] + "; " + note if previous and previous[1] else note
                self.outcomes[name] = ("PASS", detail)
            return
        self.outcomes[name] = (
            "FAIL",
            (self.outcomes.get(name, ("", ""))[1] + "\n" if name in self.outcomes else "")
            + f"{subtest._subDescription()}: {self._exc_info_to_string(err, test)}"
            + last_cell_of(test),
        )


def last_cell_of(test):
    """What the last cell a failed test ran answered, in a few lines."""
    cell = getattr(type(test), "last_cell", None)
    type(test).last_cell = None
    if not cell:
        return ""
    lines = [f"last cell: {cell['code']!r}"]
    reply = cell.get("reply")
    if reply is not None:
        status = reply.get("status")
        if status == "error":
            status += f" {reply.get('ename')}: {reply.get('evalue')}"
        lines.append(f"reply: {status}")
        for message in cell.get("outputs", []):
            content = message["content"]
            if message["msg_type"] == "stream":
                detail = f"{content['name']} {content['text'][:300]!r}"
            elif message["msg_type"] == "error":
                detail = f"{content['ename']}: {content['evalue'][:300]}"
            else:
                detail = ", ".join(sorted(content.get("data", {}))) or str(content)[:300]
            lines.append(f"  {message['msg_type']}: {detail}")
    else:
        lines.append("(no execute_reply)")
    return "\n" + "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gateway_url")
    parser.add_argument("token")
    parser.add_argument("kernelspec")
    parser.add_argument("--samples", default=str(HERE / "samples"))
    parser.add_argument("-k", dest="pattern", help="run only the tests whose name contains this")
    args = parser.parse_args()

    configure_gateway_client(args.gateway_url.rstrip("/"), args.token)
    attributes = load_samples(args.samples, args.kernelspec)
    attributes["kernel_name"] = args.kernelspec
    case = type(f"Conformance_{args.kernelspec}", (GatewayKernelTests,), attributes)

    loader = unittest.TestLoader()
    if args.pattern:
        loader.testNamePatterns = [f"*{args.pattern}*"]
    suite = loader.loadTestsFromTestCase(case)
    names = [test._testMethodName for test in suite]
    started = time.monotonic()
    runner = unittest.TextTestRunner(
        stream=open(os.devnull, "w"), resultclass=Report, verbosity=0
    )
    result = runner.run(suite)

    print(f"== jupyter_kernel_test {jupyter_kernel_test.__version__} via jupyter_server "
          f"GatewayKernelManager: {args.kernelspec} ({time.monotonic() - started:.1f} s)")
    counts = {"PASS": 0, "SKIP": 0, "FAIL": 0}
    setup_problems = [detail for test, detail in result.errors if not hasattr(test, "_testMethodName")]
    for name in names:
        outcome, detail = result.outcomes.get(
            name, ("FAIL", "did not run" + (": " + setup_problems[0] if setup_problems else ""))
        )
        counts[outcome] += 1
        own = "+" if name in ("test_update_display_data", "test_stdin",
                              "test_completion_cursor_positions") else " "
        line = f"{outcome} {own}{name}"
        if detail:
            indented = detail.strip().replace("\n", "\n      ")
            line += f": {indented}" if outcome != "FAIL" else f"\n      {indented}"
        print(line)
    for detail in setup_problems:
        print(f"FAIL  setUpClass/tearDownClass\n      {detail.strip()}")
        counts["FAIL"] += 1
    print(f"{args.kernelspec}: {counts['PASS']} passed, {counts['SKIP']} skipped, "
          f"{counts['FAIL']} failed")
    sys.stdout.flush()
    sys.exit(1 if counts["FAIL"] else 0)


if __name__ == "__main__":
    main()
