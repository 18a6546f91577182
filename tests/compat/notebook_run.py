"""Runs small multi-cell notebooks on cellgate kernels with nbclient and with papermill, the
way scheduled-notebook users do, and checks their outputs, the state kept from cell to cell and
that papermill's parameters took effect.

Usage:
    python3 notebook_run.py GATEWAY_URL TOKEN

Both tools get their kernels from jupyter_server's `GatewayKernelManager`, by two routes:

* `jupyter_server`: a real jupyter_server, started here with `--gateway-url` pointing at
  cellgate (as JupyterLab users run it), is the gateway the manager talks to. Nothing in the
  path is modified: the manager reaches that server without a token, and the server reaches
  cellgate with cellgate's token, which it sends on its REST calls and its websockets.
* `cellgate`: the manager talks to cellgate itself, configured as `conformance.py` does it
  (its docstring says why the websocket needs the gateway's headers added).

Two jupyter_server limitations shape how the tools are called (jupyter_server 2.21):
`GatewayKernelManager.start_kernel` starts `kwargs["kernel_name"]`, defaulting to python3,
and ignores the manager's own `kernel_name`, which is how nbclient and papermill name the
kernel. nbclient passes `execute(**kwargs)` on to `start_kernel`, so it is given
`kernel_name=` there; papermill passes nothing on, so for papermill the manager is started on
the right kernelspec first and handed over as `km=` (papermill's documented argument).

Prints one line per run and `notebook runs: N passed, N failed`; exits non-zero on a failure.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

HERE = Path(__file__).resolve().parent

# Per language: the notebook's cells (the first is papermill's `parameters` cell), the
# parameters papermill injects, and what the cells must print with the default parameters
# and with the injected ones.
NOTEBOOKS = {
    "python3": {
        "language": "python",
        "cells": [
            "n = 1\ngreeting = 'default'",
            "total = sum(range(n + 1))\nprint(greeting, total)",
            "total * 2",
            "display({'text/html': '<i>shown</i>', 'text/plain': 'shown'}, raw=True)",
        ],
        "parameters": {"n": 10, "greeting": "hi"},
        "default": {1: ("stream", "default 1\n"), 2: ("execute_result", "2"),
                    3: ("display_data", "shown")},
        "injected": {1: ("stream", "hi 55\n"), 2: ("execute_result", "110"),
                     3: ("display_data", "shown")},
    },
    "bash": {
        "language": "bash",
        "cells": [
            "n=1\ngreeting=default",
            "total=$(( n * (n + 1) / 2 ))\necho \"$greeting $total\"",
            "echo $(( total * 2 ))",
        ],
        "parameters": {"n": 10, "greeting": "hi"},
        "default": {1: ("stream", "default 1\n"), 2: ("stream", "2\n")},
        "injected": {1: ("stream", "hi 55\n"), 2: ("stream", "110\n")},
    },
}


def make_notebook(kernelspec):
    spec = NOTEBOOKS[kernelspec]
    cells = [new_code_cell(source) for source in spec["cells"]]
    cells[0].metadata["tags"] = ["parameters"]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": kernelspec, "display_name": kernelspec, "language": spec["language"],
    }
    notebook.metadata["language_info"] = {"name": spec["language"]}
    return notebook


def output_text(output):
    if output["output_type"] == "stream":
        return output["text"]
    return output.get("data", {}).get("text/plain", "")


def check_outputs(notebook, expected, offset=0):
    """Each expected cell (by index in the original notebook) has exactly the expected
    output; `offset` counts cells papermill inserted before it."""
    for index, (kind, text) in expected.items():
        cell = notebook.cells[index + offset]
        outputs = [o for o in cell.outputs if o["output_type"] != "stream" or o["name"] == "stdout"]
        errors = [o for o in cell.outputs if o["output_type"] == "error"]
        assert not errors, f"cell {index} failed: {errors}"
        kinds = [o["output_type"] for o in outputs]
        assert kind in kinds, f"cell {index}: expected {kind}, got {cell.outputs}"
        got = "".join(output_text(o) for o in outputs if o["output_type"] == kind)
        assert got == text, f"cell {index}: expected {text!r}, got {got!r}"


def run_nbclient(kernelspec, manager_class):
    from nbclient import NotebookClient

    notebook = make_notebook(kernelspec)
    client = NotebookClient(
        notebook, kernel_name=kernelspec, kernel_manager_class=manager_class,
        timeout=120, startup_timeout=180,
    )
    client.execute(kernel_name=kernelspec)
    assert notebook.metadata["language_info"]["name"] == NOTEBOOKS[kernelspec]["language"], (
        notebook.metadata["language_info"]
    )
    check_outputs(notebook, NOTEBOOKS[kernelspec]["default"])
    counts = [cell.execution_count for cell in notebook.cells]
    assert counts == sorted(counts) and None not in counts, counts


def run_papermill(kernelspec, manager_class):
    import papermill
    from jupyter_client.utils import run_sync

    folder = Path(tempfile.mkdtemp(prefix="cellgate-papermill-"))
    source, target = folder / "in.ipynb", folder / "out.ipynb"
    nbformat.write(make_notebook(kernelspec), source)
    manager = manager_class(kernel_name=kernelspec)
    run_sync(manager.start_kernel)(kernel_name=kernelspec)
    # nbclient leaves the client it makes from a manager it was handed running, and
    # GatewayKernelClient's websocket reader is not a daemon thread: it would keep this process
    # alive unless the gateway closes the websocket (cellgate does when the kernel goes; a
    # jupyter_server in gateway mode does not). So the clients are stopped here.
    clients = []
    make_client = manager.client

    def client(**kwargs):
        clients.append(make_client(**kwargs))
        return clients[-1]

    manager.client = client
    try:
        papermill.execute_notebook(
            str(source), str(target), parameters=NOTEBOOKS[kernelspec]["parameters"],
            kernel_name=kernelspec, km=manager, progress_bar=False, start_timeout=180,
            execution_timeout=120,
        )
    finally:
        for made in clients:
            made.stop_channels()
        # A kernel manager handed in is the caller's to shut down.
        run_sync(manager.shutdown_kernel)()
    result = nbformat.read(target, as_version=4)
    injected = [i for i, cell in enumerate(result.cells)
                if "injected-parameters" in cell.metadata.get("tags", [])]
    assert injected == [1], f"injected-parameters cell at {injected}"
    check_outputs(result, NOTEBOOKS[kernelspec]["injected"], offset=1)
    assert result.metadata["papermill"]["parameters"] == NOTEBOOKS[kernelspec]["parameters"]


def worker(route, url, token):
    """Runs every tool and language against one gateway; prints a line per run."""
    sys.path.insert(0, str(HERE))
    import conformance
    from jupyter_server.gateway.managers import GatewayKernelManager

    conformance.configure_gateway_client(url, token)
    failed = 0
    for tool, run in (("nbclient", run_nbclient), ("papermill", run_papermill)):
        for kernelspec in NOTEBOOKS:
            started = time.monotonic()
            try:
                run(kernelspec, GatewayKernelManager)
            except Exception:  # noqa: BLE001 - every failure is reported with its traceback
                failed += 1
                detail = traceback.format_exc().strip().replace("\n", "\n      ")
                print(f"FAIL {route}/{tool}/{kernelspec}\n      {detail}", flush=True)
            else:
                print(f"PASS {route}/{tool}/{kernelspec} ({time.monotonic() - started:.1f} s)",
                      flush=True)
    sys.exit(1 if failed else 0)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_jupyter_server(gateway, token):
    """A jupyter_server with cellgate as its gateway, open to local clients without a token."""
    port = free_port()
    home = tempfile.mkdtemp(prefix="cellgate-jupyter-")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=home, JUPYTER_DATA_DIR=home,
               JUPYTER_RUNTIME_DIR=home)
    log = open(Path(home) / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", "--allow-root", "--IdentityProvider.token=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={home}",
         f"--gateway-url={gateway}", f"--GatewayClient.auth_token={token}",
         "--GatewayClient.validate_cert=False", "--GatewayClient.request_timeout=180",
         "--GatewayClient.connect_timeout=180"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status", timeout=5).read()
            return server, base, Path(home) / "server.log"
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"jupyter_server did not start:\n{log_tail(Path(home) / 'server.log')}")
            time.sleep(0.2)


def log_tail(path, size=4000):
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
        return
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    gateway, token = sys.argv[1].rstrip("/"), sys.argv[2]
    server, base, log = start_jupyter_server(gateway, token)
    passed = failed = 0
    try:
        for route, url, route_token in (("jupyter_server", base, ""), ("cellgate", gateway, token)):
            run = subprocess.run(
                [sys.executable, __file__, "--worker", route, url, route_token],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200,
            )
            lines = run.stdout.splitlines()
            for line in lines:
                if line.startswith(("PASS ", "FAIL ", "      ")):
                    print(line)
            passed += sum(line.startswith("PASS ") for line in lines)
            failed += sum(line.startswith("FAIL ") for line in lines)
            if run.returncode != 0 and not any(line.startswith("FAIL ") for line in lines):
                failed += 1
                print(f"FAIL {route}: the worker exited with {run.returncode}\n{run.stdout[-4000:]}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    if failed:
        print(f"jupyter_server log (end):\n{log_tail(log)}")
    print(f"notebook runs: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
