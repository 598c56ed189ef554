"""The web service's HTTP side: routes, request and response schemas, upload limits, the page.

    ferkit serve [--host 127.0.0.1] [--port 8000] [--model PATH] [--detector yunet]
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict

Endpoints: ``POST /v1/predict`` (one image, multipart field ``file``), ``POST /v1/predict/batch``
(several, field ``files``), the WebSocket ``/v1/live`` (a stream of frames, faces tracked: ``serve.live``),
``GET /v1/health``, ``GET /v1/model`` and its card ``/v1/model/card``,
the page at ``/`` and the OpenAPI docs at ``/docs`` and ``/redoc`` (offline). Requests pass a Host
check and a body limit on the way in. The analysis itself (decoding, pipelines, worker processes)
is ``serve.workers``: each request runs in a worker thread or process, so the event loop never blocks.
"""

from __future__ import annotations

import dataclasses
import html
import json
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import uvicorn
from fastapi import FastAPI, File, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from markdown_it import MarkdownIt
from pydantic import BaseModel

from ferkit import __version__
from ferkit.serve.config import ServiceConfig, host_refusal
from ferkit.serve.live import LiveSessions, websocket_refusal
from ferkit.serve.workers import (
    CHUNK,
    MODEL_CARD_URL,
    PipelinePool,
    RequestError,
    WorkerProcesses,
    model_info,
    predict_in_worker,
    worker_model_info,
)

WEB_DIR = Path(__file__).parent / "web"
MODEL_CARD = Path(__file__).parents[1] / "weights" / "MODEL_CARD.md"  # a link to docs/MODEL_CARD.md in the repo


class Box(BaseModel):
    x: int
    y: int
    w: int
    h: int


class Face(BaseModel):
    box: Box
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    detection_score: float | None = None
    landmarks: list[list[int]] | None = None  # eyes, nose tip, mouth corners (x, y), where the detector gives them
    track_id: int | None = None


class Prediction(BaseModel):
    filename: str
    width: int
    height: int
    faces: list[Face]
    timing_ms: dict[str, float]
    model: str


class FileError(BaseModel):
    """One file of a batch that could not be analysed: the status it would have had alone, and why."""

    filename: str
    status: int
    error: str


class BatchPrediction(BaseModel):
    results: list[Prediction | FileError]  # one per file, in order: a bad file does not cost the good ones
    model: str
    timing_ms: dict[str, float]


class Error(BaseModel):
    detail: str


class BodyLimit:
    """ASGI middleware: a request whose body passes its route's limit gets a JSON 413, before the body
    is read when ``Content-Length`` says so, else as soon as the bytes received pass it (chunked
    uploads included): at most the limit plus one chunk is ever read."""

    def __init__(self, app, limits: dict[str, int], default: int) -> None:
        self.app, self.limits, self.default = app, limits, default

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"], self.default)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await self._refuse(send, f"request body of {int(length)} bytes is over the upload limit of {limit} "
                                            "bytes")
        received, over, started = 0, False, False

        async def limited_receive():
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # stop reading: to the app, the client has gone
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message) -> None:
            nonlocal started
            if over:  # whatever the app makes of the cut-off body, the answer is 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send, f"request body over the upload limit of {limit} bytes (stopped reading at "
                                     f"{received} bytes)")

    @staticmethod
    async def _refuse(send, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def create_app(config: ServiceConfig | None = None, processes: int = 0) -> FastAPI:
    """The FastAPI application (``uvicorn`` serves it; tests call it through ``TestClient``).

    ``processes`` > 1 analyses images in that many worker processes, each with its own pipeline:
    decoding, cropping and tracking hold Python's lock, so threads alone would share one core.
    """
    config = config or ServiceConfig()
    workers = WorkerProcesses(config, processes) if processes > 1 else None
    pool = PipelinePool(config) if workers is None else None
    info = model_info(pool) if workers is None else workers.executor.submit(worker_model_info).result()

    async def analyse(data: bytes, name: str) -> dict:
        if workers is None:
            return await run_in_threadpool(pool.predict, data, name)
        return await workers.run(predict_in_worker, data, name)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if workers is not None:
            workers.shutdown()

    # FastAPIOffline: FastAPI whose /docs and /redoc serve Swagger UI and ReDoc from files in its wheel, not a CDN
    app = FastAPIOffline(title="ferkit", version=__version__, lifespan=lifespan,
                         description="Facial emotion recognition: faces, boxes and the probabilities of each "
                         "emotion. Errors are JSON: {\"detail\": \"what is wrong\"}.")
    app.state.workers = workers  # None, or the supervised worker processes

    errors = {code: {"model": Error} for code in (400, 413, 415, 503)}

    @app.middleware("http")
    async def check_host(request: Request, call_next):
        """Refuse requests addressed to a name this service does not answer to (DNS rebinding)."""
        if refusal := host_refusal(request.headers.get("host", ""), config.allowed_hosts):
            return JSONResponse({"detail": refusal}, status_code=400)
        return await call_next(request)

    # Bodies are limited as they arrive (the form parser would otherwise store a whole upload first):
    # one upload for /v1/predict, max_batch of them for the batch route, headers and all.
    single = config.max_upload_bytes + CHUNK
    app.add_middleware(BodyLimit, limits={"/v1/predict/batch": config.max_batch * single}, default=single)

    if config.cors_origins:  # browsers may call the API from these sites' pages; from no other site
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])

    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        """A malformed request's 422 in the shape every error has: ``detail`` is one string."""
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                             for e in error.errors())
        return JSONResponse({"detail": problems or "invalid request"}, status_code=422)

    async def read_upload(upload: UploadFile) -> bytes:
        """The upload's bytes, refused as soon as they pass the size limit."""
        chunks, size = [], 0
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > config.max_upload_bytes:
                raise RequestError(413, f"{upload.filename or 'upload'}: over the upload limit of "
                                        f"{config.max_upload_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    model_name = info["name"]

    @app.post("/v1/predict", response_model=Prediction, responses=errors, summary="Emotions of every face in an image")
    async def predict(file: Annotated[UploadFile, File(description="a JPEG, PNG, BMP, WebP or TIFF image")]) -> dict:
        start = time.perf_counter()
        data = await read_upload(file)
        result = await analyse(data, file.filename or "upload")
        result["timing_ms"]["total"] = round(1000 * (time.perf_counter() - start), 2)
        return {**result, "model": model_name}

    @app.post("/v1/predict/batch", response_model=BatchPrediction, responses=errors,
              summary="Emotions of every face in several images")
    async def predict_batch(files: Annotated[list[UploadFile], File(description="images")]) -> dict:
        if len(files) > config.max_batch:
            raise RequestError(400, f"{len(files)} images in one batch, over the limit of {config.max_batch}")
        start = time.perf_counter()
        results = []
        for i, upload in enumerate(files):
            name = upload.filename or f"upload {i}"
            try:
                results.append({**await analyse(await read_upload(upload), name), "model": model_name})
            except RequestError as e:  # this file's answer; the others' stand
                results.append({"filename": name, "status": e.status, "error": e.message})
        return {"results": results, "model": model_name,
                "timing_ms": {"total": round(1000 * (time.perf_counter() - start), 2)}}

    live_sessions = LiveSessions(config, workers, model_name, pool.sample.predictor if pool else None)
    app.state.live = live_sessions

    @app.websocket("/v1/live")
    async def live(websocket: WebSocket) -> None:
        """A live stream: binary frames in, one JSON answer per frame out, faces tracked (``serve.live``)."""
        if refusal := websocket_refusal(websocket.headers, config):
            await websocket.close(code=1008, reason=refusal)
            return
        started = await run_in_threadpool(live_sessions.start)  # the first one loads the classifier
        if started is None:
            await websocket.accept()
            await websocket.send_json({"error": f"{config.max_live_sessions} live sessions are open, the most this "
                                                "service takes: try again later", "status": 503})
            await websocket.close(code=1013)
            return
        session_id, session = started
        try:
            await websocket.accept()  # once the session is ready: the client's first frame finds its pipeline
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                if message.get("bytes") is None:
                    answer = {"error": "send frames as binary messages (JPEG or PNG bytes)", "status": 400}
                else:
                    try:
                        answer = await run_in_threadpool(session.process, message["bytes"])
                    except RequestError as e:
                        answer = {"error": e.message, "status": e.status}
                await websocket.send_json(answer)
        except WebSocketDisconnect:
            pass
        finally:
            live_sessions.end(session_id)

    @app.get("/v1/health", summary="Whether the service is up, and its worker processes")
    async def health() -> dict:
        if workers is None:
            return {"status": "ok", "model": model_name, "workers": None}
        state = workers.state()
        ok = state["healthy"] and state["alive"] == state["processes"]
        return {"status": "ok" if ok else "degraded", "model": model_name, "workers": state}

    @app.get("/v1/model", summary="The model: classes, FER2013 label mapping, measured accuracy")
    async def model() -> dict:
        return info

    @app.get(MODEL_CARD_URL, summary="The bundled models' card: intended use, accuracy, calibration, failure modes",
             response_class=PlainTextResponse)
    async def model_card() -> PlainTextResponse:
        return PlainTextResponse(MODEL_CARD.read_text(), media_type="text/markdown; charset=utf-8")

    @app.get("/card", include_in_schema=False)
    async def model_card_page() -> HTMLResponse:  # the card as the page's link shows it: rendered, not raw Markdown
        return HTMLResponse(card_page(MODEL_CARD.read_text()))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def card_page(markdown: str) -> str:
    """The model card as an HTML page in the service's style (tables as GitHub shows them)."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    title = html.escape(markdown.lstrip("# ").splitlines()[0] if markdown.strip() else "Model card")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="/static/style.css"></head><body class="card">{body}</body></html>')


def serve(config: ServiceConfig, host: str = "127.0.0.1", port: int = 8000, processes: int = 1) -> None:
    """Serve the application on ``host:port`` until stopped (Ctrl-C or SIGTERM).

    The port is bound before the model loads or anything is printed, so that a busy port is one
    error naming it (a ``ValueError``), never "serving on" and then a failure. A ``host`` that names
    one address is added to the allowed host names.
    """
    if host not in ("0.0.0.0", "::", "") and host not in config.allowed_hosts:
        config = dataclasses.replace(config, allowed_hosts=(*config.allowed_hosts, host))
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        raise ValueError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); choose another "
                         "--port, or stop what is using it") from None
    app = create_app(config, processes=processes)
    print(f"ferkit serving on http://{host}:{port}/ (API docs at /docs), {processes} worker(s)", flush=True)
    # Once shut down, uvicorn raises again the signal that stopped it; with the default handler that kills the
    # process before multiprocessing removes the workers' semaphores ("leaked semaphore objects"). Exiting through
    # Python instead runs that clean-up.
    previous = {s: signal.signal(s, _exit_on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)
