"""Attack probes: network."""

from __future__ import annotations

from tests.attacks.probe import (
    Probe,
    _escape_then,
)


def probes() -> list[Probe]:
    p: list[Probe] = []
    add = p.append

    add(
        Probe(
            "tcp-connect",
            "network",
            _escape_then(
                "import socket\n"
                "s = socket.create_connection(('127.0.0.1', <<tcp_port>>), timeout=3)\n"
                "s.sendall(b'hello')\ns.close()\nfinal_answer('connected')\n"
            ),
            "a TCP connection to a listener on 127.0.0.1",
        )
    )
    add(
        Probe(
            "urllib-http",
            "network",
            _escape_then(
                "import urllib.request as request\n"
                "try:\n"
                "    request.urlopen('http://127.0.0.1:<<tcp_port>>/', timeout=3)\n"
                "except Exception as exc:\n"
                "    final_answer(str(exc))\n"
            ),
            "urllib.request.urlopen to a listener on 127.0.0.1",
        )
    )
    add(
        Probe(
            "udp-sendto",
            "network",
            _escape_then(
                "import socket\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "s.sendto(b'hello', ('127.0.0.1', <<udp_port>>))\nfinal_answer('sent')\n"
            ),
            "a UDP datagram to a listener on 127.0.0.1",
        )
    )
    add(
        Probe(
            "unix-abstract-socket",
            "network",
            _escape_then(
                "import socket\n"
                "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                "s.connect(chr(0) + '<<unix_abstract>>')\ns.sendall(b'hello')\nfinal_answer('connected')\n"
            ),
            "an abstract unix socket (not a file: only a network namespace hides it)",
        )
    )
    add(
        Probe(
            "unix-path-socket",
            "network",
            _escape_then(
                "import socket\n"
                "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                "s.connect('<<unix_path>>')\ns.sendall(b'hello')\nfinal_answer('connected')\n"
            ),
            "a unix socket file outside the folder",
        )
    )
    add(
        Probe(
            "import-socket",
            "network",
            "import socket\ns = socket.create_connection(('127.0.0.1', <<tcp_port>>), timeout=3)\nfinal_answer('x')",
            "plain `import socket` (routine: refused by the import list)",
            breaks_in_process=False,
        )
    )
    return p
