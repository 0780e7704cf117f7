"""JSON batching: `POST /v1.0/$batch` with at most 20 requests (GD concepts/json-batching.md).

Each inner request runs through `GraphApi.run` with the outer token's claims, so it is routed,
authorised, throttled and faulted on its own; a throttled one comes back as a 429 inside the 200
batch with its own Retry-After. Requests run in order; `dependsOn` on a failed request gives 424.
An injected connection fault inside a batch becomes a 504 for that inner request.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sandbox.graph.core import Ctx, GraphApi
from sandbox.messages import ConnectionFault, GraphError, Headers, Request, Response

MAX_REQUESTS = 20
KEPT_HEADERS = (
    "cache-control",
    "content-type",
    "etag",
    "location",
    "odata-version",
    "preference-applied",
    "retry-after",
)


def register(api: GraphApi) -> None:
    @api.route("POST", r"/\$batch")
    def batch(ctx: Ctx) -> Response:
        data = ctx.request.json_object()
        requests_in = data.get("requests")
        if not isinstance(requests_in, list) or not requests_in:
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(requests_in) > MAX_REQUESTS:
            raise GraphError(
                400,
                "BadRequest",
                f"The number of requests in a batch exceeds the maximum of {MAX_REQUESTS}.",
            )
        ids: set[str] = set()
        for item in requests_in:
            if not isinstance(item, dict) or not all(k in item for k in ("id", "method", "url")):
                raise GraphError(400, "BadRequest", "Each batch request needs id, method and url.")
            key = str(item["id"]).lower()
            if key in ids:
                raise GraphError(400, "BadRequest", f"Batch request id '{item['id']}' is repeated.")
            ids.add(key)
            if item.get("body") is not None:
                headers = {str(k).lower() for k in (item.get("headers") or {})}
                if "content-type" not in headers:
                    raise GraphError(
                        400,
                        "BadRequest",
                        f"Write request id : {item['id']} does not contain Content-Type header "
                        "or body.",
                    )
        statuses: dict[str, int] = {}
        responses = []
        for item in requests_in:
            item_id = str(item["id"])
            depends = [str(d).lower() for d in item.get("dependsOn") or []]
            if any(statuses.get(d, 424) >= 400 for d in depends):
                statuses[item_id.lower()] = 424
                responses.append(
                    {
                        "id": item_id,
                        "status": 424,
                        "headers": {"Content-Type": "application/json"},
                        "body": {
                            "error": {
                                "code": "FailedDependency",
                                "message": "A request this request depends on failed.",
                            }
                        },
                    }
                )
                continue
            inner = _inner_request(ctx, item)
            response = _run_inner(api, inner, ctx.claims)
            statuses[item_id.lower()] = response.status
            entry: dict[str, Any] = {
                "id": item_id,
                "status": response.status,
                "headers": {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS},
            }
            parsed = response.parsed()
            if parsed is not None:
                entry["body"] = parsed
            responses.append(entry)
        return Response.json(200, {"responses": responses})


def _inner_request(ctx: Ctx, item: dict[str, Any]) -> Request:
    url = str(item["url"])
    if not url.startswith("/"):
        url = "/" + url
    headers = Headers((str(k), str(v)) for k, v in (item.get("headers") or {}).items())
    body = item.get("body")
    raw = b""
    if isinstance(body, dict | list):
        raw = json.dumps(body).encode()
    elif isinstance(body, str):
        raw = body.encode()
    return Request.build(
        str(item["method"]).upper(),
        GraphApi.PREFIX + url,
        headers,
        raw,
        ctx.origin,
        batch_parent=ctx.request.request_id,
    )


def _run_inner(api: GraphApi, inner: Request, claims: dict[str, Any]) -> Response:
    started = time.monotonic()
    if inner.path.lower().endswith("/$batch"):
        response = GraphError(
            400, "BadRequest", "Nested batch requests are not supported."
        ).response(inner)
    else:
        try:
            response = api.run(inner, claims)
        except ConnectionFault as fault:
            response = GraphError(
                504, "UnknownError", "The gateway did not receive a timely response."
            ).response(inner)
            response.fault = fault.fault_id
    api.log.record(
        inner, response, "graph", started, time.monotonic(), app_id=str(claims.get("appid"))
    )
    return response
