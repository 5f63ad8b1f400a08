"""The Api deployment: the HTTP ingress (FastAPI) in front of the model deployment: the Classifier
(POST /v1/classify), or the QuestionAnswerer for a QA model (POST /v1/answer).

It validates every request before any model work: each failure a client can cause is answered with
a 4xx and a JSON body `{"error": ..., "detail": ...}` saying what was wrong. Valid texts go to a
Classifier replica through a deployment handle; when that replica dies mid-request (preemption,
OOM kill), the request is resent to another replica up to `serve.retries` times, and only then
answered 503 with Retry-After: a dead replica never turns into a 500 or a hang.

No `from __future__ import annotations` here: Serve pickles the decorated class by value, and
FastAPI must see the route annotations (Request) as real types, not strings.
"""

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from distillray import storage
from serve.batching import split_like
from serve.schemas import AnswerRequest, AnswerResponse, ClassifyRequest, ClassifyResponse, ErrorBody, ModelInfo

logger = logging.getLogger("ray.serve")

MAX_BODY_BYTES = 4 << 20  # larger bodies get 413 before they are parsed
_ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 405, 413, 415, 422, 503)}

app = FastAPI(title="distillray classifier",
              description="Text classification (or extractive question answering) by a distilled student "
                          "(or any exported model dir).",
              version="1")


class ApiError(Exception):
    """An answer other than 200: a request the client must fix (4xx), or no model replica could
    answer (503). Becomes `status` with a JSON body."""

    def __init__(self, status: int, error: str, detail: Any = None, headers: dict | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def _error(status: int, error: str, detail: Any = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=ErrorBody(error=error, detail=detail).model_dump(),
                        headers=headers)


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.status, exc.error, exc.detail, exc.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(422, "invalid request", jsonable_errors(exc.errors()))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        msg = f"no such path: {request.url.path}; the API is POST /v1/classify, POST /v1/answer, GET /v1/model, GET /healthz (docs: /docs)"
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


def read_json(body: bytes, content_type: str | None, limits: str) -> Any:
    """The JSON of a request body, or a 415/413/400 ApiError; `limits` says what a body may hold."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, f"Content-Type must be application/json (got {content_type or 'none'})")
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"body of {len(body)} bytes exceeds the {MAX_BODY_BYTES}-byte limit; send {limits}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, f"body is not valid UTF-8 (byte {e.start}); encode the JSON as UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "body JSON is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def parse_classify(body: bytes, content_type: str | None, max_texts: int, max_chars: int) -> list:
    """Raw request -> texts (or (text, text_pair) tuples), or an ApiError naming what to fix. Pure:
    unit-testable."""
    payload = read_json(body, content_type, f"at most {max_texts} texts of at most {max_chars} characters")
    if not isinstance(payload, dict):
        raise ApiError(422, 'body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}')
    try:
        req = ClassifyRequest.model_validate(payload)
    except (ValidationError, RecursionError) as e:
        detail = jsonable_errors(e.errors()) if isinstance(e, ValidationError) else None
        why = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in detail or [])[:300]
        raise ApiError(422, f'invalid request ({why or "nested too deeply"}); send {{"text": "..."}} '
                            'or {"texts": ["...", ...]}', detail) from None
    texts = req.items()
    if not texts:
        raise ApiError(422, '"texts" is empty; send at least one text')
    if len(texts) > max_texts:
        raise ApiError(413, f"{len(texts)} texts exceed serve.max_batch_texts={max_texts}; split the request")
    for i, item in enumerate(texts):
        single = req.text is not None
        for t, where in zip((item,) if isinstance(item, str) else item,
                            ("text", "text_pair") if single else (f"texts[{i}]", f"text_pairs[{i}]")):
            if not t.strip():
                raise ApiError(422, f"{where} is empty; send non-empty text")
            if len(t) > max_chars:
                raise ApiError(413, f"{where} has {len(t)} characters, over serve.max_chars={max_chars}; shorten it")
    return texts


ANSWER_HINT = 'send {"question": "...", "context": "..."} or a list of them'


def parse_answer(body: bytes, content_type: str | None, max_items: int, max_chars: int,
                 max_context_chars: int) -> list[tuple[str, str]]:
    """Raw POST /v1/answer request -> (question, context) tuples, or an ApiError naming what to
    fix. The body is one {"question", "context"} object or a JSON list of them. Pure: unit-testable."""
    payload = read_json(body, content_type, f"at most {max_items} questions with contexts of at most "
                                            f"{max_context_chars} characters")
    single = isinstance(payload, dict)
    if not single and not isinstance(payload, list):
        raise ApiError(422, f"body must be a JSON object or a list of objects; {ANSWER_HINT}")
    items = [payload] if single else payload
    if not items:
        raise ApiError(422, f"the list is empty; {ANSWER_HINT}")
    if len(items) > max_items:
        raise ApiError(413, f"{len(items)} questions exceed serve.max_batch_texts={max_items}; split the request")
    out = []
    for i, item in enumerate(items):
        where = "" if single else f"[{i}]."  # names the list item in each message
        if not isinstance(item, dict):
            raise ApiError(422, f"body{where[:-1]} is a {type(item).__name__}, not an object; {ANSWER_HINT}")
        try:
            req = AnswerRequest.model_validate(item)
        except (ValidationError, RecursionError) as e:
            detail = jsonable_errors(e.errors()) if isinstance(e, ValidationError) else None
            why = "; ".join(f"{where}{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in detail or [])[:300]
            raise ApiError(422, f"invalid request ({why or 'nested too deeply'}); {ANSWER_HINT}", detail) from None
        for name, text, limit, key in (("question", req.question, max_chars, "max_chars"),
                                       ("context", req.context, max_context_chars, "max_context_chars")):
            if not text.strip():
                raise ApiError(422, f"{where}{name} is empty; send a non-empty {name}")
            if len(text) > limit:
                raise ApiError(413, f"{where}{name} has {len(text)} characters, over "
                                    f"serve.{key}={limit}; shorten it")
        out.append((req.question, req.context))
    return out


def check_endpoint(task: str, route: str) -> None:
    """A QA model answers on /v1/answer only, a classifier on /v1/classify only: a 422 names the
    endpoint to use."""
    if task == "qa" and route == "classify":
        raise ApiError(422, 'this model answers questions: POST /v1/answer with {"question": "...", '
                            '"context": "..."}, not /v1/classify')
    if task != "qa" and route == "answer":
        raise ApiError(422, f"this model classifies {'sentence pairs' if task == 'pair' else 'texts'}: POST "
                            '/v1/classify with {"text": "..."}, not /v1/answer (a question-answering model '
                            "serves that)")


def check_task(items: list, task: str) -> None:
    """A sentence-pair model needs a text_pair with every text; a single-text model takes none."""
    pairs = not isinstance(items[0], str)
    if task == "pair" and not pairs:
        raise ApiError(422, 'this model classifies sentence pairs: send {"text": "...", "text_pair": "..."} '
                            'or {"texts": [...], "text_pairs": [...]}')
    if task != "pair" and pairs:
        raise ApiError(422, 'this model classifies single texts: send {"text": "..."} or {"texts": [...]} '
                            'without text_pair / text_pairs')


class _Metrics:
    """Request count and latency, exported through Ray's metrics (dashboard, Prometheus). Created
    in the replica, never on the driver. (Batch sizes are recorded by the Classifier.)"""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Histogram

        self.requests = Counter("distillray_serve_requests", "HTTP requests by route and status code",
                                tag_keys=("model", "route", "code"))
        self.latency = Histogram("distillray_serve_latency_ms", "request latency (ms) inside the ingress",
                                 boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
                                 tag_keys=("model", "route"))

    def request(self, model: str, route: str, code: int, ms: float) -> None:
        self.requests.inc(1, tags={"model": model, "route": route, "code": str(code)})
        self.latency.observe(ms, tags={"model": model, "route": route})


def _replica_api() -> "Api | None":
    """The Api replica serving this request. Found through Serve's replica context, not a module
    global: Serve pickles this module's code by value, so a global set in __init__ is not the one
    this middleware would read."""
    try:
        return serve.get_replica_context().servable_object
    except Exception:  # not inside a replica (e.g. the app under a plain ASGI test client)
        return None


class CountRequests:
    """Counts every request and its latency (under the model id, by route and status code).

    A plain ASGI middleware: Starlette's `@app.middleware("http")` (BaseHTTPMiddleware) runs each
    request through an extra task group and memory streams, CPU that the model replica shares on
    a small node."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500  # 500 unless a response starts (the error handler's)

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            api = _replica_api()
            if isinstance(getattr(api, "metrics", None), _Metrics):
                route = scope["path"] if status != 404 else "unknown"
                api.count(route, status, (time.perf_counter() - t0) * 1000)


app.add_middleware(CountRequests)


def _prediction(labels: list[str], p: list[float]) -> dict[str, Any]:
    best = max(range(len(p)), key=p.__getitem__)
    return {"label": labels[best], "score": p[best], "probs": dict(zip(labels, p))}


@serve.deployment(name="Api", graceful_shutdown_timeout_s=5)
@serve.ingress(app)
class Api:
    def __init__(self, settings: dict[str, Any], classifier: Any) -> None:
        self.s = settings
        self.model = classifier  # DeploymentHandle to the Classifier (or QuestionAnswerer) deployment
        self.info: dict[str, Any] | None = None
        self.metrics = _Metrics()
        self._pending: set[asyncio.Task] = set()  # metric records waiting for the model id
        self._classify_together.set_max_batch_size(settings["max_batch_size"])
        self._classify_together.set_batch_wait_timeout_s(settings["batch_wait_timeout_s"])
        self._answer_together.set_max_batch_size(settings["max_batch_size"])
        self._answer_together.set_batch_wait_timeout_s(settings["batch_wait_timeout_s"])

    async def _call(self, method: str, *args: Any) -> Any:
        """Call the model deployment; resend to another replica when the one that had the request died."""
        tries = self.s["retries"] + 1
        for attempt in range(1, tries + 1):
            try:
                return await getattr(self.model, method).remote(*args)
            except RayActorError as e:  # the replica died (or is unreachable) with our request in it
                logger.warning("model replica lost during %s (attempt %d of %d): %s",
                               method, attempt, tries, type(e).__name__)
                if attempt < tries:
                    await asyncio.sleep(0.05 * attempt)
        raise ApiError(503, f"no model replica could answer after {tries} attempt{'s' * (tries > 1)} "
                            "(replicas restarting); retry shortly", headers={"Retry-After": "2"})

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=8)
    async def _classify_together(self, requests: list[list[str]]) -> list[list[list[float]]]:
        """The texts of requests that arrive together go to the Classifier in one call: the model
        replica pays its per-call cost (transport, scheduling, bookkeeping) once per batch, not per
        request; on 2 cores that took the student from 47 to 60 req/s behind Serve's default proxy.
        Same size and wait as the Classifier's `@serve.batch`, which still batches across ingress
        replicas; up to 8 calls are in flight, so the model replica always has the next one queued.
        A lost replica fails, or is retried for, every request of the batch alike."""
        return split_like(requests, await self._call("classify", [t for texts in requests for t in texts]))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=8)
    async def _answer_together(self, requests: list[list[tuple[str, str]]]) -> list[list[dict]]:
        """`_classify_together` for (question, context) pairs: one call to the QuestionAnswerer for
        the questions of requests that arrive together."""
        return split_like(requests, await self._call("answer", [qc for items in requests for qc in items]))

    async def _model_info(self) -> dict[str, Any]:
        if self.info is None:
            self.info = ModelInfo(**await self._call("model_info")).model_dump()
        return self.info

    async def _parsed(self, route: str, parse: Any, *args: Any) -> tuple[list, dict[str, Any]]:
        """`parse(*args)`, validated before any model work, and the model's info. A request for the
        other endpoint (valid there, or refused by `parse` with a 422) gets the 422 naming the one
        this model serves."""
        try:
            items = parse(*args)
        except ApiError as e:
            if e.status == 422:
                check_endpoint((await self._model_info()).get("task", "single"), route)
            raise
        info = await self._model_info()
        check_endpoint(info.get("task", "single"), route)
        return items, info

    def count(self, route: str, code: int, ms: float) -> None:
        """Record one request under the model id the Classifier tags batch sizes with
        (`student@<hash>[+int8]`), so request, latency and batch metrics of one model share one
        `model` tag. Until the id is known (a 4xx before the first classify), it is fetched off
        the response path: a restarting Classifier must not hold up an answer."""
        if self.info is not None:
            self.metrics.request(self.info["model"], route, code, ms)
            return

        async def when_known() -> None:
            try:
                model = (await self._model_info())["model"]
            except ApiError:  # no replica answers: count it under the dir name
                model = (storage.split(self.s["model"])[1] + ("+onnx" if self.s.get("backend") == "onnx" else "")
                         + ("+int8" if self.s["quantize"] else ""))
            self.metrics.request(model, route, code, ms)

        task = asyncio.get_running_loop().create_task(when_known())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": ClassifyRequest.model_json_schema()}}}})
    async def classify(self, request: Request) -> JSONResponse:
        """Classify `text` or `texts`: the label, its score and every label's probability."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ApiError(413, f"body of {length} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
        texts, info = await self._parsed("classify", parse_classify, await request.body(),
                                         request.headers.get("content-type"), self.s["max_batch_texts"],
                                         self.s["max_chars"])
        check_task(texts, info.get("task", "single"))
        probs = await self._classify_together(texts)
        # built as the ClassifyResponse schema says (the docs' response_model), and returned as
        # JSON as is: FastAPI would otherwise validate and re-encode it, per request
        return JSONResponse({"model": info["model"], "predictions": [_prediction(info["labels"], p) for p in probs]})

    @app.post("/v1/answer", response_model=AnswerResponse, responses=_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "anyOf": [AnswerRequest.model_json_schema(),
                            {"type": "array", "items": AnswerRequest.model_json_schema()}]}}}}})
    async def answer(self, request: Request) -> JSONResponse:
        """Answer `question` from `context` (or each of a list of them): the answer text, its score
        and its [start, end) characters in the context. A QA model only."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ApiError(413, f"body of {length} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
        items, info = await self._parsed("answer", parse_answer, await request.body(),
                                         request.headers.get("content-type"), self.s["max_batch_texts"],
                                         self.s["max_chars"], self.s["max_context_chars"])
        answers = await self._answer_together(items)
        return JSONResponse({"model": info["model"], "answers": answers})

    @app.get("/v1/model", response_model=ModelInfo, responses={503: {"model": ErrorBody}})
    async def model(self) -> dict[str, Any]:
        """The model being served: labels, size, and where it came from."""
        return await self._model_info()

    @app.get("/healthz", responses={503: {"model": ErrorBody}})
    async def healthz(self) -> dict[str, str]:
        """ok when a model replica answers."""
        info = await self._call("model_info")
        return {"status": "ok", "model": info["model"]}
