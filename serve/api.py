"""The Classifier deployment: a FastAPI ingress in front of one exported model dir, with
dynamic batching (`@serve.batch`) across concurrent requests.

Every failure a client can cause is answered with a 4xx and a JSON body `{"error": ..., "detail":
...}` saying what was wrong; the replica keeps serving. The forward pass runs in a worker thread so
health checks and request parsing never wait behind a batch.

No `from __future__ import annotations` here: Serve pickles the decorated class by value, and
FastAPI must see the route annotations (Request) as real types, not strings.
"""

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.schemas import ClassifyRequest, ClassifyResponse, ErrorBody, ModelInfo

logger = logging.getLogger("ray.serve")

MAX_BODY_BYTES = 4 << 20  # larger bodies get 413 before they are parsed
_ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 405, 413, 415, 422)}

app = FastAPI(title="distillray classifier",
              description="Text classification by a distilled student (or any exported model dir).",
              version="1")


class ClientError(Exception):
    """A request the client must fix: becomes `status` with a JSON body."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


def _error(status: int, error: str, detail: Any = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=ErrorBody(error=error, detail=detail).model_dump(),
                        headers=headers)


@app.exception_handler(ClientError)
async def _client_error(request: Request, exc: ClientError) -> JSONResponse:
    return _error(exc.status, exc.error, exc.detail)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(422, "invalid request", jsonable_errors(exc.errors()))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        msg = f"no such path: {request.url.path}; the API is POST /v1/classify, GET /v1/model, GET /healthz (docs: /docs)"
    elif exc.status_code == 405:
        msg = f"method {request.method} is not allowed on {request.url.path}; allowed: {exc.headers.get('Allow', '') if exc.headers else ''}"
    else:
        msg = str(exc.detail)
    return _error(exc.status_code, msg, headers=exc.headers)


@app.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, f"internal error ({type(exc).__name__}); the server logs have the traceback")


def jsonable_errors(errors: list[dict]) -> list[dict]:
    """pydantic errors without the raw input (could be huge) or exception objects."""
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]


def parse_classify(body: bytes, content_type: str | None, max_texts: int, max_chars: int) -> list[str]:
    """Raw request -> texts, or a ClientError naming what to fix. Pure: unit-testable."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ClientError(415, f"Content-Type must be application/json (got {content_type or 'none'})")
    if len(body) > MAX_BODY_BYTES:
        raise ClientError(413, f"body of {len(body)} bytes exceeds the {MAX_BODY_BYTES}-byte limit; "
                               f"send at most {max_texts} texts of at most {max_chars} characters")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClientError(400, f"body is not valid UTF-8 (byte {e.start}); encode the JSON as UTF-8") from None
    try:
        payload = json.loads(text)
    except RecursionError:
        raise ClientError(400, "body JSON is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ClientError(400, f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(payload, dict):
        raise ClientError(422, 'body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}')
    try:
        req = ClassifyRequest.model_validate(payload)
    except (ValidationError, RecursionError) as e:
        detail = jsonable_errors(e.errors()) if isinstance(e, ValidationError) else None
        why = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in detail or [])[:300]
        raise ClientError(422, f'invalid request ({why or "nested too deeply"}); send {{"text": "..."}} '
                               'or {"texts": ["...", ...]}', detail) from None
    texts = req.items()
    if not texts:
        raise ClientError(422, '"texts" is empty; send at least one text')
    if len(texts) > max_texts:
        raise ClientError(413, f"{len(texts)} texts exceed serve.max_batch_texts={max_texts}; split the request")
    for i, t in enumerate(texts):
        where = "text" if req.text is not None else f"texts[{i}]"
        if not t.strip():
            raise ClientError(422, f"{where} is empty; send non-empty text")
        if len(t) > max_chars:
            raise ClientError(413, f"{where} has {len(t)} characters, over serve.max_chars={max_chars}; shorten it")
    return texts


class _Metrics:
    """Request count, latency and batch size, exported through Ray's metrics (dashboard,
    Prometheus). Created in the replica, never on the driver."""

    def __init__(self, model: str) -> None:
        from ray.util.metrics import Counter, Histogram

        self.tags = {"model": model}
        self.requests = Counter("distillray_serve_requests", "HTTP requests by route and status code",
                                tag_keys=("model", "route", "code"))
        self.latency = Histogram("distillray_serve_latency_ms", "request latency (ms) inside the replica",
                                 boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
                                 tag_keys=("model", "route"))
        self.batch = Histogram("distillray_serve_batch_size", "texts per forward pass",
                               boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256], tag_keys=("model",))

    def request(self, route: str, code: int, ms: float) -> None:
        self.requests.inc(1, tags={**self.tags, "route": route, "code": str(code)})
        self.latency.observe(ms, tags={**self.tags, "route": route})


def provenance(model_dir: str | Path) -> dict[str, Any]:
    """Teacher, retention and speedup from the run that made this model, when it was distillray's."""
    d = Path(model_dir)
    out: dict[str, Any] = {}
    marker = d / "distillray.json"
    if marker.exists():
        m = json.loads(marker.read_text())
        out.update(distilled_from=m.get("teacher"), retention=m.get("retention"), speedup=m.get("speedup"))
    report = d.parent / "report.json"
    if report.exists() and d.name == "student":
        r = json.loads(report.read_text())
        out.update(retention=r.get("retention"), speedup=r.get("speedup"),
                   student_accuracy=r.get("student", {}).get("accuracy"),
                   teacher_accuracy=r.get("teacher", {}).get("accuracy"))
        out.setdefault("distilled_from", r.get("config", {}).get("teacher", {}).get("model"))
    return out


_metrics = None  # the _Metrics of the replica in this process; set by the replica in this process


@app.middleware("http")
async def _count_requests(request: Request, call_next):
    t0 = time.perf_counter()
    response = await call_next(request)
    if _metrics is not None:
        route = request.url.path if response.status_code != 404 else "unknown"
        _metrics.request(route, response.status_code, (time.perf_counter() - t0) * 1000)
    return response


@serve.deployment(name="Classifier", health_check_period_s=5, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=5)
@serve.ingress(app)
class Classifier:
    def __init__(self, settings: dict[str, Any]) -> None:
        import torch

        from distillray.inference import load_for_inference
        from distillray.models import content_hash

        self.s = settings
        torch.set_num_threads(max(1, int(settings["cpus_per_replica"])))
        path = settings["model"]
        self.clf = load_for_inference(path, quantize=settings["quantize"], use_gpu=settings.get("use_gpu", False))
        self.model_id = f"{Path(path).name}@{content_hash(path)[:12]}" + ("+int8" if settings["quantize"] else "")
        self.info = ModelInfo(model=self.model_id, path=str(path), labels=self.clf.labels,
                              params=self.clf.num_params, max_length=self.clf.max_length,
                              quantized=settings["quantize"], **provenance(path)).model_dump()
        self.labels = self.clf.labels
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        global _metrics
        self.metrics = _metrics = _Metrics(self.model_id)
        self.classify_batch.set_max_batch_size(settings["max_batch_size"])
        self.classify_batch.set_batch_wait_timeout_s(settings["batch_wait_timeout_s"])
        self.clf.predict(["warm up"])  # first call pays one-off costs, not the first client
        logger.info("serving %s (%d params, labels %s)", self.model_id, self.clf.num_params, self.labels)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": ClassifyRequest.model_json_schema()}}}})
    async def classify(self, request: Request) -> ClassifyResponse:
        """Classify `text` or `texts`: the label, its score and every label's probability."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ClientError(413, f"body of {length} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
        texts = parse_classify(await request.body(), request.headers.get("content-type"),
                               self.s["max_batch_texts"], self.s["max_chars"])
        probs = await self.classify_batch(texts)
        return ClassifyResponse(model=self.model_id, predictions=[self._prediction(p) for p in probs])

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def classify_batch(self, requests: list[list[str]]) -> list[list[list[float]]]:
        """One forward pass over every text of every request that arrived together."""
        flat = [t for texts in requests for t in texts]
        self.metrics.batch.observe(len(flat), tags=self.metrics.tags)
        probs = await asyncio.get_running_loop().run_in_executor(self.pool, self._forward, flat)
        out, i = [], 0
        for texts in requests:
            out.append(probs[i:i + len(texts)])
            i += len(texts)
        return out

    def _forward(self, texts: list[str]) -> list[list[float]]:
        return self.clf.predict_proba(texts, batch_size=64).tolist()

    def _prediction(self, p: list[float]) -> dict[str, Any]:
        best = max(range(len(p)), key=p.__getitem__)
        return {"label": self.labels[best], "score": p[best], "probs": dict(zip(self.labels, p))}

    @app.get("/v1/model", response_model=ModelInfo)
    async def model(self) -> dict[str, Any]:
        """The model being served: labels, size, and where it came from."""
        return self.info

    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "model": self.model_id}
