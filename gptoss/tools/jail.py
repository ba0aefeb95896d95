"""The sandbox's inside: run as a script (stdlib only, never imported by the engine) as the first
process of fresh mount, network and PID namespaces (`unshare`, see sandbox.py), it hides
directories, mounts a size-limited private working directory, sets rlimits, drops to an
unprivileged user, then runs the program as its child and reaps (it is the namespace's init).
It exits with the program's status (128 + N when signal N ended it); when it exits, the
kernel kills everything left in the namespace.

    python jail.py SPEC_JSON

SPEC_JSON: {"hide": [dirs], "keep": [paths re-exposed read-only inside hidden dirs],
"shared": [dirs bound back read-write], "workdir": dir, "disk_mb": n, "uid": n|null, "gid": n|null,
"rlimits": {"CPU": s, "AS": bytes, "FSIZE": bytes, "NPROC": n, "NOFILE": n}, "env": {...},
"argv": [...], "mounts": true|false}. A setup failure prints `jail: ...` on stderr and exits 125.
"""
import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source, target, fstype, flags, data=""):
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                   flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _under(path, parents):
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def _hide(spec):
    """Empty read-only-for-others tmpfs over each hidden dir, then kept paths bound back
    read-only and shared dirs read-write, at their own paths (opened before they were hidden)."""
    hidden = []
    for path in sorted({os.path.realpath(p) for p in spec["hide"]}, key=len):
        if os.path.isdir(path) and not _under(path, hidden):
            hidden.append(path)
    keep = [os.path.realpath(p) for p in spec["keep"] if os.path.exists(p)]
    keep = [(p, os.open(p, os.O_PATH), True) for p in keep if _under(p, hidden)]
    shared = [(p, os.open(p, os.O_PATH), False) for p in spec["shared"]]
    for path in hidden:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for path, fd, readonly in keep + shared:
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        if readonly:
            _mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        os.close(fd)
    work = spec["workdir"]
    os.makedirs(work, exist_ok=True)
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=700,size={spec['disk_mb']}m")


def _limit(rlimits):
    for name, value in rlimits.items():
        kind = getattr(resource, f"RLIMIT_{name}")
        # CPU: SIGXCPU at the soft limit (a reason the parent can name), SIGKILL 1 s later
        resource.setrlimit(kind, (value, value + 1 if name == "CPU" else value))


def _drop(uid, gid, workdir):
    if gid is not None:
        os.chown(workdir, uid, gid)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # the parent (unshare) dying kills us; a uid change clears that setting, so set it again
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)


def main():
    spec = json.loads(sys.argv[1])
    try:
        if spec.get("mounts", True):
            _hide(spec)
        os.makedirs(spec["workdir"], exist_ok=True)
        _drop(spec.get("uid"), spec.get("gid"), spec["workdir"])
        os.chdir(spec["workdir"])
        _limit(spec["rlimits"])
    except OSError as exc:
        sys.stderr.write(f"jail: {exc}\n")
        sys.exit(125)
    sys.exit(_run(spec["argv"], spec["env"]))


def _run(argv, env):
    """Fork the program and reap every process until it ends (we are the namespace's init:
    orphans are reparented to us); its status as an exit code, 128 + N for signal N."""
    try:
        child = os.fork()
    except OSError as exc:
        sys.stderr.write(f"jail: cannot start the program: {exc}\n")
        return 125
    if child == 0:
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == child:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    main()
