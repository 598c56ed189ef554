"""The web service and the live page: ``ferkit serve``.

    ferkit serve [--host 127.0.0.1] [--port 8000] [--model PATH] [--detector haar]
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict

Endpoints: ``POST /v1/predict`` (one image, multipart field ``file``), ``POST /v1/predict/batch``
(several, field ``files``), ``GET /v1/health``, ``GET /v1/model``, the page at ``/`` and the
OpenAPI docs at ``/docs``. The model loads once; each request runs in a worker thread on one of a
small pool of pipelines, so the event loop never blocks and requests run side by side. Uploads are
checked by decoding them, never by their name or content type, against size, count and pixel limits.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import queue
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from ferkit.data import EMOTIONS_7, class_mapping
from ferkit.detection import DETECTORS, create_detector
from ferkit.inference import BACKENDS, BUNDLED_MODEL, EmotionPredictor, FacePrediction
from ferkit.pipeline import FacePipeline

WEB_DIR = Path(__file__).parent / "web"
MODEL_CARD = BUNDLED_MODEL.with_name("fer_resnet18_cpu.json")
CHUNK = 1 << 16


@dataclass(frozen=True)
class ServiceConfig:
    """How one service process runs.

    ``pipelines``: requests analysed side by side in this process, each pipeline with its own
    detector and ONNX Runtime session of ``threads`` threads. ``max_side``: larger images are shrunk
    to this longer side for detection (faces are still cropped from the full image). The default
    detector is YuNet: faster than Haar at the same size (8 clients of ``benchmarks/serve_load.py``:
    p99 84 ms against 239 ms) and it finds more faces (``benchmarks/detector_recall.py``).
    """

    model: str | None = None
    device: str = "auto"
    backend: str = "auto"
    detector: str = "yunet"
    max_side: int = 320
    max_upload_bytes: int = 10 * 2**20
    max_batch: int = 16
    max_pixels: int = 40_000_000
    pipelines: int = 1
    threads: int = 1


class RequestError(Exception):
    """A client error: HTTP ``status`` and a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)  # both in args: the error crosses from worker processes intact
        self.status, self.message = status, message


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """A BGR image from uploaded bytes: the header is read first (a small file cannot claim a
    billion pixels), then the pixels; anything OpenCV cannot decode is refused."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError(400, f"{name}: empty upload")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise RequestError(415, f"{name}: not an image (could not read an image header)") from None
    if width * height > max_pixels:
        raise RequestError(413, f"{name}: {width}x{height} is {width * height} pixels, over the limit of {max_pixels}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise RequestError(415, f"{name}: not a decodable image (JPEG, PNG, BMP, WebP or TIFF)")
    return image


def face_record(face: FacePrediction, class_names: tuple[str, ...]) -> dict:
    x, y, w, h = face.box
    return {"box": {"x": x, "y": y, "w": w, "h": h}, "emotion": face.emotion,
            "confidence": round(float(face.probabilities[face.index]), 6),
            "probabilities": {n: round(float(p), 6) for n, p in zip(class_names, face.probabilities, strict=True)}}


class PipelinePool:
    """A few pipelines sharing nothing, handed out one request at a time (detectors and sessions
    are not shared between threads)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.free: queue.Queue[FacePipeline] = queue.Queue()
        for _ in range(max(1, config.pipelines)):
            predictor = EmotionPredictor(config.model, config.device, backend=config.backend, threads=config.threads)
            self.free.put(FacePipeline(predictor, create_detector(config.detector)))
        self.sample = self.free.queue[0]

    @contextmanager
    def pipeline(self) -> Iterator[FacePipeline]:
        pipeline = self.free.get()
        try:
            yield pipeline
        finally:
            self.free.put(pipeline)

    def predict(self, data: bytes, name: str) -> dict:
        """Decode and analyse one upload (runs in a worker thread)."""
        start = time.perf_counter()
        image = decode_image(data, name, self.config.max_pixels)
        decoded = time.perf_counter()
        with self.pipeline() as pipeline:
            faces = pipeline.process_image(image, self.config.max_side)
        done = time.perf_counter()
        class_names = self.sample.class_names
        return {"filename": name, "width": image.shape[1], "height": image.shape[0],
                "faces": [face_record(f, class_names) for f in faces],
                "timing_ms": {"decode": round(1000 * (decoded - start), 2),
                              "inference": round(1000 * (done - decoded), 2)}}


_process_pool: PipelinePool | None = None  # the pipeline of a worker process


def _start_worker(config: dict) -> None:
    global _process_pool
    cv2.setNumThreads(1)  # one core per worker process: the processes are the parallelism
    _process_pool = PipelinePool(ServiceConfig(**config))


def _ready(seconds: float) -> int:
    time.sleep(seconds)  # busy long enough that every worker process gets one: all start up now
    return os.getpid()


def _predict_in_worker(data: bytes, name: str) -> dict:
    return _process_pool.predict(data, name)


def model_info(pool: PipelinePool) -> dict:
    predictor = pool.sample.predictor
    names = list(predictor.class_names)
    info = {"name": predictor.checkpoint_path.name, "classes": names, "backend": predictor.backend,
            "detector": pool.config.detector, "fer2013_mapping": {}, "accuracy": None}
    if len(names) in (4, 7):  # the class each of FER2013's seven labels is counted as
        mapping = class_mapping(len(names))
        info["fer2013_mapping"] = {label: names[mapping[i]] for i, label in enumerate(EMOTIONS_7)}
    if predictor.checkpoint_path == BUNDLED_MODEL and MODEL_CARD.is_file():
        card = json.loads(MODEL_CARD.read_text())
        info["name"], info["accuracy"] = card["name"], card["accuracy"]
    return info


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


class Prediction(BaseModel):
    filename: str
    width: int
    height: int
    faces: list[Face]
    timing_ms: dict[str, float]
    model: str


class BatchPrediction(BaseModel):
    results: list[Prediction]
    model: str
    timing_ms: dict[str, float]


class Error(BaseModel):
    detail: str


def create_app(config: ServiceConfig | None = None, processes: int = 0) -> FastAPI:
    """The FastAPI application (``uvicorn`` serves it; tests call it through ``TestClient``).

    ``processes`` > 1 analyses images in that many worker processes, each with its own pipeline:
    the YuNet wheel holds Python's lock while it detects, so threads alone would use one core.
    """
    config = config or ServiceConfig()
    pool = PipelinePool(config)
    workers = None
    if processes > 1:
        workers = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_start_worker, initargs=(asdict(config),))
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read by each worker's OpenMP (YuNet uses it) as it spawns
        try:
            readiness = [workers.submit(_ready, 0.5) for _ in range(processes)]  # spawns the processes
        finally:
            if previous is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = previous
        started = {f.result() for f in readiness}
        if len(started) < processes:
            raise RuntimeError(f"only {len(started)} of {processes} worker processes started")

    async def analyse(data: bytes, name: str) -> dict:
        if workers is None:
            return await run_in_threadpool(pool.predict, data, name)
        return await asyncio.get_running_loop().run_in_executor(workers, _predict_in_worker, data, name)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if workers is not None:
            workers.shutdown(cancel_futures=True)

    app = FastAPI(title="ferkit", version="1", lifespan=lifespan, description="Facial emotion recognition: faces, "
                  "boxes and the probabilities of each emotion. Errors are JSON: {\"detail\": \"what is wrong\"}.")

    errors = {code: {"model": Error} for code in (400, 413, 415)}

    @app.exception_handler(RequestError)
    async def request_error(_: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

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

    def check_length(request: Request, limit: int) -> None:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise RequestError(413, f"request body of {length} bytes is over the upload limit of {limit} bytes")

    model_name = model_info(pool)["name"]

    @app.post("/v1/predict", response_model=Prediction, responses=errors, summary="Emotions of every face in an image")
    async def predict(request: Request, file: Annotated[UploadFile, File(description="a JPEG, PNG, BMP, WebP or "
                                                                                      "TIFF image")]) -> dict:
        check_length(request, config.max_upload_bytes + CHUNK)
        start = time.perf_counter()
        data = await read_upload(file)
        result = await analyse(data, file.filename or "upload")
        result["timing_ms"]["total"] = round(1000 * (time.perf_counter() - start), 2)
        return {**result, "model": model_name}

    @app.post("/v1/predict/batch", response_model=BatchPrediction, responses=errors,
              summary="Emotions of every face in several images")
    async def predict_batch(request: Request, files: Annotated[list[UploadFile], File(description="images")]) -> dict:
        check_length(request, config.max_batch * (config.max_upload_bytes + CHUNK))
        if len(files) > config.max_batch:
            raise RequestError(400, f"{len(files)} images in one batch, over the limit of {config.max_batch}")
        start = time.perf_counter()
        uploads = [(await read_upload(f), f.filename or f"upload {i}") for i, f in enumerate(files)]
        results = [await analyse(data, name) for data, name in uploads]
        return {"results": [{**r, "model": model_name} for r in results], "model": model_name,
                "timing_ms": {"total": round(1000 * (time.perf_counter() - start), 2)}}

    @app.get("/v1/health", summary="Whether the service is up")
    async def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/model", summary="The model: classes, FER2013 label mapping, measured accuracy")
    async def model() -> dict:
        return model_info(pool)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def serve_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ferkit serve", description="The ferkit web service and live page.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", help="checkpoint or ONNX export (default: the bundled model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--detector", choices=DETECTORS, default=ServiceConfig.detector,
                        help=f"face detector (default: {ServiceConfig.detector})")
    parser.add_argument("--max-side", type=int, default=ServiceConfig.max_side,
                        help=f"shrink larger images to this longer side for detection ({ServiceConfig.max_side})")
    parser.add_argument("--max-upload-mb", type=float, default=ServiceConfig.max_upload_bytes / 2**20,
                        help="largest upload accepted, in MiB (default: 10)")
    parser.add_argument("--max-batch", type=int, default=ServiceConfig.max_batch, help="most images in one batch")
    parser.add_argument("--max-pixels", type=int, default=ServiceConfig.max_pixels, help="largest image, in pixels")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes analysing images side by side, each with its own model (default: one per core)")
    args = parser.parse_args(argv)
    import uvicorn

    config = ServiceConfig(args.model, args.device, args.backend, args.detector, args.max_side,
                           int(args.max_upload_mb * 2**20), args.max_batch, args.max_pixels)
    app = create_app(config, processes=args.workers)
    print(f"ferkit serving on http://{args.host}:{args.port}/ (API docs at /docs), {args.workers} worker(s)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
