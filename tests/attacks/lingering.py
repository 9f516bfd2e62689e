"""Attack probes: code that outlives its step."""

from __future__ import annotations

from tests.attacks.probe import (
    FIND_CHANNEL,
    Probe,
    _escape_then,
)


def probes() -> list[Probe]:
    p: list[Probe] = []
    add = p.append

    add(
        Probe(
            "outlive-step-thread",
            "resources",
            _escape_then(
                """
import threading
import time
def tick():
    for i in range(40):
        f = open('tick.txt', 'w')
        f.write(str(i))
        f.close()
        time.sleep(0.1)
threading.Thread(target=tick).start()
final_answer('started a thread')
"""
            ),
            "a thread keeps running (and writing) after the step returned",
            lingers=True,
        )
    )
    add(
        Probe(
            "outlive-step-forged-reply",
            "resources",
            _escape_then(
                """
import json
import struct
import time
"""
                + FIND_CHANNEL
                + """
data = json.dumps({'output': 'done early', 'logs': '', 'final': True}).encode()
channel.sendall(struct.pack('!I', len(data)) + data)
chunk = 'z' * 10**6
for i in range(40):
    f = open('tick.txt', 'w')
    f.write(str(i))
    f.close()
    f = open('fill' + str(i) + '.bin', 'w')
    f.write(chunk)
    f.close()
    time.sleep(0.1)
final_answer('done late')
"""
            ),
            "a forged 'step done' reply on the worker's channel, then filling the folder unwatched",
            settings={"CODE_MAX_FOLDER_MB": "5"},
            lingers=True,
            breaks_in_process=False,
        )
    )

    add(
        Probe(
            "protocol-huge-reply",
            "resources",
            _escape_then(
                FIND_CHANNEL
                + """
import struct
import time
channel.sendall(struct.pack('!I', 4000000000) + b'[' * 100000)
time.sleep(20)
"""
            ),
            "a forged reply that announces 4 GB on the worker's channel, then stalls",
            breaks_in_process=False,
        )
    )
    return p
