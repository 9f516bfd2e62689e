"""Which modules the model's code may never import, whatever ALLOWED_IMPORTS says.

The settings refuse an ALLOWED_IMPORTS that names one of them, at start: smolagents' executor
then lets the model's code import only what that list allows.
"""

from __future__ import annotations

# Modules that reach the machine: the environment, files, processes, the network.
FORBIDDEN_IMPORTS = frozenset(
    {
        "*",
        "os",
        "sys",
        "subprocess",
        "socket",
        "shutil",
        "pathlib",
        "io",
        "builtins",
        "importlib",
        "ctypes",
        "multiprocessing",
        "threading",
        "signal",
        "posix",
        "posixpath",
        "pty",
        "fcntl",
        "resource",
        "urllib",
        "http",
        "requests",
        "httpx",
        "ftplib",
        "smtplib",
        "telnetlib",
        "asyncio",
        "pickle",
        "marshal",
        "shelve",
        "tempfile",
        "glob",
        "inspect",
        "gc",
        "code",
        "codeop",
        "runpy",
    }
)


def forbidden_imports(names: tuple[str, ...]) -> list[str]:
    """The names (or parents of dotted names) that may never be allowed."""
    return sorted({n for n in names if n.split(".")[0] in FORBIDDEN_IMPORTS or n in FORBIDDEN_IMPORTS})
