"""Operating-system walls around one code worker: namespaces, Landlock, seccomp, rlimits.

Called in a freshly forked worker before it runs any of the model's code. Each layer is tried
in order of strength and the ones the kernel refuses are skipped (and reported), because the
same app runs as root on a VM, as an ordinary user on a laptop and in an unprivileged container
on a Space. Everything here uses the raw system calls through ctypes: no extra binary, no
extra package.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# --- constants (linux/sched.h, linux/mount.h, linux/prctl.h, linux/landlock.h, linux/seccomp.h)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
SECCOMP_MODE_FILTER = 2

_ARCH = platform.machine()
# Syscall numbers that differ between the two architectures Spaces and laptops run on.
_NR = {
    "x86_64": {
        "pivot_root": 155,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
        "capset": 126,
    },
    "aarch64": {
        "pivot_root": 41,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
        "capset": 91,
    },
}.get(_ARCH, {})


class ConfineError(OSError):
    """A layer could not be put in place; the worker must not run code with it half-built."""


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise ConfineError(code, f"{what}: {os.strerror(code)}")
    return result


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def set_dumpable(flag: bool) -> None:
    """0: /proc/<pid>/environ, mem and fds of this process are closed to same-uid processes."""
    prctl(PR_SET_DUMPABLE, int(flag))


def die_with_parent() -> None:
    """SIGKILL when the parent goes. Linux counts the *thread* that started the child as its
    parent, so such children are started with `start_child`."""
    prctl(PR_SET_PDEATHSIG, 9)


# How readily the kernel's OOM killer picks each kind of process (-1000..1000; the app is 0).
# Raising one's own score needs no privilege. Code workers (and their zygote) go first, then the
# restartable agent and model processes; the web server is the last candidate.
OOM_SCORE_WORKER = 1000
OOM_SCORE_HELPER = 500


def prefer_oom_kill(score: int) -> None:
    """Make this process (and what it forks) the OOM killer's choice before the app."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
    except OSError:
        pass  # no /proc, or a kernel without it: the memory budget still holds


# One thread that lives as long as this process: the parent of every child that dies with it.
_KEEPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="child-process-parent")


def start_child(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen from a thread that never ends. A child started from a request's worker
    thread (a restart after a crash) would otherwise be killed when that thread is retired."""
    return _KEEPER.submit(subprocess.Popen, *args, **kwargs).result()


def stop_child(process: subprocess.Popen[bytes], grace_s: float = 0.0) -> None:
    """Give a child `grace_s` to end by itself (its control socket was closed), then SIGKILL."""
    try:
        process.wait(timeout=grace_s)
        return
    except subprocess.TimeoutExpired:
        pass
    process.kill()
    process.wait(timeout=5)


@dataclass(frozen=True)
class Walls:
    """What one worker may see and use; built by the app, applied in the worker."""

    work_dir: str  # the session's folder on the host
    ro_paths: tuple[str, ...]  # the Python runtime and shared libraries (`runtime_paths`), read-only
    root_dir: str  # an empty host folder the private root is mounted on
    memory_mb: int
    max_file_mb: int
    cpu_s: int
    layers: frozenset[str] = field(default_factory=lambda: frozenset(LAYERS))


LAYERS = ("namespaces", "landlock", "seccomp")


# --- namespaces: a private root holding only the runtime (read-only) and the work folder


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _locked_flags(path: str) -> int:
    """Flags a bind remount must keep (the kernel refuses to clear them inside a user namespace)."""
    flag = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC)):
        if flag & st:
            out |= ms
    for st, ms in ((1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if flag & st:
            out |= ms
    return out


def _bind(source: str, target: str, *, writable: bool, device: bool = False) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()  # noqa: SIM115 - an empty file is the mount point
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | _locked_flags(source)
    if not writable:
        flags |= MS_RDONLY
    if not device:
        flags |= MS_NODEV | (MS_NOEXEC if writable else 0)
    _mount(None, target, None, flags)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(walls: Walls, uid: int, gid: int) -> None:
    """New mount, network, IPC and UTS namespaces (and a user namespace when not root)."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if uid != 0:
        flags |= CLONE_NEWUSER
    if uid != 0:
        # The zygote is not dumpable, which makes /proc/self root-owned; the maps below need it ours.
        set_dumpable(True)
    _check(_libc.unshare(flags), "unshare")
    if uid != 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = walls.root_dir
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    for path in walls.ro_paths:
        if os.path.exists(path):
            _bind(path, root + path, writable=False)
    for dev in ("null", "zero", "urandom", "random"):
        _bind(f"/dev/{dev}", f"{root}/dev/{dev}", writable=True, device=True)
    _bind(walls.work_dir, root + "/work", writable=True)
    os.chdir(root)
    _check(_libc.syscall(_NR["pivot_root"], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/work")


# --- Landlock: the same allow-list enforced by the kernel's own access control

_LL_EXEC, _LL_WRITE, _LL_READ, _LL_READ_DIR = 1, 2, 4, 8
_LL_REMOVE_DIR, _LL_REMOVE_FILE, _LL_MAKE_CHAR, _LL_MAKE_DIR = 16, 32, 64, 128
_LL_MAKE_REG, _LL_MAKE_SOCK, _LL_MAKE_FIFO, _LL_MAKE_BLOCK, _LL_MAKE_SYM = 256, 512, 1024, 2048, 4096
_LL_REFER, _LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_LL_NET_BIND_TCP, _LL_NET_CONNECT_TCP = 1, 2
_LL_SCOPE_ABSTRACT_UNIX, _LL_SCOPE_SIGNAL = 1, 2


def landlock_abi() -> int:
    if not _NR:
        return 0
    result = _libc.syscall(_NR["landlock_create_ruleset"], None, 0, 1)
    return max(int(result), 0)


def apply_landlock(ro_paths: Iterable[str], rw_paths: Iterable[str]) -> None:
    abi = landlock_abi()
    if abi < 1:
        raise ConfineError(errno.ENOSYS, "Landlock is not available")
    fs_all = (1 << 13) - 1
    if abi >= 2:
        fs_all |= _LL_REFER
    if abi >= 3:
        fs_all |= _LL_TRUNCATE
    if abi >= 5:
        fs_all |= _LL_IOCTL_DEV
    net_all = (_LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (_LL_SCOPE_ABSTRACT_UNIX | _LL_SCOPE_SIGNAL) if abi >= 6 else 0
    attr = struct.pack("QQQ", fs_all, net_all, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    buf = ctypes.create_string_buffer(attr[:size])
    ruleset = _check(_libc.syscall(_NR["landlock_create_ruleset"], buf, size, 0), "landlock ruleset")
    try:
        read = _LL_EXEC | _LL_READ | _LL_READ_DIR
        files = _LL_READ | _LL_WRITE | (_LL_TRUNCATE if abi >= 3 else 0)
        write = read | _LL_WRITE | _LL_REMOVE_DIR | _LL_REMOVE_FILE | _LL_MAKE_DIR | _LL_MAKE_REG
        write |= _LL_TRUNCATE if abi >= 3 else 0
        rules = [(p, read) for p in ro_paths]
        rules += [(p, write) for p in rw_paths]
        rules += [(f"/dev/{d}", files) for d in ("null", "zero", "urandom", "random")]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.path.isdir(path):
                    # Directory-only rights cannot be granted on a file.
                    access &= _LL_EXEC | _LL_READ | _LL_WRITE | _LL_TRUNCATE
                beneath = struct.pack("QiI", access & fs_all, fd, 0)[:12]
                rule = ctypes.create_string_buffer(beneath)
                _check(_libc.syscall(_NR["landlock_add_rule"], ruleset, 1, rule, 0), f"landlock rule {path}")
            finally:
                os.close(fd)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        _check(_libc.syscall(_NR["landlock_restrict_self"], ruleset, 0), "landlock restrict")
    finally:
        os.close(ruleset)


# --- seccomp: system calls the model's code never needs are refused by the kernel

# Numbers from 424 up are the same on every architecture.
_DENY_COMMON = {
    "pidfd_open": 434,
    "pidfd_getfd": 438,
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
_DENY = {
    # processes, debugging, other processes' memory
    "x86_64": {
        "fork": 57,
        "vfork": 58,
        "execve": 59,
        "execveat": 322,
        "clone": 56,
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "kcmp": 312,
        "rt_sigqueueinfo": 129,
        "rt_tgsigqueueinfo": 297,
        # the network and local sockets
        "socket": 41,
        "socketpair": 53,
        "connect": 42,
        "bind": 49,
        "listen": 50,
        "accept": 43,
        "accept4": 288,
        # namespaces, mounts, kernel objects
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "chroot": 161,
        "bpf": 321,
        "perf_event_open": 298,
        "userfaultfd": 323,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "reboot": 169,
        "swapon": 167,
        "swapoff": 168,
        "acct": 163,
        "syslog": 103,
        "name_to_handle_at": 303,
        "open_by_handle_at": 304,
        "mknod": 133,
        "mknodat": 259,
        "link": 86,
        "linkat": 265,
        "symlink": 88,
        "symlinkat": 266,
        "setuid": 105,
        "setgid": 106,
        "setreuid": 113,
        "setregid": 114,
        "setresuid": 117,
        "setresgid": 119,
        "setgroups": 116,
        "personality": 135,
        "sethostname": 170,
        "setdomainname": 171,
        "iopl": 172,
        "ioperm": 173,
        "uselib": 134,
        "vhangup": 153,
        "quotactl": 179,
        "settimeofday": 164,
        "clock_settime": 227,
        "adjtimex": 159,
    },
    "aarch64": {
        "execve": 221,
        "execveat": 281,
        "clone": 220,
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "kcmp": 272,
        "rt_sigqueueinfo": 138,
        "rt_tgsigqueueinfo": 240,
        "socket": 198,
        "socketpair": 199,
        "connect": 203,
        "bind": 200,
        "listen": 201,
        "accept": 202,
        "accept4": 242,
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "chroot": 51,
        "bpf": 280,
        "perf_event_open": 241,
        "userfaultfd": 282,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "kexec_load": 104,
        "kexec_file_load": 294,
        "reboot": 142,
        "swapon": 224,
        "swapoff": 225,
        "acct": 89,
        "syslog": 116,
        "name_to_handle_at": 264,
        "open_by_handle_at": 265,
        "mknodat": 33,
        "linkat": 37,
        "symlinkat": 36,
        "setuid": 146,
        "setgid": 144,
        "setreuid": 145,
        "setregid": 143,
        "setresuid": 147,
        "setresgid": 149,
        "setgroups": 159,
        "personality": 92,
        "sethostname": 161,
        "setdomainname": 162,
        "vhangup": 58,
        "quotactl": 60,
        "settimeofday": 170,
        "clock_settime": 112,
        "adjtimex": 171,
    },
}
# Signals only to itself (CPython's abort() uses tgkill on its own pid).
_SELF_ONLY = {
    "x86_64": {"kill": 62, "tkill": 200, "tgkill": 234},
    "aarch64": {"kill": 129, "tkill": 130, "tgkill": 131},
}
_CLONE3 = {"x86_64": 435, "aarch64": 435}  # ENOSYS, so libc falls back to clone, which is refused
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_KILL, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(pid: int) -> bytes:
    """A BPF filter: wrong architecture -> kill; refused calls -> EPERM; the rest allowed."""
    arch = _ARCH
    prog = [_insn(_LD_W_ABS, 4), _insn(_JEQ_K, _AUDIT_ARCH[arch], 1, 0), _insn(_RET_K, _RET_KILL)]
    prog.append(_insn(_LD_W_ABS, 0))
    if arch == "x86_64":  # the x32 ABI numbers the same calls differently: refuse it whole
        prog += [_insn(_JGE_K, 0x40000000, 0, 1), _insn(_RET_K, _RET_KILL)]
    prog += [_insn(_JEQ_K, _CLONE3[arch], 0, 1), _insn(_RET_K, _RET_ERRNO | errno.ENOSYS)]
    for nr in _SELF_ONLY[arch].values():
        prog += [
            _insn(_JEQ_K, nr, 0, 4),
            _insn(_LD_W_ABS, 16),  # args[0], low 32 bits
            _insn(_JEQ_K, pid, 0, 1),
            _insn(_RET_K, _RET_ALLOW),
            _insn(_RET_K, _RET_ERRNO | errno.EPERM),
        ]
    for nr in sorted({*_DENY[arch].values(), *_DENY_COMMON.values()}):
        prog += [_insn(_JEQ_K, nr, 0, 1), _insn(_RET_K, _RET_ERRNO | errno.EPERM)]
    prog.append(_insn(_RET_K, _RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply_seccomp() -> None:
    if _ARCH not in _DENY:
        raise ConfineError(errno.ENOSYS, f"no seccomp table for {_ARCH}")
    program = seccomp_program(os.getpid())
    buf = ctypes.create_string_buffer(program)
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


# --- identity, limits, descriptors


def drop_capabilities() -> None:
    """Inside a user namespace the worker is its root; it keeps no capability to use that."""
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = bytes(24)
    _check(
        _libc.syscall(_NR["capset"], ctypes.create_string_buffer(header), ctypes.create_string_buffer(data)),
        "capset",
    )


def worker_uid() -> int:
    """A uid of its own per worker (when the app runs as root), so workers cannot touch each other."""
    return 200_000 + os.getpid() % 800_000


def chown_tree(path: str, uid: int) -> None:
    os.lchown(path, uid, uid)
    for top, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, uid)


def drop_root(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def set_limits(memory_mb: int, max_file_mb: int, cpu_s: int, mapped: int) -> None:
    """Kernel limits: address space (above what the worker already maps), file size, CPU, fds.

    RLIMIT_CPU here is the worker's lifetime budget; each step lowers the soft limit further
    (`limit_step_cpu`), and the app's wall-clock timer is the limit the worker cannot touch.
    """
    limits = {
        resource.RLIMIT_AS: mapped + memory_mb * 1024 * 1024,
        resource.RLIMIT_FSIZE: max_file_mb * 1024 * 1024,
        resource.RLIMIT_CPU: cpu_s,
        resource.RLIMIT_NOFILE: 64,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: 0,
        resource.RLIMIT_MEMLOCK: 0,
        resource.RLIMIT_MSGQUEUE: 0,
    }
    for kind, value in limits.items():
        _, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY and value > hard:
            value = hard
        resource.setrlimit(kind, (value, value))


def limit_step_cpu(step_s: int) -> None:
    """SIGXCPU once this step has used `step_s` more CPU seconds (never above the lifetime budget)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + step_s + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def close_other_fds(keep: int) -> int:
    """Only stdin/stdout/stderr (all /dev/null) and the channel stay open; the channel becomes fd 3."""
    import fcntl

    high = fcntl.fcntl(keep, fcntl.F_DUPFD, 100)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.dup2(high, 3)
    os.closerange(4, 1 << 20)
    return 3


def confine(walls: Walls) -> list[str]:
    """Put every available layer in place, strongest first; return the names of those applied."""
    applied: list[str] = []
    parent = os.getppid()
    uid, gid = os.getuid(), os.getgid()
    as_root = uid == 0
    mapped = mapped_bytes()  # /proc is gone once the private root is in place
    if as_root:
        chown_tree(walls.work_dir, worker_uid())
    os.chdir(walls.work_dir)
    if "namespaces" in walls.layers:
        enter_namespaces(walls, uid, gid)
        applied.append("namespaces")
    os.nice(10)
    set_limits(walls.memory_mb, walls.max_file_mb, walls.cpu_s, mapped)
    if as_root:
        drop_root(worker_uid())
    elif "namespaces" in applied:
        drop_capabilities()
    set_dumpable(False)
    # A credential change clears the parent-death signal: set it again, and if the zygote is
    # already gone, go too (a paused orphan would otherwise stay forever).
    die_with_parent()
    if os.getppid() != parent:
        os._exit(1)
    if "landlock" in walls.layers:
        # "." is the work folder: its parents may not be searchable by the worker's own uid.
        apply_landlock(walls.ro_paths, ["."])
        applied.append("landlock")
    if "seccomp" in walls.layers:
        apply_seccomp()
        applied.append("seccomp")
    return applied


def runtime_paths(hidden: Iterable[str]) -> tuple[str, ...]:
    """Read-only paths a worker needs: the interpreter's libraries and the system's shared ones.

    The one place that keeps `hidden` folders (project, DATA_DIR, AGENT_FILES_DIR) out of a
    worker's view: a candidate that is one of them or contains one is left out whole, so neither
    the private root nor the Landlock rules ever reach them.
    """
    import sys
    import sysconfig

    hidden = [str(Path(h).resolve()) for h in hidden]
    candidates = {
        *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
        *(p for p in sys.path if p),
        "/usr/lib",
        "/lib",
        "/lib64",
        "/usr/lib64",
        "/usr/local/lib",
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/usr/share/zoneinfo",
    }
    out = []
    for raw in candidates:
        path = str(Path(raw).resolve())
        if not os.path.exists(path):
            continue
        # Never the project itself or a folder that contains it or the data.
        if any(h == path or h.startswith(path.rstrip("/") + "/") for h in hidden):
            continue
        out.append(path)
    # Drop paths already inside another one.
    out.sort()
    kept: list[str] = []
    for path in out:
        if not any(path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return tuple(kept)
