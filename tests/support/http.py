"""A bare HTTP GET on loopback: what a kubelet's probe or a Prometheus scrape does."""

from __future__ import annotations

import asyncio


async def get(port: int, path: str) -> tuple[int, str]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except OSError:
        return 0, ""
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body
