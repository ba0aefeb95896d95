"""An OS-enforced sandbox for model-written code, without Docker.

Each program runs as the first process of new mount, network and PID namespaces (`unshare`,
with a user namespace when not root), set up by jail.py before it execs:
- no network: the new network namespace has only a loopback device, which is down;
- the user's home, /root, /home, /tmp, /var/tmp, /dev/shm, /run, the current directory, this
  project's source tree and `SandboxConfig.hide` are replaced by empty tmpfs mounts (the Python
  installation is bound back read-only when it lives under one of them);
- its working directory is a private tmpfs of `disk_mb` (gone with the namespace; the host-side
  folder is removed by `close()`);
- it runs as a uid of its own that no user has (when we are root; as the same unprivileged user
  otherwise), with rlimits on CPU seconds, address space, file size, process count (per uid, so
  per sandbox when root) and open files, and no new privileges;
- the PID namespace hides every other process; killing the namespace's first process ends all.
What stays readable is what any unprivileged user reads: /usr, /etc, /opt and so on.
Where namespaces are not allowed the sandbox refuses to start (ToolError) unless
`allow_unsafe=True`, which keeps only the rlimits, the timeout and the private folder.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .base import ToolError

JAIL = Path(__file__).with_name("jail.py")
# each sandbox runs as its own otherwise unused uid (when we are root), so that one sandbox's
# processes count against its own process limit only and cannot signal another's
SANDBOX_UID_BASE = 1_500_000_000
_uids = itertools.count()
TRUNCATED = "\n[... output truncated: {} more characters]"
_PROJECT = Path(__file__).resolve().parents[2]
_SYSTEM_DIRS = {"/", "/usr", "/etc", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/opt", "/var",
                "/proc", "/dev", "/sys", "/boot", "/srv", "/mnt", "/media"}


@dataclass(frozen=True)
class SandboxConfig:
    timeout_s: float = 30.0       # wall clock, per call
    cpu_s: int = 60               # CPU seconds per process (a kernel's whole life)
    memory_mb: int = 2048         # address space
    file_mb: int = 16             # largest file written
    disk_mb: int = 64             # the private working directory
    max_procs: int = 64           # processes and threads of the sandbox user
    max_output_chars: int = 8000
    hide: tuple[str, ...] = ()
    allow_unsafe: bool = False    # run without namespaces where they are not allowed

    def __post_init__(self) -> None:
        for name in ("timeout_s", "cpu_s", "memory_mb", "file_mb", "disk_mb", "max_procs",
                     "max_output_chars"):
            if getattr(self, name) <= 0:
                raise ToolError(f"SandboxConfig.{name} must be positive, got {getattr(self, name)}")


def _unshare_args() -> list[str]:
    args = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return args if os.geteuid() == 0 else args + ["--map-root-user"]


@lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether this process may create the namespaces (checked once by running `true`)."""
    if shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run(_unshare_args() + ["true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _new_uid() -> int:
    return SANDBOX_UID_BASE + (os.getpid() * 1000 + next(_uids)) % 100_000_000


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + TRUNCATED.format(len(text) - limit)


@dataclass
class Finished:
    output: str                  # stdout and stderr together, truncated with a marker
    returncode: int | None       # None: killed at the wall-clock timeout
    seconds: float
    error: str | None = None     # a one-line reason when it did not end normally


@dataclass
class Sandbox:
    """One private folder and the launcher of jailed processes inside it."""

    config: SandboxConfig = field(default_factory=SandboxConfig)

    def __post_init__(self) -> None:
        self.isolated = namespaces_available()
        if not self.isolated and not self.config.allow_unsafe:
            raise ToolError("the python sandbox needs Linux namespaces (`unshare --net --mount "
                            "--pid`), which are not allowed here; pass the explicit unsafe flag "
                            "(allow_unsafe / --python-unsafe) to run code without them")
        self.root = Path(tempfile.mkdtemp(prefix="gptoss-python-"))
        self.workdir = self.root / "work"
        self.shared = self.root / "shared"     # kernel sockets: visible on both sides
        self.workdir.mkdir()
        self.shared.mkdir()
        self.uid = _new_uid() if self.isolated and os.geteuid() == 0 else None
        if self.uid is not None:
            os.chown(self.shared, self.uid, self.uid)
            os.chmod(self.root, 0o755)

    def spec(self, argv: list[str], env: dict[str, str]) -> dict:
        c = self.config
        mb = 1 << 20
        keep = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(
            os.path.realpath(sys.executable)), *sysconfig.get_paths().values()}
        hide = ["/root", "/home", "/tmp", "/var/tmp", "/dev/shm", "/run", str(Path.home()),
                os.getcwd(), str(_PROJECT), *c.hide]
        # never the system itself (a server started in / or /usr must not blank it)
        hide = [p for p in hide if os.path.realpath(p) not in _SYSTEM_DIRS]
        return {"hide": hide, "keep": sorted(keep), "shared": [str(self.shared)],
                "workdir": str(self.workdir), "disk_mb": c.disk_mb, "mounts": self.isolated,
                "uid": self.uid, "gid": self.uid, "argv": argv, "env": env,
                "rlimits": {"CPU": c.cpu_s, "AS": c.memory_mb * mb, "FSIZE": c.file_mb * mb,
                            "NPROC": c.max_procs, "NOFILE": 256}}

    def env(self, **extra: str) -> dict[str, str]:
        work = str(self.workdir)
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
                "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
                "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                **extra}

    def spawn(self, argv: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
        """Start `argv` jailed, in its own session (so `kill` reaches every process)."""
        if not self.isolated:  # unsafe mode: rlimits only, in the host-side folder
            self._clean_workdir()
        spec = json.dumps(self.spec(argv, env))
        launcher = _unshare_args() if self.isolated else []
        cmd = launcher + [os.path.realpath(sys.executable), "-I", "-S", str(JAIL), spec]
        return subprocess.Popen(cmd, start_new_session=True, close_fds=True, **popen)

    def run(self, argv: list[str], stdin: str = "") -> Finished:
        """Run a program to its end (or the wall-clock timeout) and collect its output."""
        start = time.monotonic()
        proc = self.spawn(argv, self.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
        reader = _CappedReader(proc.stdout, self.config.max_output_chars * 4)
        try:
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it exited (or closed stdin) before reading all of its code: its output says why
        try:
            code = proc.wait(timeout=self.config.timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        kill(proc)
        reader.join(timeout=5)
        seconds = time.monotonic() - start
        text = truncate(reader.text(), self.config.max_output_chars)
        return Finished(text, code, seconds, _exit_reason(code, self.config))

    def _clean_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(exist_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process's session; `unshare --kill-child` and the PID namespace take the
    rest (a process that left the session still dies with the namespace's first process)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _exit_reason(code: int | None, config: SandboxConfig) -> str | None:
    if code is None:
        return f"timed out after {config.timeout_s:g} s"
    if code == 125:
        return "the sandbox could not be set up"
    if code < 0 or code > 128:
        number = -code if code < 0 else code - 128
        name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
        why = {"SIGXCPU": f"CPU limit of {config.cpu_s} s", "SIGKILL": "killed",
               "SIGXFSZ": f"file size limit of {config.file_mb} MiB",
               "SIGSEGV": "crashed (often the memory limit)"}.get(name, "signal")
        return f"terminated by {name} ({why})"
    return None if code == 0 else f"exited with status {code}"


class _CappedReader(threading.Thread):
    """Drains a pipe on its own thread, keeping at most `limit` bytes (the rest is counted)."""

    def __init__(self, pipe, limit: int) -> None:
        super().__init__(daemon=True)
        self.pipe, self.limit, self.chunks, self.size, self.dropped = pipe, limit, [], 0, 0
        self.start()

    def run(self) -> None:
        while chunk := self.pipe.read1(65536):
            keep = max(0, min(len(chunk), self.limit - self.size))
            if keep:
                self.chunks.append(chunk[:keep])
                self.size += keep
            self.dropped += len(chunk) - keep
        self.pipe.close()

    def text(self) -> str:
        text = b"".join(self.chunks).decode("utf-8", "replace")
        return text + (TRUNCATED.format(self.dropped) if self.dropped else "")
