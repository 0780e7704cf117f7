"""A small function app for the devhost tests: every trigger and binding devhost supports.

What the timer and queue functions did is observable from outside: they write queue messages
(through output bindings) or append lines to files under the folder named by ``SAMPLE_RECORD_DIR``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

CONNECTION = "AzureWebJobsStorage"


def record(name: str, line: str) -> None:
    """Append one line to ``$SAMPLE_RECORD_DIR/<name>``."""
    with (Path(os.environ["SAMPLE_RECORD_DIR"]) / name).open("a", encoding="utf-8") as file:
        file.write(line + "\n")


@app.route(route="items/{kind}/{id:int}", methods=["GET"])
def items(req: func.HttpRequest) -> func.HttpResponse:
    document = {
        "kind": req.route_params.get("kind"),
        "id": req.route_params.get("id"),
        "query": dict(req.params),
        "method": req.method,
        "url": req.url,
    }
    return func.HttpResponse(json.dumps(document), mimetype="application/json")


@app.function_name("item_delete")
@app.route(route="items/{kind}/{id:int}", methods=["DELETE"])
def item_delete(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(status_code=204)


@app.route(route="items/{kind}/special", methods=["GET"])
def special(req: func.HttpRequest) -> func.HttpResponse:
    """A literal segment: preferred over ``{id}`` for the same path shape."""
    return func.HttpResponse("special " + req.route_params["kind"])


@app.route(route="greet/{name?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def greet(req: func.HttpRequest) -> func.HttpResponse:
    """Anonymous, async, optional parameter, custom header and status."""
    name = req.route_params.get("name") or "world"
    return func.HttpResponse(
        f"hello {name}", status_code=201, headers={"X-Sample": "yes"}, mimetype="text/plain"
    )


@app.route(route="enqueue", methods=["POST"])
@app.queue_output(arg_name="msg", queue_name="sample-out", connection=CONNECTION)
def enqueue(req: func.HttpRequest, msg: func.Out[str]) -> func.HttpResponse:
    """Sets the output binding, then fails when asked to (nothing must be written then)."""
    body = req.get_body().decode("utf-8")
    msg.set(body)
    if body.startswith("fail"):
        raise RuntimeError("asked to fail")
    return func.HttpResponse("queued", status_code=202)


@app.route(route="slow", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def slow(req: func.HttpRequest) -> func.HttpResponse:
    """Signals that it started, then takes a moment (for the graceful-shutdown test)."""
    record("slow-started", "started")
    time.sleep(1.5)
    return func.HttpResponse("done")


@app.timer_trigger(arg_name="timer", schedule="%SAMPLE_SCHEDULE%")
@app.queue_output(arg_name="ticks", queue_name="sample-ticks", connection=CONNECTION)
def tick(timer: func.TimerRequest, ticks: func.Out[str]) -> None:
    ticks.set(json.dumps({"past_due": timer.past_due}))


@app.timer_trigger(arg_name="timer", schedule="0 0 3 * * *")
def nightly(timer: func.TimerRequest) -> None:
    record("nightly", f"past_due={timer.past_due}")


@app.queue_trigger(arg_name="message", queue_name="sample-in", connection=CONNECTION)
@app.queue_output(arg_name="consumed", queue_name="sample-consumed", connection=CONNECTION)
def consume(message: func.QueueMessage, consumed: func.Out[str]) -> None:
    if message.get_body().startswith(b"slow"):
        time.sleep(0.2)
    consumed.set(
        json.dumps(
            {
                "body": message.get_body().decode("utf-8"),
                "id": message.id,
                "dequeue_count": message.dequeue_count,
                "pid": os.getpid(),
            }
        )
    )


@app.queue_trigger(arg_name="message", queue_name="sample-fail", connection=CONNECTION)
def always_fails(message: func.QueueMessage) -> None:
    record("attempts", f"{message.get_body().decode('utf-8')} {message.dequeue_count}")
    raise RuntimeError("this function always fails")
