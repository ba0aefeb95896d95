"""The python tool's Docker backend, without a Docker daemon: a stand-in `docker` command on
PATH records each invocation and runs the container's command (`timeout ... python -`) on this
machine. What is checked is what gptoss asks Docker for: a throw-away container with no
network, a read-only root, a size-limited tmpfs working directory, the memory / process / CPU /
file-size limits of SandboxConfig, no capabilities, an unprivileged user; and that the code, its
output, a failing exit and a missing daemon reach the model as tool messages or a ToolError.
(Docker itself enforcing those flags is Docker's part; no daemon runs on the project's machines.)
"""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap

import pytest
from openai_harmony import Message, Role

from gptoss.tools.base import ToolError
from gptoss.tools.python import PythonTool
from gptoss.tools.sandbox import SandboxConfig

FAKE_DOCKER = textwrap.dedent("""\
    #!{python}
    import json, os, subprocess, sys
    log = os.environ["FAKE_DOCKER_LOG"]
    with open(log, "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
    if sys.argv[1] == "info":
        if os.environ.get("FAKE_DOCKER_DOWN"):
            print("Cannot connect to the Docker daemon", file=sys.stderr)
            sys.exit(1)
        print("28.2.2")
        sys.exit(0)
    args = sys.argv[2:]
    image_at = args.index("{image}")
    command = args[image_at + 1:]
    command[command.index("python")] = sys.executable
    sys.exit(subprocess.run(command).returncode)
""")


@pytest.fixture()
def docker(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable, image="python:3.11-slim"))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


def call(tool: PythonTool, code: str):
    message = Message.from_role_and_content(Role.ASSISTANT, code).with_recipient("python")
    return tool.run(message.with_channel("analysis"))


def flag(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def test_docker_run_asks_for_an_isolated_limited_container(docker):
    config = SandboxConfig(timeout_s=7, cpu_s=9, memory_mb=300, file_mb=5, disk_mb=32, max_procs=11)
    tool = PythonTool(config, backend="docker")
    out = call(tool, "print(6 * 7)")
    tool.close()
    assert out.messages[0].content[0].text == "42\n" and out.error is None
    info, run = docker()
    assert info[0] == "info"
    assert run[:2] == ["run", "--rm"]
    assert flag(run, "--network") == ["none"] and "--read-only" in run
    assert flag(run, "--tmpfs") == ["/work:rw,size=32m"] and flag(run, "--workdir") == ["/work"]
    assert flag(run, "--memory") == ["300m"] and flag(run, "--pids-limit") == ["11"]
    assert sorted(flag(run, "--ulimit")) == ["cpu=9", f"fsize={5 << 20}"]
    assert flag(run, "--cap-drop") == ["ALL"]
    assert flag(run, "--security-opt") == ["no-new-privileges"]
    user = flag(run, "--user")[0]
    assert user.split(":")[0] not in ("0", "root")
    image_at = run.index("python:3.11-slim")
    assert run[image_at + 1:] == ["timeout", "-s", "KILL", "7", "python", "-"]


def test_each_call_is_a_new_container_and_failures_reach_the_model(docker):
    tool = PythonTool(SandboxConfig(timeout_s=10), backend="docker")
    assert tool.stateless  # a container per call: nothing survives between calls
    call(tool, "x = 1")
    out = call(tool, "print(x)")
    tool.close()
    assert "NameError" in out.messages[0].content[0].text
    assert out.error is not None and "status 1" in out.error
    assert [argv[0] for argv in docker()] == ["info", "run", "run"]


def test_no_daemon_is_a_tool_error_before_any_call(docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    with pytest.raises(ToolError, match="docker daemon does not answer"):
        PythonTool(SandboxConfig(), backend="docker")


def test_no_docker_command_is_a_tool_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="needs the `docker` command"):
        PythonTool(SandboxConfig(), backend="docker")
