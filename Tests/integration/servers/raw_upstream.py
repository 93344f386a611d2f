"""A plain HTTP upstream for proxy tests: echoes requests, streams SSE, hangs, records disconnects."""

import argparse
import asyncio
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STATE = {"disconnects": 0, "active_streams": 0, "stream_requests": 0, "sessions": 0}


async def echo(request: Request) -> Response:
    body = await request.body()
    # A session-based server: a request in a session stays in it, any other starts a new one.
    session = request.headers.get("mcp-session-id")
    if session is not None:
        STATE["in_session"] = STATE.get("in_session", 0) + 1
    if session is None:
        STATE["sessions"] += 1
        session = f"upstream-session-{STATE['sessions']}"
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "body": body.decode("utf-8", "replace"),
        },
        headers={"X-Upstream": "raw", "Connection": "close, X-Drop-Me", "X-Drop-Me": "secret", "Mcp-Session-Id": session},
    )


async def sse(request: Request) -> Response:
    count = int(request.query_params.get("count", "10"))
    interval = float(request.query_params.get("interval", "0"))
    size = int(request.query_params.get("size", "16"))

    async def events():
        for index in range(count):
            yield f"id: {index}\nevent: message\ndata: {json.dumps({'n': index, 'pad': 'x' * size})}\n\n".encode()
            if interval:
                await asyncio.sleep(interval)

    return StreamingResponse(events(), media_type="text/event-stream")


async def sse_forever(request: Request) -> Response:
    if (answer := await discover_answer(request)) is not None:
        return answer
    STATE["stream_requests"] += 1

    async def events():
        STATE["active_streams"] += 1
        try:
            index = 0
            while True:
                yield f"id: {index}\ndata: {{\"n\": {index}}}\n\n".encode()
                index += 1
                await asyncio.sleep(0.1)
        finally:
            STATE["active_streams"] -= 1
            STATE["disconnects"] += 1

    return StreamingResponse(events(), media_type="text/event-stream")


async def session_stream(request: Request) -> Response:
    """A session-based server whose POSTs are echoed (a new session for a request without one)
    and whose GET is the session's stream, open until the client goes."""
    if request.method == "GET":
        return await sse_forever(request)
    return await echo(request)


async def session_stream_brief(request: Request) -> Response:
    """As `session_stream`, but the session's GET stream ends after two events."""
    if request.method != "GET":
        return await echo(request)

    async def events():
        for index in range(2):
            yield f"id: {index}\ndata: {{\"n\": {index}}}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream")


async def refuse(request: Request) -> Response:
    """Refuses every request with 400 and a JSON-RPC error that is not a 2026-07-28-only server's
    (-32022); `/refuse-long` pads its message past 64 KiB."""
    message = json.loads(await request.body() or b"{}")
    text = "not today" + ("." * 70_000 if request.url.path.endswith("-long") else "")
    return JSONResponse({"jsonrpc": "2.0", "id": message.get("id"), "error": {"code": -32600, "message": text}}, status_code=400)


async def discover_answer(request: Request) -> Response | None:
    """The gateway's own era probe answered as a 2026-07-28 server would (the streaming and
    hanging routes would otherwise never answer it)."""
    if request.method == "POST" and request.headers.get("mcp-method") == "server/discover":
        message = json.loads(await request.body())
        return JSONResponse({"jsonrpc": "2.0", "id": message.get("id"), "result": {"supportedVersions": ["2026-07-28"]}})
    return None


async def hang(request: Request) -> Response:
    if (answer := await discover_answer(request)) is not None:
        return answer
    STATE["hanging"] = STATE.get("hanging", 0) + 1
    try:
        # Wait for the caller going away (uvicorn does not cancel a plain handler by itself): once
        # the body is read, the next ASGI message is the disconnect.
        await request.body()
        try:
            while (await asyncio.wait_for(request.receive(), 1800))["type"] != "http.disconnect":
                pass
        except asyncio.TimeoutError:
            return Response(status_code=204)
        STATE["hang_disconnects"] = STATE.get("hang_disconnects", 0) + 1
        return Response(status_code=499)
    finally:
        STATE["hanging"] -= 1


PAGES = {
    None: (["hidden_1", "hidden_2"], "page-1"),
    "page-1": (["hidden_3"], "page-2"),
    "page-2": (["hidden_4", "visible_a"], "page-3"),
    "page-3": (["visible_b", "hidden_5"], None),
}
PAGED = {"seen": [], "sse": False}


async def paged(request: Request) -> Response:
    """tools/list in pages, most of them hidden by the test's policy; records what was asked."""
    message = json.loads(await request.body())
    cursor = (message.get("params") or {}).get("cursor")
    PAGED["seen"].append({"id": message.get("id"), "cursor": cursor})
    names, next_cursor = PAGES[cursor]
    result = {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in names]}
    if next_cursor:
        result["nextCursor"] = next_cursor
    answer = {"jsonrpc": "2.0", "id": message.get("id"), "result": result}
    if PAGED["sse"]:
        async def events():
            yield b": keep-alive\n\n"
            yield f"event: message\ndata: {json.dumps({'jsonrpc': '2.0', 'method': 'notifications/message', 'params': {'level': 'info', 'data': 'x'}})}\n\n".encode()
            yield f"id: e1\nevent: message\ndata: {json.dumps(answer)}\n\n".encode()
        return StreamingResponse(events(), media_type="text/event-stream")
    return JSONResponse(answer)


async def paged_reset(request: Request) -> Response:
    PAGED["seen"] = []
    PAGED["sse"] = request.query_params.get("sse") == "1"
    return Response(status_code=204)


async def paged_seen(request: Request) -> Response:
    return JSONResponse(PAGED["seen"])


async def state(request: Request) -> Response:
    return JSONResponse(STATE)


app = Starlette(
    routes=[
        Route("/echo", echo, methods=["GET", "POST", "DELETE", "PUT"]),
        Route("/sse", sse, methods=["GET", "POST"]),
        Route("/sse-forever", sse_forever, methods=["GET", "POST"]),
        Route("/session-stream", session_stream, methods=["GET", "POST", "DELETE"]),
        Route("/session-stream-brief", session_stream_brief, methods=["GET", "POST", "DELETE"]),
        Route("/refuse", refuse, methods=["POST"]),
        Route("/refuse-long", refuse, methods=["POST"]),
        Route("/hang", hang, methods=["GET", "POST"]),
        Route("/state", state, methods=["GET"]),
        Route("/paged", paged, methods=["POST"]),
        Route("/paged/reset", paged_reset, methods=["POST"]),
        Route("/paged/seen", paged_seen, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
