"""The explorer's Starlette application: the page, its files, and the JSON API it reads.

====================================  ========================================================
``GET /``                             the page
``GET /static/...``                   its scripts, styles and onnxruntime-web (StaticFiles)
``GET /api/options``                  what the controls offer (variants, weights, runtimes)
``GET /api/cost?alpha=...``           the cost view (``cost_view``)
``GET /api/predict?...&runtime=``     predicted time per layer (``mobilenet.latency``)
``POST /api/measure?...&runtime=``    start a measurement in the background: ``{"id"}``
``POST /api/calibrate?runtime=``      calibrate the latency model here, in the background
``GET /api/jobs/{id}``                its progress, then its result
``GET /api/choose?budget=&runtime=``  top-1 against cost, Pareto front, the chosen model
``POST /api/classify?weights=``       the request body is a photo: its top-5 on the server
``GET /api/browser/{weights}/{file}`` model.onnx, labels.json, preprocess.json, model.json
====================================  ========================================================

Errors the user can cause are answered ``{"error": "one line"}`` with status 400 (413 for an
upload over ``MAX_UPLOAD_BYTES``); the page shows the line. Every response carries the headers
that make the page cross-origin isolated, which onnxruntime-web needs to use threads.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mobilenet import arch
from mobilenet.deploy.runtimes import PRECISIONS as RUNTIME_PRECISIONS
from mobilenet.deploy.runtimes import offered_precisions
from mobilenet.errors import InputError, MobileNetError, spelled
from mobilenet.threads import check_threads
from mobilenet.web import assets
from mobilenet.web.classifier import MAX_UPLOAD_BYTES, Classifier
from mobilenet.web.cost_view import (
    DEFAULT_BYTES_PER_ELEMENT,
    QUERY_SPELLING,
    config_from_query,
    cost_view,
    number_or_text,
)
from mobilenet.web.jobs import BusyError, Jobs
from mobilenet.web.time_view import calibrate, choose_view, measure, prediction_view

# What the page offers: every precision but int8, which needs a folder of calibration images. Whether
# a runtime runs one natively here is the runtime's own rule, checked where it is built.
PRECISIONS: tuple[str, ...] = tuple(p for p in RUNTIME_PRECISIONS if p != "int8")
# An oversized upload is read to its end (and dropped) up to this, so the browser gets the answer
# instead of a reset connection; beyond it the connection is closed.
DRAIN_LIMIT = 16 * MAX_UPLOAD_BYTES
BROWSER_FILES = ("model.onnx", "labels.json", "preprocess.json", "model.json")
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class UploadTooLargeError(InputError):
    """An upload over the limit."""


ERROR_STATUS: tuple[tuple[type[MobileNetError], int], ...] = (
    (UploadTooLargeError, 413), (BusyError, 409), (InputError, 400), (MobileNetError, 500),
)


def create_app(classifier: Classifier | None = None) -> Starlette:
    """The explorer as an ASGI application (``uvicorn.run(create_app())``)."""
    app = Starlette(middleware=[Middleware(CrossOriginIsolation), Middleware(SpeakAsThePage)], routes=[
        Route("/", page),
        Route("/api/options", options),
        Route("/api/cost", api_cost),
        Route("/api/predict", api_predict),
        Route("/api/measure", api_measure, methods=["POST"]),
        Route("/api/calibrate", api_calibrate, methods=["POST"]),
        Route("/api/jobs/{job_id}", api_job),
        Route("/api/choose", api_choose),
        Route("/api/classify", api_classify, methods=["POST"]),
        Route("/api/browser/{weights}/{name}", api_browser_file),
        Mount("/static", StaticFiles(directory=assets.STATIC), name="static"),
    ])
    app.state.classifier = classifier or Classifier()
    app.state.jobs = Jobs()
    return app


class SpeakAsThePage:
    """ASGI middleware: a request's errors name parameters as the page's query does (``classes``,
    not ``num_classes``), even where ``mobilenet explore`` serves them inside the command line's
    flag spelling."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with spelled(QUERY_SPELLING):
            await self.app(scope, receive, send)


class CrossOriginIsolation:
    """ASGI middleware: every response gets ``ISOLATION_HEADERS``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_isolated(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(ISOLATION_HEADERS)
            await send(message)

        await self.app(scope, receive, send_isolated if scope["type"] == "http" else send)


def answer(work: Any) -> Response:
    """``work()`` as JSON, or the project's error it raised as ``{"error"}``."""
    try:
        return JSONResponse(work())
    except MobileNetError as err:
        return error_response(err)


def error_response(err: MobileNetError) -> Response:
    """``{"error": "one line"}``: 413 for an upload too large, 409 while a measurement runs, 400 for
    the user's other errors, 500 for failures the project detected."""
    status = next(code for kind, code in ERROR_STATUS if isinstance(err, kind))
    return JSONResponse({"error": str(err)}, status_code=status)


def page(request: Request) -> Response:
    return FileResponse(assets.STATIC / "index.html")


def options(request: Request) -> Response:
    def work() -> dict[str, Any]:
        classifier: Classifier = request.app.state.classifier
        try:
            assets.onnxruntime_web()
            browser = {"available": True, "onnxruntime_web": assets.onnxruntime_web_version()}
        except InputError as err:
            browser = {"available": False, "reason": str(err)}
        return {
            "variants": list(arch.VARIANTS), "activations": list(arch.ACTIVATIONS), "paddings": list(arch.PADDINGS),
            "roundings": list(arch.ROUNDINGS), "bytes_per_element": DEFAULT_BYTES_PER_ELEMENT,
            "weights": classifier.weights_options(), "runtimes": classifier.runtimes(), "precisions": list(PRECISIONS),
            "browser": browser,
            "max_upload_bytes": MAX_UPLOAD_BYTES,
        }

    return answer(work)


def api_cost(request: Request) -> Response:
    return answer(lambda: cost_view(request.query_params))


def _runtime_settings(request: Request) -> tuple[str, str, int | None]:
    query = request.query_params
    runtime = query.get("runtime", "torch")
    precision = query.get("precision", "fp32")
    threads = number_or_text(query.get("threads", "")) if query.get("threads") else None
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise InputError(f"threads must be a whole number >= 1, got {query.get('threads')!r}")
    check_threads(threads)  # the runtimes' own bound (this process's CPUs), before a job starts them
    runtimes = request.app.state.classifier.runtimes()
    if runtime not in runtimes:
        raise InputError(f"runtime must be one of {', '.join(runtimes)} here, got {runtime!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in offered_precisions(runtime):
        # Named among this server's runtimes: the library's own refusal lists every runtime a command
        # line may ask for, installed here or not, which the page cannot offer.
        offering = [r for r in runtimes if precision in offered_precisions(r)]
        runs = " or ".join(p for p in offered_precisions(runtime) if p in PRECISIONS)
        instead = (f"the runtimes here that do: {', '.join(offering)}" if offering
                   else f"none of the runtimes here does: choose {runs}")
        raise InputError(f"{runtime} does not offer {precision}; {instead}")
    return runtime, precision, threads


def _cost_query(request: Request) -> dict[str, str]:
    skip = ("runtime", "precision", "threads", "budget", "weights")
    return {key: value for key, value in request.query_params.items() if key not in skip}


def api_predict(request: Request) -> Response:
    def work() -> dict[str, Any]:
        cfg, _ = config_from_query(_cost_query(request))
        return prediction_view(cfg, *_runtime_settings(request))

    return answer(work)


def api_measure(request: Request) -> Response:
    def work() -> dict[str, Any]:
        cfg, _ = config_from_query(_cost_query(request))
        runtime, precision, threads = _runtime_settings(request)
        job = request.app.state.jobs.start(
            f"measuring {cfg.name} in {runtime} {precision}",
            lambda progress: measure(cfg, runtime, precision, threads, progress),
        )
        return job.to_dict()

    return answer(work)


def api_calibrate(request: Request) -> Response:
    def work() -> dict[str, Any]:
        runtime, precision, threads = _runtime_settings(request)
        job = request.app.state.jobs.start(f"calibrating {runtime} {precision}",
                                           lambda progress: calibrate(runtime, precision, threads, progress))
        return job.to_dict()

    return answer(work)


def api_job(request: Request) -> Response:
    job = request.app.state.jobs.get(request.path_params["job_id"])
    if job is None:
        return JSONResponse({"error": "no such job (the server keeps the last few)"}, status_code=404)
    return JSONResponse(job.to_dict())


def api_choose(request: Request) -> Response:
    def work() -> dict[str, Any]:
        text = request.query_params.get("budget", "").strip()
        budget = number_or_text(text) if text else None
        if budget is not None and (not isinstance(budget, (int, float)) or not math.isfinite(budget)):
            raise InputError(f"the budget must be a number > 0, got {text!r}")
        return choose_view(budget, *_runtime_settings(request))

    return answer(work)


async def api_classify(request: Request) -> Response:
    classifier: Classifier = request.app.state.classifier
    try:
        upload = await read_upload(request)
    except InputError as err:
        return error_response(err)
    except ClientDisconnect:  # the client left mid-upload: no one hears an answer, and it is no fault of ours
        return Response(status_code=400)
    weights = request.query_params.get("weights") or classifier.default_weights()
    runtime = request.query_params.get("runtime", "torch")
    return await run_in_threadpool(answer, lambda: classifier.classify(upload, weights, runtime))


async def read_upload(request: Request, limit: int = MAX_UPLOAD_BYTES) -> bytes:
    """The request body, at most ``limit`` bytes; ``UploadTooLargeError`` beyond (the rest is
    read and dropped up to ``DRAIN_LIMIT``, so the client hears why)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_LIMIT:
        raise _too_large(int(declared), limit)
    body, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            body += chunk
        elif size > DRAIN_LIMIT:
            break
    if size > limit:
        raise _too_large(size, limit)
    if not body:
        raise InputError("no photo in the request: send the image file itself as the request body")
    return bytes(body)


def _too_large(size: int, limit: int) -> UploadTooLargeError:
    return UploadTooLargeError(f"the upload is {size / 2**20:.1f} MB; photos up to {limit / 2**20:.0f} MB are accepted")


def api_browser_file(request: Request) -> Response:
    """One of the files the page's own classifier loads, for registry weights only."""
    weights, name = request.path_params["weights"], request.path_params["name"]
    if name not in BROWSER_FILES:
        return JSONResponse({"error": f"no such file: {name}"}, status_code=404)
    classifier: Classifier = request.app.state.classifier
    try:
        files = classifier.browser_files(weights)
    except MobileNetError as err:
        return error_response(err)
    if name == "model.onnx":
        return FileResponse(files["onnx"], media_type="application/octet-stream")
    return JSONResponse(files[name.removesuffix(".json")])
