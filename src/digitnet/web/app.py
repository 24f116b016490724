"""The draw-a-digit web page's server: a Flask app with a small JSON API, served by Gunicorn.

Routes::

    GET  /                     the page (static/index.html; static/ holds its JS and CSS)
    GET  /api/model            architecture, dataset, class names, test accuracy, training settings
    POST /api/predict          a PNG/JPEG/... body (Content-Type image/*), or JSON {"pixels": [784 values
                               0-255]}; returns the digit, the ten probabilities, the 28 x 28 the network
                               saw, each hidden layer's activity and the strongest paths
    POST /api/predict?number=1 the same bodies; returns the number read, left to right, and each digit's
                               box, reading, probabilities and 28 x 28, as ``digitnet predict --number``
    GET  /api/unit/L/U         the weights into unit U of layer L (1 = first hidden layer)
    GET  /api/random           a random test image: {"index", "label", "pixels"}

Images go through :func:`digitnet.preprocess.prepare`, the same steps as
``digitnet predict``; a 784-vector is taken as an MNIST-style image as it is.
Bodies over ``MAX_BODY`` bytes, images over ``MAX_SIDE`` pixels a side,
malformed JSON and bad pixel lists get a 4xx answer with ``{"error": ...}``.
Flask serves only files inside ``static/``.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request, send_from_directory
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, HTTPException

from digitnet import preprocess
from digitnet.errors import DigitnetError, ModelFileError, TooLargeError
from digitnet.web import explain

STATIC = Path(__file__).parent / "static"
MAX_BODY = 1 << 20  # 1 MB
MAX_SIDE = 4096  # pixels a side
# On every answer, the app's and the server's own (digitnet.web.server).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:",
    "Cache-Control": "no-store",
}


class ApiError(Exception):
    """A request the API refuses: ``status`` and a message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(classifier, test_set=None) -> Flask:
    """The Flask app serving ``classifier`` (a :class:`~digitnet.modelfile.Classifier`).

    ``test_set`` is a callable returning ``(x, y)`` test arrays for
    ``/api/random``; it is called once, on the first request that needs it.
    """
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False
    n_inputs = classifier.architecture["sizes"][0]
    cache: dict = {}
    lock = threading.Lock()

    def test_images():
        with lock:
            if "test" not in cache:
                try:
                    cache["test"] = test_set() if test_set else None
                except DigitnetError as exc:
                    cache["test"] = exc
        if isinstance(cache["test"], Exception) or cache["test"] is None:
            why = cache["test"] or "the server was started without one"
            raise ApiError(503, f"no test images to pick from: {why}")
        return cache["test"]

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(STATIC, name)  # safe_join: nothing outside static/

    @app.get("/api/model")
    def model_info():
        meta = classifier.meta
        metrics = meta.get("metrics") or {}
        params = sum(p.data.size for p in classifier.model.parameters())
        return jsonify(
            {
                "architecture": classifier.architecture,
                "parameters": int(params),
                "dataset": meta.get("dataset") or "",
                "class_names": classifier.class_names,
                "test_accuracy": metrics.get("test_accuracy"),
                "epochs": metrics.get("epochs"),
                "config": meta.get("config") or {},
                "file": Path(meta.get("path", "")).name,
                "digitnet_version": meta.get("digitnet_version"),
            }
        )

    def read_number(kind: str):
        """``POST /api/predict?number=1``: every digit of the image (or 784-pixel drawing), left to right."""

        def reader(x):  # the model's probabilities for (n, 28, 28) digits, to split touching ones
            return classifier.predict_proba(x.reshape(len(x), -1))

        try:
            if kind == "application/json":
                pixels = _pixels_from_json(_body(), n_inputs)
                number = preprocess.to_number(pixels.reshape(28, 28), name="the drawing", reader=reader)
            else:
                body = _body()
                if not body:
                    raise ApiError(400, "the request has no image in its body")
                number = preprocess.prepare_number(
                    body, max_side=MAX_SIDE, name="the uploaded file", reader=reader
                )
        except ModelFileError:  # the model's fault, not the request's (see model_error)
            raise
        except DigitnetError as exc:
            raise ApiError(413 if isinstance(exc, TooLargeError) else 422, str(exc)) from None
        p = classifier.predict_proba(np.stack([d.pixels.reshape(-1) for d in number.digits]))
        result = preprocess.read_number(number, p, classifier.class_names)
        result["inverted"] = number.inverted
        if number.notes:
            result["notes"] = number.notes
        return jsonify(result)

    @app.post("/api/predict")
    def predict():
        kind = (request.mimetype or "").lower()
        if request.args.get("number", "0").lower() in ("1", "true", "yes") and (
            kind == "application/json" or kind.startswith("image/") or kind == "application/octet-stream"
        ):
            return read_number(kind)
        if kind == "application/json":
            pixels, prepared = _pixels_from_json(_body(), n_inputs), None
        elif kind.startswith("image/") or kind == "application/octet-stream":
            body = _body()
            if not body:
                raise ApiError(400, "the request has no image in its body")
            try:
                prepared = preprocess.prepare(body, max_side=MAX_SIDE, name="the uploaded file")
            except DigitnetError as exc:
                raise ApiError(413 if isinstance(exc, TooLargeError) else 422, str(exc)) from None
            pixels = prepared.pixels.reshape(-1).astype(np.float32)
        else:
            raise ApiError(
                415,
                f'send an image (Content-Type image/png ...) or JSON {{"pixels": [...]}}, '
                f"not {kind or 'no Content-Type'}",
            )
        x = classifier.prepare(pixels[None, :])
        answer = classifier.predict_proba(pixels[None, :])[0]  # checked: a model can overflow (model_error)
        result = explain.trace(classifier.model, x, answer)
        result["label"] = classifier.class_names[result["digit"]]
        result["pixels"] = np.round(pixels).astype(int).tolist()
        if prepared is not None:
            result["inverted"] = prepared.inverted
        return jsonify(result)

    @app.get("/api/unit/<int:layer>/<int:unit>")
    def unit_weights(layer, unit):
        try:
            return jsonify(explain.incoming(classifier.model, layer, unit))
        except IndexError as exc:
            raise ApiError(404, str(exc)) from None

    @app.get("/api/random")
    def random_digit():
        x, y = test_images()
        i = int(np.random.default_rng().integers(len(x)))
        return jsonify({"index": i, "label": int(y[i]), "pixels": x[i].astype(int).tolist()})

    @app.errorhandler(ApiError)
    def api_error(exc):
        return jsonify({"error": str(exc)}), exc.status

    @app.errorhandler(ModelFileError)
    def model_error(exc):  # a model whose outputs overflow on this image: the server's fault
        return jsonify({"error": str(exc)}), 500

    @app.errorhandler(HTTPException)
    def http_error(exc):
        messages = {
            413: f"the request body is larger than {MAX_BODY // 1024} KB",
            404: "not found",
            405: "method not allowed",
        }
        methods = getattr(exc, "valid_methods", None)  # a 405's: what the path does take
        allow = {"Allow": ", ".join(methods)} if methods else {}
        return jsonify({"error": messages.get(exc.code, exc.description)}), exc.code, allow

    @app.after_request
    def headers(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def _body() -> bytes:
    """The request's body, at most ``MAX_BODY`` bytes, whether it has a Content-Length or comes in chunks.

    Raises ApiError 413 for a larger body, 400 for one cut short or badly chunked.
    """
    too_big = ApiError(413, f"the request body is larger than {MAX_BODY // 1024} KB")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise too_big
    try:
        if request.content_length is not None:
            data = request.get_data(cache=False)
        else:
            data = request.environ["wsgi.input"].read(MAX_BODY + 1)  # chunked: a byte past the limit tells
    except (OSError, ValueError, ParseException, ClientDisconnected) as exc:
        raise ApiError(
            400, f"the request body was cut short or badly chunked ({type(exc).__name__})"
        ) from None
    if request.content_length is not None and len(data) < request.content_length:
        raise ApiError(400, f"the request body was cut short: {len(data)} of {request.content_length} bytes")
    if len(data) > MAX_BODY:
        raise too_big
    return data


def _pixels_from_json(body: bytes, n_inputs: int) -> np.ndarray:
    """``{"pixels": [...]}`` -> a float32 row of ``n_inputs`` values 0-255; ApiError when it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "the body is not valid JSON (nested too deep)") from None
    if not isinstance(data, dict) or "pixels" not in data:
        raise ApiError(422, 'send {"pixels": [784 numbers 0-255]}')
    side = math.isqrt(n_inputs)
    square = side * side == n_inputs
    wrong = ApiError(
        422,
        f"pixels must be a list of numbers from 0 to 255: {n_inputs} of them"
        + (f", or {side} rows of {side}" if square else ""),
    )
    values = data["pixels"]
    if isinstance(values, list) and values and all(isinstance(row, list) for row in values):
        if not square or len(values) != side or any(len(row) != side for row in values):
            raise wrong
        values = [v for row in values for v in row]  # rows of numbers
    # JSON's numbers only: no true or false, no strings of digits, no deeper lists
    if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
        raise wrong
    try:
        pixels = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        raise wrong from None
    if pixels.size != n_inputs:
        raise ApiError(422, f"pixels must hold {n_inputs} numbers (28 x 28), not {pixels.size}")
    if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise ApiError(422, "pixels must be numbers from 0 to 255")
    return pixels.astype(np.float32)
