#!/usr/bin/env python3
"""An ASTM analyzer simulator written from ASTM E1381 / CLSI LIS1-A and E1394 / LIS2-A2,
independent of custodian's codec (PyPI's `astm` packages are Python 2-era and fail on
Python 3). Used by tests/ingest_astm.rs against the real daemon.

  astm_client.py selftest
      checks this client's checksums and frames against worked examples (frames published
      from instruments, with the checksums they carry) and exits 0.

  astm_client.py send HOST PORT [--corrupt N] [--stop-after-last-frame]
                 [--await-answer SECS] RECORD...
      sends one message (the records, without CR) as an analyzer: ENQ, frames (one record
      per frame, split after 240 characters with ETB), EOT. --corrupt N sends frame N (1-based)
      first with a wrong checksum. --stop-after-last-frame writes the last frame and exits at
      once, without waiting for its reply (the test then kills the daemon). --await-answer
      waits that long after EOT for the host to send a message (a host query's answer) and
      receives it. Prints one JSON object: the reply to ENQ and to each frame sent, in order,
      and the records of each message received.
"""

import json
import socket
import sys
import time

STX, ETX, EOT, ENQ, ACK, NAK, ETB, CR, LF = 0x02, 0x03, 0x04, 0x05, 0x06, 0x15, 0x17, 0x0D, 0x0A
NAMES = {ACK: "ACK", NAK: "NAK", EOT: "EOT", ENQ: "ENQ"}
MAX_TEXT = 240
SENDER_TIMEOUT = 15.0
RECEIVER_TIMEOUT = 30.0
MAX_ATTEMPTS = 6


def checksum(body: bytes) -> bytes:
    """Sum of the bytes from FN through ETB/ETX, modulo 256, as two upper-case hex digits."""
    return b"%02X" % (sum(body) % 256)


def frame(number: int, text: bytes, last: bool) -> bytes:
    body = bytes([0x30 + number % 8]) + text + bytes([ETX if last else ETB])
    return bytes([STX]) + body + checksum(body) + bytes([CR, LF])


def frames(records):
    """One record per frame (its CR included), split after 240 characters; FN from 1."""
    out, n = [], 1
    for rec in records:
        data = rec.encode("latin-1") + b"\r"
        chunks = [data[i:i + MAX_TEXT] for i in range(0, len(data), MAX_TEXT)]
        for i, chunk in enumerate(chunks):
            out.append(frame(n, chunk, i == len(chunks) - 1))
            n = (n + 1) % 8
    return out


# Worked examples: frames as published from instruments, each with the checksum it carries.
WORKED = [
    (b"\x025R|2|^^^1.0000+950+1.0|15|||^5^||V||34001637|20080516153540|20080516153602|34001637\r\x033D\r\n", b"3D"),
    (b"\x021H|\\^&|||CT-90^00-15 ^00001^^^^BD934079||||||||E1394-97|20171104070923\r\x0358\r\n", b"58"),
    (b"\x023O|1|||||20171104070923|||||N||||||||||||||F|||||\r\x03A4\r\n", b"A4"),
]


def selftest():
    for wire, expected in WORKED:
        etx = wire.index(bytes([ETX]))
        assert checksum(wire[1:etx + 1]) == expected, wire
        assert frame(wire[1] - 0x30, wire[2:etx], True) == wire, wire
    long = ["R|1|^^^X|" + "9" * 300]
    fs = frames(long)
    assert len(fs) == 2 and fs[0][-5] == ETB and fs[1][-5] == ETX and len(fs[0]) == 247
    assert [f[1] for f in frames(["A"] * 9)] == [ord(c) for c in "123456701"]
    return 0


class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def byte(self, timeout):
        self.s.settimeout(timeout)
        if not self.buf:
            try:
                data = self.s.recv(4096)
            except socket.timeout:
                return None
            if not data:
                return None
            self.buf = data
        b, self.buf = self.buf[0], self.buf[1:]
        return b

    def reply(self, timeout=SENDER_TIMEOUT):
        """The next ACK, NAK or EOT (other bytes are not replies)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            b = self.byte(max(0.01, deadline - time.time()))
            if b is None:
                return None
            if b in (ACK, NAK, EOT):
                return b
        return None

    def send(self, data):
        self.s.sendall(data)


def receive_message(c, wait):
    """As the receiver: waits for ENQ, answers ACK, takes frames (checksum and frame number
    checked, NAK otherwise), returns the records when EOT comes."""
    deadline = time.time() + wait
    while True:
        b = c.byte(max(0.01, deadline - time.time()))
        if b is None:
            return None
        if b == ENQ:
            break
    c.send(bytes([ACK]))
    text, expect = b"", 1
    while True:
        b = c.byte(RECEIVER_TIMEOUT)
        if b is None:
            raise RuntimeError("receiver timeout")
        if b == EOT:
            break
        if b != STX:
            continue
        raw = b""
        while not raw.endswith(b"\r\n"):
            x = c.byte(RECEIVER_TIMEOUT)
            if x is None:
                raise RuntimeError("connection closed inside a frame")
            raw += bytes([x])
        body, cs = raw[:-4], raw[-4:-2]
        ok = checksum(body) == cs and body[-1] in (ETX, ETB) and body[0] - 0x30 == expect
        if not ok:
            c.send(bytes([NAK]))
            continue
        text += body[1:-1]
        expect = (expect + 1) % 8
        c.send(bytes([ACK]))
    return [r.decode("latin-1") for r in text.split(b"\r") if r]


def send(host, port, records, corrupt=None, stop_after_last=False, await_answer=None):
    c = Conn(host, port)
    out = {"replies": [], "answers": []}
    c.send(bytes([ENQ]))
    r = c.reply()
    out["replies"].append(NAMES.get(r, "none"))
    if r != ACK:
        print(json.dumps(out))
        return 1
    fs = frames(records)
    for i, f in enumerate(fs, start=1):
        last = i == len(fs)
        attempts = 0
        pending = f
        if corrupt == i:
            bad = bytearray(f)
            bad[-4] = ord("0") if bad[-4] != ord("0") else ord("1")
            pending = bytes(bad)
        while True:
            attempts += 1
            c.send(pending)
            if last and stop_after_last:
                out["replies"].append("unread")
                print(json.dumps(out))
                sys.stdout.flush()
                return 0
            r = c.reply()
            out["replies"].append(NAMES.get(r, "none"))
            if r in (ACK, EOT):
                break
            if r == NAK and attempts < MAX_ATTEMPTS:
                pending = f
                continue
            c.send(bytes([EOT]))
            print(json.dumps(out))
            return 1
    c.send(bytes([EOT]))
    if await_answer:
        msg = receive_message(c, await_answer)
        if msg is not None:
            out["answers"].append(msg)
    print(json.dumps(out))
    return 0


def main(argv):
    if argv[1:2] == ["selftest"]:
        return selftest()
    if argv[1:2] != ["send"]:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = argv[2], int(argv[3])
    args = argv[4:]
    corrupt, stop, wait, records = None, False, None, []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--corrupt":
            corrupt = int(args[i + 1])
            i += 2
        elif a == "--stop-after-last-frame":
            stop = True
            i += 1
        elif a == "--await-answer":
            wait = float(args[i + 1])
            i += 2
        else:
            records.append(a)
            i += 1
    selftest()
    return send(host, port, records, corrupt, stop, wait)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
