"""The python tool's escape suite, run against the sandbox directly (PythonTool.run, the message
the model would see). Each attempt must end contained, as a tool message, with this process
healthy; the oracle is the operating system seen from outside the sandbox (the host's files,
a listening socket that must never be reached, the host's process table).

Each attempt's duration is printed (`pytest -s`) and summarised at the end of the module.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from openai_harmony import Message, Role

from gptoss.tools.python import PythonTool
from gptoss.tools.sandbox import Sandbox, SandboxConfig, namespaces_available

pytestmark = pytest.mark.skipif(not namespaces_available(),
                                reason="Linux namespaces (unshare) are not allowed here")
PROJECT = Path(__file__).resolve().parents[1]
TIMINGS: list[tuple[str, float]] = []
CONFIG = SandboxConfig(timeout_s=3, cpu_s=10, memory_mb=1024, file_mb=8, disk_mb=32,
                       max_procs=48, max_output_chars=2000)


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    print("\nsandbox escape attempts (seconds):")
    for name, seconds in TIMINGS:
        print(f"  {name:<34} {seconds:6.2f}")


@pytest.fixture(scope="module")
def stateless():
    with PythonTool(CONFIG, stateless=True) as tool:
        yield tool


@pytest.fixture(scope="module")
def kernel():
    with PythonTool(CONFIG) as tool:
        yield tool


def call(tool: PythonTool, code: str, name: str):
    """Run `code` as the model's call; (text the model sees, error, seconds)."""
    message = Message.from_role_and_content(Role.ASSISTANT, code).with_channel(
        "analysis").with_recipient("python")
    start = time.monotonic()
    out = tool.run(message)
    seconds = time.monotonic() - start
    TIMINGS.append((name, seconds))
    print(f"{name}: {seconds:.2f} s")
    (reply,) = out.messages
    assert reply.author.role == Role.TOOL and reply.author.name == "python"
    assert reply.recipient == "assistant" and reply.channel == "analysis"
    return reply.content[0].text, out.error, seconds


def sandbox_processes(tool: PythonTool) -> list[int]:
    """Host processes of the tool's sandbox user, read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == tool._runner.uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def healthy(tool: PythonTool) -> None:
    text, error, _ = call(tool, "print('still fine')", "a normal call afterwards")
    assert text.strip() == "still fine" and error is None


# ---- files ------------------------------------------------------------------------------------
def test_project_home_and_temp_files_are_not_readable(stateless, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    home = Path.home()
    assert os.listdir(home) and (PROJECT / "pyproject.toml").is_file()  # visible from outside
    code = "\n".join([
        "import os",
        f"for p in [{str(PROJECT / 'pyproject.toml')!r}, {str(secret)!r}, '/root/.bashrc']:",
        "    try: print('READ', p, open(p).read()[:20])",
        "    except OSError as e: print('blocked', type(e).__name__)",
        f"print('home', sorted(os.listdir({str(home)!r})))",
        f"try: print('project', os.listdir({str(PROJECT)!r}))",
        "except FileNotFoundError: print('project []')",  # under a hidden folder (/tmp/...)
    ])
    text, _, _ = call(stateless, code, "read project, home, /tmp files")
    assert "READ" not in text and text.count("blocked") == 3
    assert "project []" in text
    listed = text.split("home ", 1)[1].splitlines()[0]
    assert all(name not in listed for name in os.listdir(home) if name != ".pyenv")


def test_writing_outside_its_folder_leaves_the_host_untouched(stateless):
    target = PROJECT / "sandbox-was-here.txt"
    code = "\n".join([
        f"for p in [{str(target)!r}, '/etc/sandbox-was-here', '/usr/sandbox-was-here']:",
        "    try: open(p, 'w').write('x'); print('WROTE', p)",
        "    except OSError as e: print('blocked', type(e).__name__)",
    ])
    text, _, _ = call(stateless, code, "write outside its folder")
    assert text.count("blocked") == 3
    assert not target.exists() and not Path("/etc/sandbox-was-here").exists()


def test_filling_the_disk_stops_at_its_private_folder(stateless):
    code = "\n".join([
        "import os", "written = 0",
        "try:",
        "    for i in range(100):",
        "        with open(f'f{i}', 'wb') as f: f.write(b'x' * (4 << 20))",
        "        written += 4",
        "except OSError as e: print('stopped', e.errno, 'after', written, 'MiB')",
        "try: open('big', 'wb').write(b'x' * (20 << 20))",
        "except OSError as e: print('big file', e.errno)",
    ])
    free_before = os.statvfs("/tmp").f_bavail
    text, _, _ = call(stateless, code, "fill the disk")
    assert "stopped 28" in text   # ENOSPC at the 32 MiB tmpfs
    written = int(text.split("after ")[1].split()[0])
    assert written <= CONFIG.disk_mb
    assert "big file 27" in text or "big file 28" in text  # EFBIG (8 MiB file limit) or ENOSPC
    assert os.statvfs("/tmp").f_bavail >= free_before - (8 << 20) // os.statvfs("/tmp").f_frsize


# ---- network ----------------------------------------------------------------------------------
def test_sockets_reach_nothing(stateless):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = "\n".join([
        "import socket",
        f"for addr in [('127.0.0.1', {port}), ('8.8.8.8', 53), ('1.1.1.1', 443)]:",
        "    s = socket.socket(); s.settimeout(2)",
        "    try: s.connect(addr); print('CONNECTED', addr)",
        "    except OSError as e: print('refused', type(e).__name__)",
        "import urllib.request",
        "try: urllib.request.urlopen('http://example.com', timeout=2); print('FETCHED')",
        "except OSError as e: print('no web', type(e).__name__)",
    ])
    text, _, _ = call(stateless, code, "open sockets")
    assert "CONNECTED" not in text and "FETCHED" not in text
    assert text.count("refused") == 3 and "no web" in text
    with pytest.raises(BlockingIOError):
        listener.accept()   # nothing ever arrived
    listener.close()


# ---- processes --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["stateless", "kernel"])
def test_fork_bomb_is_contained(mode, stateless, kernel):
    tool = stateless if mode == "stateless" else kernel
    code = "\n".join([
        "import os, time", "n = 0",
        "try:",
        "    while True:",
        "        if os.fork() == 0:",
        "            time.sleep(30); os._exit(0)",
        "        n += 1",
        "except OSError as e: print('fork refused after', n, type(e).__name__)",
    ])
    text, _, _ = call(tool, code, f"fork bomb ({mode})")
    assert "fork refused after" in text
    assert int(text.split("after ")[1].split()[0]) < CONFIG.max_procs
    healthy(tool)
    if mode == "stateless":
        assert sandbox_processes(tool) == []   # the children died with the namespace


def test_a_detached_daemon_does_not_survive(stateless):
    code = "\n".join([
        "import os, time",
        "if os.fork() == 0:",
        "    os.setsid()",
        "    time.sleep(60)",
        "print('parent leaves')",
    ])
    text, _, _ = call(stateless, code, "leave a daemon behind")
    assert "parent leaves" in text
    deadline = time.monotonic() + 5
    while sandbox_processes(stateless) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes(stateless) == []


@pytest.mark.parametrize("mode", ["stateless", "kernel"])
def test_killing_its_parent_or_everyone_fails(mode, stateless, kernel):
    tool = stateless if mode == "stateless" else kernel
    parent = os.getppid()
    code = "\n".join([
        "import os, signal",
        f"for pid in [os.getppid(), {os.getpid()}, 1]:",
        "    try: os.kill(pid, signal.SIGKILL); print('sent', pid)",
        "    except OSError as e: print('cannot', pid, type(e).__name__)",
        "print('ppid', os.getppid(), 'pid', os.getpid())",
    ])
    text, _, _ = call(tool, code, f"kill the parent ({mode})")
    assert f"cannot {os.getpid()}" in text   # this process is not even visible
    assert os.getppid() == parent  # we are alive (the assertion runs) and our parent too
    healthy(tool)


# ---- limits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["stateless", "kernel"])
def test_allocating_far_beyond_the_limit(mode, stateless, kernel):
    tool = stateless if mode == "stateless" else kernel
    code = "\n".join([
        "try: x = bytearray(64 << 30)",
        "except MemoryError: print('MemoryError at once')",
        "chunks = []",
        "try:",
        "    while True: chunks.append(bytearray(64 << 20))",
        "except MemoryError: print('MemoryError after', len(chunks) * 64, 'MiB')",
    ])
    text, _, _ = call(tool, code, f"allocate 64 GiB ({mode})")
    assert "MemoryError at once" in text and "MemoryError after" in text
    assert int(text.split("after ")[1].split()[0]) <= CONFIG.memory_mb
    healthy(tool)


@pytest.mark.parametrize("mode", ["stateless", "kernel"])
def test_an_infinite_loop_times_out(mode, stateless, kernel):
    tool = stateless if mode == "stateless" else kernel
    text, error, seconds = call(tool, "while True:\n    pass", f"infinite loop ({mode})")
    assert error is not None and ("timed out" in error or "SIGXCPU" in error)
    assert "timed out" in text or "SIGXCPU" in text
    assert seconds < CONFIG.timeout_s + 5
    healthy(tool)


def test_cpu_limit_ends_a_busy_process():
    config = SandboxConfig(timeout_s=20, cpu_s=1)
    sandbox = Sandbox(config)
    try:
        start = time.monotonic()
        done = sandbox.run([os.path.realpath(os.sys.executable), "-"], "while True: pass")
        TIMINGS.append(("CPU limit (1 s)", time.monotonic() - start))
        assert done.returncode is not None and "SIGXCPU" in done.error
    finally:
        sandbox.close()


def test_output_is_truncated_with_a_marker(stateless):
    text, _, _ = call(stateless, "print('y' * 10_000_000)", "print 10 MB")
    assert len(text) < CONFIG.max_output_chars + 200
    assert "[... output truncated:" in text


def test_kernel_keeps_state_and_the_folder_is_removed():
    tool = PythonTool(CONFIG)
    try:
        call(tool, "x = 6 * 7\nopen('note.txt', 'w').write('hi')", "kernel state (1)")
        text, error, _ = call(tool, "x, open('note.txt').read()", "kernel state (2)")
        assert text.strip() == "(42, 'hi')" and error is None
        root = tool._runner.root
        assert root.is_dir() and not (root / "work" / "note.txt").exists()  # private tmpfs
    finally:
        tool.close()
    assert not root.exists()


def test_without_namespaces_it_refuses_unless_unsafe(monkeypatch):
    import gptoss.tools.sandbox as sandbox_module
    from gptoss.tools import ToolError
    monkeypatch.setattr(sandbox_module, "namespaces_available", lambda: False)
    with pytest.raises(ToolError, match="unsafe"):
        PythonTool(CONFIG, stateless=True)
    unsafe = SandboxConfig(timeout_s=10, allow_unsafe=True)
    with PythonTool(unsafe, stateless=True) as tool:
        assert not tool._runner.isolated and tool._runner.uid is None
        text, error, _ = call(tool, "import os; print(os.getcwd())", "unsafe mode")
        assert text.strip() == str(tool._runner.workdir) and error is None
