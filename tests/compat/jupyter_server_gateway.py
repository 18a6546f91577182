"""Drives cellgate through a real jupyter_server started with --gateway-url, the way
JupyterLab users connect to it: kernelspecs, a kernel start, a cell over the websocket.

Usage: python3 jupyter_server_gateway.py https://HOST:PORT TOKEN
Exits non-zero, with the reason, when anything a user would see is wrong.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from tornado import httpclient, ioloop, websocket


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(url, method="GET", body=None, token="local"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as response:
        return response.status, json.loads(response.read() or b"null")


async def run_cell(ws_url, code):
    connection = await websocket.websocket_connect(
        httpclient.HTTPRequest(ws_url, headers={"Authorization": "token local"})
    )
    msg_id = str(uuid.uuid4())
    connection.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": "compat",
                   "username": "compat", "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    seen = []
    while True:
        raw = await connection.read_message()
        if raw is None:
            raise AssertionError(f"websocket closed after {seen}")
        message = json.loads(raw)
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        seen.append((message["msg_type"], message["content"]))
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            connection.close()
            return seen


def main():
    gateway, token = sys.argv[1], sys.argv[2]
    port = free_port()
    home = tempfile.mkdtemp(prefix="cellgate-jupyter-")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=home, JUPYTER_DATA_DIR=home, JUPYTER_RUNTIME_DIR=home)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
         "--allow-root", "--IdentityProvider.token=local", f"--ServerApp.root_dir={home}",
         f"--gateway-url={gateway}", f"--GatewayClient.auth_token={token}",
         "--GatewayClient.validate_cert=False"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    passed = failed = 0
    try:
        for _ in range(300):
            try:
                request(f"{base}/api/status")
                break
            except OSError:
                time.sleep(0.1)
        status, specs = request(f"{base}/api/kernelspecs")
        assert status == 200 and "python3" in specs["kernelspecs"], specs
        passed += 1
        status, kernel = request(f"{base}/api/kernels", "POST", {"name": "python3"})
        assert status == 201, (status, kernel)
        passed += 1
        ws_url = f"ws://127.0.0.1:{port}/api/kernels/{kernel['id']}/channels"
        seen = ioloop.IOLoop.current().run_sync(lambda: run_cell(ws_url, "print('hi')\n6*7"))
        types = [kind for kind, _ in seen]
        assert types[0] == "status" and "execute_input" in types, types
        stdout = "".join(c["text"] for kind, c in seen if kind == "stream" and c["name"] == "stdout")
        assert stdout == "hi\n", seen
        results = [c for kind, c in seen if kind == "execute_result"]
        assert results and results[0]["data"]["text/plain"] == "42", seen
        passed += 1
        status, _ = request(f"{base}/api/kernels/{kernel['id']}", "DELETE")
        assert status == 204
        passed += 1
    except Exception as error:  # noqa: BLE001 - any failure is reported with its reason
        failed += 1
        print(f"FAILED: {error!r}")
        server.terminate()
        print(server.communicate(timeout=30)[1].decode(errors="replace")[-3000:])
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
    print(f"jupyter_server compatibility: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
