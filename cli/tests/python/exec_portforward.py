"""The official Python client's streaming calls against keel.

Usage: exec_portforward.py KUBECONFIG NAMESPACE SHELL_POD WEB_POD

- exec: stdout and stderr come back separated, and `returncode` is the
  command's exit code (from the v4/v5 error channel Status);
- exec with tty=True runs on a terminal (`tty` prints a /dev/pts path);
- exec with stdin: what is written comes back from `cat`, which ends
  when stdin is closed (v5 close channel);
- portforward: an HTTP request over the forwarded socket reaches the
  keel/echo pod.
Prints one `ok ...` line per check; any failure raises (exit status 1).
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def run(api, ns, pod, command, **kw):
    ws = stream(
        api.connect_get_namespaced_pod_exec,
        pod,
        ns,
        command=command,
        stderr=kw.get("stderr", True),
        stdin=kw.get("stdin", False),
        stdout=True,
        tty=kw.get("tty", False),
        _preload_content=False,
    )
    if kw.get("input") is not None:
        ws.write_stdin(kw["input"])
        # v5.channel.k8s.io: end of stdin, so `cat` ends.
        ws.close_channel(0)
    ws.run_forever(timeout=60)
    out = ws.read_stdout(timeout=1) if ws.peek_stdout() else ""
    err = ws.read_stderr(timeout=1) if ws.peek_stderr() else ""
    code = ws.returncode
    ws.close()
    return out, err, code


def main():
    kubeconfig, ns, shell, web = sys.argv[1:5]
    config.load_kube_config(config_file=kubeconfig)
    api = client.CoreV1Api()

    out, err, code = run(api, ns, shell, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert out == "out\n", repr(out)
    assert err == "err\n", repr(err)
    assert code == 3, code
    print("ok exec: stdout, stderr and exit code 3")

    out, _, code = run(api, ns, shell, ["true"])
    assert (out, code) == ("", 0), (out, code)
    print("ok exec: exit code 0")

    out, _, code = run(api, ns, shell, ["tty"], tty=True, stderr=False)
    assert out.startswith("/dev/pts/"), repr(out)
    assert code == 0, code
    print("ok exec: tty", out.strip())

    out, _, code = run(api, ns, shell, ["cat"], stdin=True, input="hello stdin\n")
    assert out == "hello stdin\n", repr(out)
    assert code == 0, code
    print("ok exec: stdin")

    pf = portforward(api.connect_get_namespaced_pod_portforward, web, ns, ports="8080")
    sock = pf.socket(8080)
    sock.setblocking(True)
    sock.settimeout(60)
    sock.sendall(b"GET /via-python HTTP/1.1\r\nHost: pf\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    text = data.decode(errors="replace")
    assert text.startswith("HTTP/1."), repr(text)
    assert "/via-python" in text and web in text, repr(text)
    assert pf.error(8080) is None, pf.error(8080)
    print("ok portforward: HTTP through the forwarded socket")


if __name__ == "__main__":
    main()
