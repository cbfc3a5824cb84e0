"""A small HTTP prediction service for a fastmlp model: Starlette (ASGI) served by uvicorn.

Install the extra and run from the repository root::

    pip install ".[serve]"
    python examples/serve.py model.npz --host 127.0.0.1 --port 8000 --threads 2

Endpoints
---------
``GET /health``
    ``{"status": "ok", "model": {...architecture...}, "limits": {...}}``.
``POST /predict``
    Body ``{"instances": [[x_1, ..., x_784], ...]}``; answer
    ``{"labels": [...], "probabilities": [[...], ...]}``: one label (a JSON value taken from
    the model's classes) and one row of class probabilities per instance, the columns in
    the order of ``model.classes_`` (``"probabilities"`` is ``null`` for a model trained with
    ``loss="mse"``, which has none). A regressor answers ``{"predictions": [...]}``: one
    number (or one list, with several outputs) per instance.

Bad input never gives a 500: malformed JSON is a 400; a missing key, a row of the wrong
length, a value that is not a number or not finite (``NaN``, ``Infinity``, a number outside
the model's float range) is a 422; too many rows or too large a body is a 413. Every error
is a JSON object ``{"error": "what was wrong"}``.

Threads: parsing and prediction run in Starlette's thread pool, so the event loop keeps
accepting connections while a large request is decoded. fastmlp releases the GIL in its
forward pass, so requests run on several cores at once; batches of up to 64 rows run on the
request's own thread, larger ones borrow up to ``--threads`` cores from a process-wide
budget that keeps concurrent requests from oversubscribing the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import NoReturn

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import fastmlp
from fastmlp import MLP

__all__ = ["DEFAULT_MAX_ROWS", "InputError", "create_app", "main", "parse_instances"]

DEFAULT_MAX_ROWS = 1024
# JSON spends at most ~25 bytes on a float ("-1.2345678901234567e-05, "): 32 per value
# bounds any honest request of max_rows rows, so the body limit follows from the row limit.
BYTES_PER_VALUE = 32
BODY_SLACK = 64 * 1024
_NUMBER_TYPES = frozenset({int, float})

logger = logging.getLogger("fastmlp.serve")


class InputError(Exception):
    """A request the client must fix; carries the HTTP status and a message for the client.

    Parameters
    ----------
    status : int
        400 (not JSON), 413 (too large) or 422 (JSON, but not valid instances).
    message : str
        Says what was wrong, in terms of the request.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN, Infinity and -Infinity, which standard JSON does not
    # have; a model cannot use them either.
    raise InputError(422, f"non-finite value {name} in the body; every value must be finite")


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


def parse_instances(body: bytes, model: MLP, max_rows: int) -> np.ndarray:
    """Decode and check a ``/predict`` body; return the instances as a model-ready array.

    Parameters
    ----------
    body : bytes
        The raw request body: ``{"instances": [[...], ...]}`` in UTF-8 (or UTF-16/32).
    model : MLP
        Gives the row length and the float type.
    max_rows : int
        Most instances one request may hold.

    Returns
    -------
    ndarray of shape (n_rows, model.n_features_in_)
        C-contiguous, of ``model.dtype``, every value finite.

    Raises
    ------
    InputError
        With status 400, 413 or 422 and a message for the client.
    """
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "instances" not in doc:
        raise InputError(422, 'the body must be a JSON object with the key "instances"')
    rows = doc["instances"]
    if not isinstance(rows, list) or not rows:
        raise InputError(422, '"instances" must be a non-empty list of rows')
    if len(rows) > max_rows:
        raise InputError(
            413, f"{len(rows)} instances in one request; at most {max_rows} are allowed"
        )
    n_features = model.n_features_in_
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) != n_features:
            got = f"a list of {len(row)}" if type(row) is list else _json_type(row)
            raise InputError(
                422, f"instances[{i}] must be a list of {n_features} numbers; got {got}"
            )
        # Checked before numpy sees the rows: np.array would quietly turn the strings
        # "1.5" into numbers, null into NaN and true into 1. map and set run in C, so this
        # costs far less than the JSON decoding before it.
        if not set(map(type, row)) <= _NUMBER_TYPES:
            j, bad = next((j, v) for j, v in enumerate(row) if type(v) not in _NUMBER_TYPES)
            shown = _json_type(bad) if type(bad) in (list, dict) else json.dumps(bad)[:40]
            raise InputError(422, f"instances[{i}][{j}] is {shown}, not a number")
    try:
        # A number beyond float32's range becomes inf here; the check below reports it.
        with np.errstate(over="ignore"):
            X = np.array(rows, dtype=model.dtype)
    except OverflowError:  # an integer beyond even float64's range
        raise InputError(422, "a value is too large for the model's floats") from None
    finite = np.isfinite(X)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise InputError(
            422,
            f"instances[{i}][{j}] is not finite in {model.dtype} (NaN, infinity, or beyond "
            f"+-{np.finfo(model.dtype).max:.3g})",
        )
    return X


def _predict(model: MLP, body: bytes, max_rows: int) -> bytes:
    """Parse, predict and encode the answer: the blocking part of a request."""
    X = parse_instances(body, model, max_rows)
    if model.is_regressor:
        answer = {"predictions": model.predict(X).tolist()}
        return json.dumps(answer, allow_nan=False, separators=(",", ":")).encode()
    # Labels come from predict, not from the argmax of the probabilities, so they are
    # exactly model.predict's: softmax in float32 can round nearly tied logits to equal
    # probabilities. The second pass costs a fraction of the JSON decoding above.
    labels = model.predict(X)
    proba = model.predict_proba(X) if model.loss == "cross_entropy" else None
    answer = {
        # tolist() turns numpy scalars into Python ones, which json can write; float32
        # becomes the double of the same value, so the client reads back the exact number.
        "labels": labels.tolist(),
        "probabilities": None if proba is None else proba.tolist(),
    }
    return json.dumps(answer, allow_nan=False, separators=(",", ":")).encode()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) one larger than ``limit`` bytes before reading it all.

    A declared Content-Length is checked up front; a chunked body is counted as it
    arrives, so neither can make the server buffer more than ``limit`` bytes.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(413, f"the body has {declared} bytes; at most {limit} are allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(413, f"the body is larger than the {limit} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    # Connection: close after a refused body: the client may still be sending it, and the
    # rest of it must not be read as the next request on this connection.
    headers = {"connection": "close"} if status == 413 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    model: MLP, *, max_rows: int = DEFAULT_MAX_ROWS, max_body_bytes: int | None = None
) -> Starlette:
    """The ASGI application serving ``model``.

    Parameters
    ----------
    model : MLP
        Shared by all requests, read-only: fastmlp's prediction is safe to call from many
        threads at once.
    max_rows : int
        Most instances one ``/predict`` request may hold (413 beyond).
    max_body_bytes : int, optional
        Largest body accepted (413 beyond). Default: enough for ``max_rows`` rows of
        ``model.n_features_in_`` numbers written at full precision.

    Returns
    -------
    Starlette
        Run it with any ASGI server, or test it with ``starlette.testclient.TestClient``.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fastmlp.MLP; got {type(model).__name__}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive int; got {max_rows!r}")
    if max_body_bytes is None:
        max_body_bytes = max_rows * model.n_features_in_ * BYTES_PER_VALUE + BODY_SLACK
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive; got {max_body_bytes!r}")

    description = {
        "layer_sizes": list(model.layer_sizes),
        "n_features": model.n_features_in_,
        "activation": model.activation,
        "output_activation": model.output_activation,
        "loss": model.loss,
        "dtype": str(model.dtype),
        "classes": None if model.is_regressor else model.classes_.tolist(),
    }
    limits = {"max_rows": max_rows, "max_body_bytes": max_body_bytes}

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": description, "limits": limits})

    async def predict(request: Request) -> Response:
        try:
            body = await _read_body(request, max_body_bytes)
            # Decoding a large body takes milliseconds of CPU: off the event loop, so
            # other connections are still accepted meanwhile; the forward pass then runs
            # without the GIL, in parallel with other requests.
            content = await run_in_threadpool(_predict, model, body, max_rows)
        except InputError as exc:
            return _error(exc.status, exc.message)
        except ClientDisconnect:
            # Nobody is left to read an answer; without this Starlette would log a 500.
            return Response(status_code=400)
        return Response(content, media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        # 404 and 405 as JSON too, so clients parse every error the same way.
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input; the traceback goes to the log, not to the client.
        logger.error("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal server error"}, status_code=500)

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/predict", predict, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.model = model
    app.state.limits = limits
    return app


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    """Command line: load the model once, then serve it until SIGINT or SIGTERM.

    Parameters
    ----------
    argv : list of str, optional
        The arguments; default ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file written by fastmlp.save")
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s; 0: any")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="most cores one large batch may use (default: all); concurrent requests share "
        "the cores through fastmlp's process-wide budget",
    )
    parser.add_argument("--max-rows", type=_positive_int, default=DEFAULT_MAX_ROWS)
    parser.add_argument(
        "--max-body-bytes", type=_positive_int, default=None, help="default: from --max-rows"
    )
    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=256,
        help="concurrent connections and requests before uvicorn answers 503; bounds the "
        "memory held by request bodies (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import uvicorn  # here, so importing this module for create_app needs no uvicorn

    try:
        model = fastmlp.load(args.model)
    except (OSError, ValueError) as exc:
        parser.exit(2, f"serve.py: cannot serve {args.model}: {exc}\n")
    model.n_threads = args.threads
    app = create_app(model, max_rows=args.max_rows, max_body_bytes=args.max_body_bytes)
    logging.basicConfig(level=args.log_level.upper())
    logger.info("serving %r from %s on http://%s:%d", model, args.model, args.host, args.port)
    # One process, one event loop, one copy of the model shared by all threads. If the
    # JSON decoding (which holds the GIL) becomes the bottleneck, run several processes
    # behind a load balancer, each with --threads set to its share of the cores.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        limit_concurrency=args.max_connections,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
