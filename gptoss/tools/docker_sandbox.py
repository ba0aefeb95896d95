"""The Docker backend of the python tool: each call runs in a new container (`docker run --rm`,
no network, read-only root, a size-limited tmpfs working directory, memory, CPU and process
limits), the same limits as the namespace sandbox. Used only where `docker` is installed and its
daemon answers. tests/test_python_docker.py checks the invocation with a stand-in `docker`
command; no daemon runs on the project's test machines."""
from __future__ import annotations

import shutil
import subprocess
import time

from .base import ToolError
from .sandbox import Finished, SandboxConfig, truncate


class DockerSandbox:
    def __init__(self, config: SandboxConfig, *, image: str = "python:3.11-slim") -> None:
        self.config, self.image = config, image
        if shutil.which("docker") is None:
            raise ToolError("the python tool's docker backend needs the `docker` command")
        probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                               capture_output=True, text=True, timeout=20)
        if probe.returncode != 0:
            raise ToolError(f"the docker daemon does not answer: {probe.stderr.strip()[:200]}")

    def command(self) -> list[str]:
        c = self.config
        return ["docker", "run", "--rm", "-i", "--network", "none", "--read-only",
                "--tmpfs", f"/work:rw,size={c.disk_mb}m", "--workdir", "/work",
                "--memory", f"{c.memory_mb}m", "--pids-limit", str(c.max_procs),
                "--ulimit", f"cpu={c.cpu_s}", "--ulimit", f"fsize={c.file_mb << 20}",
                "--user", "65534:65534", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", self.image, "timeout", "-s", "KILL", f"{c.timeout_s:g}", "python", "-"]

    def run(self, code: str) -> Finished:
        start = time.monotonic()
        try:
            done = subprocess.run(self.command(), input=code.encode(), capture_output=True,
                                  timeout=self.config.timeout_s + 30)
        except subprocess.TimeoutExpired:
            return Finished(f"[timed out after {self.config.timeout_s:g} s]", None,
                            time.monotonic() - start, f"timed out after {self.config.timeout_s:g} s")
        text = (done.stdout + done.stderr).decode("utf-8", "replace")
        error = None if done.returncode == 0 else f"exited with status {done.returncode}"
        return Finished(truncate(text, self.config.max_output_chars), done.returncode,
                        time.monotonic() - start, error)

    def close(self) -> None:
        pass
