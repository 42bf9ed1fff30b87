"""Issue 12 item 5: a body over the limit reset the connection of a client still sending it, which
saw a connection error instead of the 413. Against a real uvicorn over a real socket (DESIGN §4)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import orjson

TEN_MB = 10 * 1024 * 1024


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length; the server then closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(": ") for h in lines[1:]) if k.lower() == "content-length"
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), body[:length]


async def test_a_client_still_sending_reads_the_413(live_ledger, admin_key: str) -> None:
    headers = {
        "Authorization": f"Bearer {admin_key}",
        "Idempotency-Key": "big-1",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(base_url=live_ledger.url, timeout=30) as http:
        r = await http.post("/v1/earn", content=b"{" + b" " * TEN_MB + b"}", headers=headers)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

        async def chunks():
            for _ in range(10):
                yield b" " * (1024 * 1024)

        r = await http.post("/v1/earn", content=chunks(), headers=headers)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        assert (await http.get("/healthz")).status_code == 200  # and the server serves on


def test_over_a_raw_socket_every_byte_sent_and_the_answer_read(live_ledger, admin_key: str) -> None:
    url = urlsplit(live_ledger.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        head = (
            f"POST /v1/earn HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {admin_key}\r\n"
            f"Idempotency-Key: big-2\r\nContent-Type: application/json\r\nContent-Length: {TEN_MB}\r\n\r\n"
        )
        sock.sendall(head.encode())
        for _ in range(10):  # a reset would raise here (ConnectionResetError, BrokenPipeError)
            sock.sendall(b" " * (1024 * 1024))
        status, body = _read_response(sock)
        assert status == 413 and orjson.loads(body)["code"] == "payload_too_large"
        sock.settimeout(10)
        assert sock.recv(1) == b""  # then a clean close (FIN), not a reset
