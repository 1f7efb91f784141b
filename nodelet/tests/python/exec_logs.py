"""exec and logs through the official Python client (`kubernetes` from PyPI).

Run as `python exec_logs.py <kubeconfig> <namespace> <pod>`; the pod's container must be
running busybox. Exits non-zero with a message on the first failure.
"""

import sys

from kubernetes import client, config
from kubernetes.stream import stream


def main():
    kubeconfig, ns, pod = sys.argv[1:4]
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    # Preloaded exec (v4.channel.k8s.io): stdout and stderr of a command.
    out = stream(v1.connect_get_namespaced_pod_exec, pod, ns,
                 command=["sh", "-c", "echo py-out; echo py-err >&2"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert "py-out" in out, repr(out)
    print("ok   exec output", flush=True)

    # Interactive: stdin in, stdout out, exit code from the error channel.
    resp = stream(v1.connect_get_namespaced_pod_exec, pod, ns, command=["sh", "-c", "read x; echo got-$x; exit 3"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    resp.write_stdin("hello\n")
    got = ""
    while resp.is_open():
        resp.update(timeout=1)
        if resp.peek_stdout():
            got += resp.read_stdout()
    resp.close()
    assert "got-hello" in got, repr(got)
    assert resp.returncode == 3, resp.returncode
    print("ok   exec stdin and exit code", flush=True)

    logs = v1.read_namespaced_pod_log(pod, ns, tail_lines=1)
    assert logs.startswith("tick-") or logs.startswith("line-"), repr(logs)
    print("ok   logs", flush=True)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
