"""A stateful Python session: an IPython kernel (`ipykernel`) inside the sandbox, driven with
`jupyter-client` over Unix-domain sockets in the sandbox's shared folder (TCP would not cross the
network namespace). A call that times out or kills the kernel ends the session; the next call
starts a fresh one (and is told its state is gone)."""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import time

from .sandbox import Finished, Sandbox, _exit_reason, kill, truncate

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
START_TIMEOUT_S = 60.0


def _client_module():
    try:
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file
    except ImportError:
        raise ImportError("the stateful python tool needs jupyter-client and ipykernel: "
                          "pip install 'gptoss[tools]' (or use the stateless mode)") from None
    return BlockingKernelClient, write_connection_file


class KernelSession:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.proc: subprocess.Popen | None = None
        self.client = None
        self.restarted = False     # the last session ended; the next output says so

    def _start(self) -> None:
        client_cls, write = _client_module()
        conn = str(self.sandbox.shared / "kernel.json")
        for name in os.listdir(self.sandbox.shared):
            os.unlink(self.sandbox.shared / name)
        write(conn, transport="ipc", ip=str(self.sandbox.shared / "k"))
        if self.sandbox.uid is not None:
            os.chown(conn, self.sandbox.uid, self.sandbox.uid)
        python = os.path.realpath(sys.executable)
        argv = [python, "-m", "ipykernel_launcher", "-f", conn, "--HistoryManager.enabled=False"]
        env = self.sandbox.env(IPYTHONDIR=str(self.sandbox.workdir / ".ipython"))
        log = self.sandbox.root / "kernel.log"
        with open(log, "wb") as err:
            self.proc = self.sandbox.spawn(argv, env, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=err)
        self.client = client_cls(connection_file=conn)
        self.client.load_connection_file()
        self.client.start_channels(hb=False)
        try:
            self._wait_ready()
        except RuntimeError as exc:
            err = log.read_text(errors="replace").strip()
            self.stop()
            raise RuntimeError(f"the python kernel did not start: {exc} {err[-500:]}") from None

    def _wait_ready(self) -> None:
        """Ask for kernel_info until the kernel answers on the shell channel and its status
        reaches us on iopub (before that, a call's output could be published to no one)."""
        deadline, sent = time.monotonic() + START_TIMEOUT_S, set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"it exited with status {self.proc.returncode}")
            sent.add(self.client.kernel_info())
            if self._heard(self.client.get_shell_msg, sent, 1.0) and \
                    self._heard(self.client.get_iopub_msg, sent, 0.5):
                return
        raise RuntimeError(f"no answer within {START_TIMEOUT_S:g} s")

    @staticmethod
    def _heard(get, sent: set, timeout: float) -> bool:
        """Whether a message answering one of `sent` arrives within `timeout` seconds."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                msg = get(timeout=left)
            except queue.Empty:
                return False
            if msg.get("parent_header", {}).get("msg_id") in sent:
                return True
        return False

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
            self.client = None
        if self.proc is not None:
            kill(self.proc)
            self.proc = None

    def execute(self, code: str) -> Finished:
        start = time.monotonic()
        if self.proc is None:
            self._start()
        msg_id = self.client.execute(code, store_history=True, allow_stdin=False)
        texts: list[str] = []   # the timeout counts from here: a kernel start is not the call's
        error = self._collect(msg_id, texts, time.monotonic() + self.sandbox.config.timeout_s)
        if error is not None:
            self.stop()
            texts.append(f"\n[{error}; the python session was restarted and its state is lost]")
        out = truncate("".join(texts), self.sandbox.config.max_output_chars)
        return Finished(out, None if error else 0, time.monotonic() - start, error)

    def _collect(self, msg_id: str, texts: list[str], deadline: float) -> str | None:
        """Gather the call's output until the kernel is idle; a reason when it never got there."""
        while True:
            if self.proc.poll() is not None:
                reason = _exit_reason(self.proc.returncode, self.sandbox.config)
                return f"the python kernel died ({reason or 'exited'})"
            left = deadline - time.monotonic()
            if left <= 0:
                return f"timed out after {self.sandbox.config.timeout_s:g} s"
            try:
                msg = self.client.get_iopub_msg(timeout=min(left, 0.25))
            except queue.Empty:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                return None
            texts.append(_text_of(kind, content))

    def close(self) -> None:
        self.stop()


def _text_of(kind: str, content: dict) -> str:
    if kind == "stream":
        return content.get("text", "")
    if kind in ("execute_result", "display_data"):
        data = content.get("data", {})
        text = data.get("text/plain")
        if text is None:
            return f"[{', '.join(data)} output not shown]\n" if data else ""
        return text + "\n"
    if kind == "error":
        return ANSI.sub("", "\n".join(content.get("traceback", []))) + "\n"
    return ""
