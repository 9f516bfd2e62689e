"""The isolated code executor: the model's code runs in a confined worker process per session.

Owns: executor (the app side, a smolagents executor), code_worker (the zygote and its workers),
confine (namespaces, Landlock, seccomp, limits; starting and stopping child processes),
protocol (JSON messages over sockets, size-capped), files (the one folder the code may use).
Knows nothing about chat or traces; imports only config/. Usable on its own.
"""
