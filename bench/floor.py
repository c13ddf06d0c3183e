"""The floor: a raw ASGI app on the same uvicorn + TLS stack as Podgraft that parses the same request
body and answers a fixed AdmissionReview. What no webhook written on this stack can beat.

    python bench/floor.py --port 9443 --cert certs/tls.crt --key certs/tls.key
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn

from app.tls import server_context

ALLOWED = (
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"%s","allowed":true}}'
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    uid = orjson.loads(body)["request"]["uid"].encode() if body else b""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": ALLOWED % uid})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    context = server_context()
    context.load_cert_chain(args.cert, args.key)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        date_header=False,
    )
    config.load()
    config.ssl = context
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
