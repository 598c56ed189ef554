"""The web service's analysis side: its configuration, upload decoding, pools of pipelines in
threads or worker processes, and the thread settings that keep them from fighting over cores.
Uploads are checked by decoding them, never by their name or content type, against size, count
and pixel limits."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict

import cv2
import numpy as np
from starlette.concurrency import run_in_threadpool

from ferkit.data import EMOTIONS_7, class_mapping
from ferkit.infer.detection import Detection, create_detector
from ferkit.infer.models import bundled
from ferkit.infer.pipeline import FacePipeline
from ferkit.infer.predictor import EmotionPredictor, ImageError
from ferkit.infer.predictor import decode_image as decode_file_bytes
from ferkit.serve.config import ServiceConfig

CHUNK = 1 << 16
MODEL_CARD_URL = "/v1/model/card"  # the bundled models' card (docs/MODEL_CARD.md), served offline


class RequestError(Exception):
    """A client error: HTTP ``status`` and a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)  # both in args: the error crosses from worker processes intact
        self.status, self.message = status, message


STATUS_OF = {"empty": 400, "too_large": 413, "unreadable": 415}  # an ImageError's reason -> HTTP status


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """An upload decoded as every entry point decodes a file (:func:`ferkit.infer.predictor.decode_image`),
    its refusal as a :class:`RequestError` with the status its reason calls for."""
    try:
        return decode_file_bytes(data, name, max_pixels)
    except ImageError as e:
        raise RequestError(STATUS_OF[e.reason], str(e)) from None


def make_predictor(config: ServiceConfig) -> EmotionPredictor:
    """The classifier a service's configuration describes: every pipeline of the service, for uploads
    and for live sessions, is built on one made here."""
    return EmotionPredictor(config.model, config.device, backend=config.backend, threads=config.threads,
                            min_confidence=config.min_confidence, tta=config.tta, align=config.align)


class PipelinePool:
    """A few pipelines sharing nothing, handed out one request at a time (detectors and sessions
    are not shared between threads)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.free: queue.Queue[FacePipeline] = queue.Queue()
        for _ in range(max(1, config.pipelines)):
            self.free.put(FacePipeline(make_predictor(config), create_detector(config.detector)))
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
        return {"filename": name, "width": image.shape[1], "height": image.shape[0],
                "faces": [f.to_dict() for f in faces],
                "timing_ms": {"decode": round(1000 * (decoded - start), 2),
                              "inference": round(1000 * (done - decoded), 2)}}


_process_pool: PipelinePool | None = None  # the pipeline of a worker process


class WorkerProcesses:
    """The worker processes that analyse uploads, supervised: a pool whose worker died (killed, or
    out of memory) is replaced by a fresh one, and each worker is replaced after
    ``config.max_requests_per_worker`` requests, so that memory a native library might leak cannot
    grow without bound (the ``yuface`` wheel's binding kept 36 KiB a call; ferkit no longer calls it).
    """

    def __init__(self, config: ServiceConfig, processes: int) -> None:
        self.config, self.processes, self.restarts = config, processes, 0
        self._lock = threading.Lock()
        self.executor = start_workers(config, processes)

    def healthy(self) -> bool:
        """Whether every worker can take work (ProcessPoolExecutor marks itself broken when one dies)."""
        return not getattr(self.executor, "_broken", False)

    def heal(self) -> None:
        """Replace a broken pool (one restart, whichever request notices first)."""
        with self._lock:
            if self.healthy():
                return
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = start_workers(self.config, self.processes)
            self.restarts += 1

    def call(self, fn, *args):
        """``fn(*args)`` in a worker process, waiting for it; a 503 if the worker died meanwhile (the
        pool is then replaced, and the next call is served)."""
        if not self.healthy():
            self.heal()
        try:
            return self.executor.submit(fn, *args).result()
        except BrokenProcessPool:
            self.heal()
            raise RequestError(503, "a worker process died while analysing this image; the workers were "
                                    "restarted: send it again") from None

    async def run(self, fn, *args):
        """:meth:`call` from the event loop (it waits in a thread)."""
        return await run_in_threadpool(self.call, fn, *args)

    def state(self) -> dict:
        """What ``/v1/health`` reports about the workers."""
        alive = sum(p.is_alive() for p in list((getattr(self.executor, "_processes", None) or {}).values()))
        return {"processes": self.processes, "alive": alive, "healthy": self.healthy(), "restarts": self.restarts,
                "max_requests_per_worker": self.config.max_requests_per_worker}

    def shutdown(self) -> None:
        self.executor.shutdown(cancel_futures=True)


def start_workers(config: ServiceConfig, processes: int) -> ProcessPoolExecutor:
    """``processes`` worker processes, each with its own pipeline and one thread for OpenCV and
    OpenMP (the processes are the parallelism), all started before this returns; each is replaced
    by a fresh one after ``config.max_requests_per_worker`` requests (0: never)."""
    context = multiprocessing.get_context("spawn")
    # Every first-generation worker waits at the barrier once its pipeline is built, so none takes a
    # second readiness task while another is still loading: each answers one, whatever the load.
    # Workers that replace recycled ones skip it (``started`` counts the workers ever started).
    barrier, started = context.Barrier(processes), context.Value("i", 0)
    recycle = {"max_tasks_per_child": config.max_requests_per_worker} if config.max_requests_per_worker else {}
    workers = ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                                  initargs=(asdict(config), barrier, started), **recycle)
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # read by each worker's OpenMP (YuNet uses it) as it spawns
    try:
        readiness = [workers.submit(_ready, 0.5) for _ in range(processes)]  # spawns the processes
    finally:
        if previous is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    pids = {f.result() for f in readiness}
    if len(pids) < processes:
        workers.shutdown(cancel_futures=True)
        raise RuntimeError(f"only {len(pids)} of {processes} worker processes started")
    return workers


def _start_worker(config: dict, barrier, started) -> None:
    global _process_pool
    cv2.setNumThreads(1)  # one core per worker process: the processes are the parallelism
    _process_pool = PipelinePool(ServiceConfig(**config))
    with started.get_lock():
        started.value += 1
        first_generation = started.value <= barrier.parties
    if first_generation:
        barrier.wait(timeout=300)  # a worker that never comes up breaks the barrier: the others stop too


def _ready(seconds: float) -> int:
    time.sleep(seconds)  # busy long enough that every worker process, all started together, gets one
    return os.getpid()


def predict_in_worker(data: bytes, name: str) -> dict:
    """Analyse one upload in a worker process (see :func:`start_workers`)."""
    return _process_pool.predict(data, name)


def detect_in_worker(frame: np.ndarray, scale: float) -> list[Detection]:
    """The faces of a frame, found by a worker process's detector (for live sessions)."""
    return _process_pool.sample.detector.detect(frame, scale)


def worker_model_info() -> dict:
    """:func:`model_info` of a worker process's pool."""
    return model_info(_process_pool)


def model_info(pool: PipelinePool) -> dict:
    predictor = pool.sample.predictor
    names = list(predictor.class_names)
    info = {"name": predictor.checkpoint_path.name, "classes": names, "backend": predictor.backend,
            "detector": pool.config.detector, "fer2013_mapping": {}, "accuracy": None,
            "temperature": predictor.classifier.temperature, "min_confidence": predictor.min_confidence,
            "align": predictor.align,
            "model_card": MODEL_CARD_URL}
    if len(names) in (4, 7):  # the class each of FER2013's seven labels is counted as
        mapping = class_mapping(len(names))
        info["fer2013_mapping"] = {label: names[mapping[i]] for i, label in enumerate(EMOTIONS_7)}
    shipped = bundled(predictor.checkpoint_path)
    if shipped is not None and shipped.card.is_file():
        card = json.loads(shipped.card.read_text())
        info["name"], info["accuracy"] = card["name"], card["accuracy"]
    return info
