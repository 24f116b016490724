"""``digitnet serve``: the draw-a-digit web page for a model, on this machine."""

from __future__ import annotations

import os
import sys
import threading
import webbrowser

from digitnet import modelfile
from digitnet.cli.common import add_data_args, load_model_data, path_arg
from digitnet.errors import DigitnetError

MAX_WORKERS = 64  # processes, each holding its own copy of the model
MAX_CONNECTIONS = 10_000  # per process: each open connection holds a file descriptor


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "serve",
        help=help_line,
        description="Serve a page where you draw a digit (mouse, touch or pen) or upload a photo of one and "
        "watch the network read it: the 28x28 it sees, the ten probabilities, each hidden "
        "layer's activity and the strongest paths to its answer. Also a JSON API: "
        'POST /api/predict (an image, or {"pixels": [784 values]}), GET /api/model.',
    )
    p.add_argument(
        "model", metavar="MODEL", type=path_arg, help="a model file (runs/<run>/model.npz) or its run folder"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every network)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument(
        "--workers", type=int, default=2, help=f"server processes, 1 to {MAX_WORKERS} (default: 2)"
    )
    p.add_argument(
        "--connections",
        type=int,
        default=1000,
        help=f"open connections each process serves at once, 1 to {MAX_CONNECTIONS:,} (default: 1000)",
    )
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    add_data_args(p, dataset_default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        from digitnet.web import Server, check_address, create_app
    except ImportError as exc:
        raise DigitnetError(
            f"digitnet serve needs Flask, Gunicorn and gevent ({exc}): pip install 'digitnet[web]'"
        ) from None
    if not 0 <= args.port <= 65535:
        raise DigitnetError(f"--port must be 0 to 65535, not {args.port}")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise DigitnetError(f"--workers must be 1 to {MAX_WORKERS}, not {args.workers}")
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        raise DigitnetError(f"--connections must be 1 to {MAX_CONNECTIONS:,}, not {args.connections}")
    clf = modelfile.load(args.model)
    try:
        check_address(args.host, args.port)
    except OSError as exc:
        raise DigitnetError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            + (" (choose another --port)" if "in use" in str(exc) else "")
        ) from None
    # The test digits of the page's "random" button, read (or fetched) once here, before any request:
    # no request waits for a download or writes the cache, and the workers share the arrays.
    try:
        ds = load_model_data(args, clf)
        test = (ds.x_test, ds.y_test)
    except DigitnetError as exc:
        if args.data:  # the file asked for is unusable: say so now
            raise
        test = exc
        sys.stderr.write(f"note: no test digits for the page's random button: {exc}\n")

    def test_set():
        if isinstance(test, DigitnetError):
            raise test
        return test

    def ready(url):
        print(f"serving {clf} at {url}  (Ctrl-C to stop)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            sys.stderr.write(f"note: listening on {args.host}: other machines can reach this page\n")
        if args.open:
            threading.Timer(0.5, webbrowser.open, args=(url,)).start()

    server = Server(
        lambda: create_app(clf, test_set=test_set),
        host=args.host,
        port=args.port,
        workers=args.workers,
        connections=args.connections,
        on_ready=ready,
    )
    master = os.getpid()
    try:
        server.run()  # returns, or exits 0, on Ctrl-C or SIGTERM
    except SystemExit as exc:
        if os.getpid() != master:  # a worker process leaving: let it go quietly
            raise
        if exc.code not in (None, 0):
            raise DigitnetError(f"the web server stopped with status {exc.code}") from None
    print("stopped", flush=True)
    return 0
