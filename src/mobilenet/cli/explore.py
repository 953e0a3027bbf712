"""``mobilenet explore``: the explorer in the browser (``mobilenet.web.serve``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from mobilenet.web.serve import DEFAULT_HOST, DEFAULT_PORT

    p = subparsers.add_parser(
        "explore", help="a local web page: every layer's cost, time, the published models, photos classified",
        description="Serve the explorer: per-layer mult-adds, parameters and memory for any α, resolution and "
        "variant, each separable block against the full convolution it replaces, predicted and measured time, "
        "the published models' top-1 against their cost, and a photo classified on the server and in the browser "
        "itself (onnxruntime-web, no network needed). Needs pip install 'mobilenet[web]'.",
    )
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 opens it to the "
                   "network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=run_explore)


def run_explore(args: argparse.Namespace) -> int:
    from mobilenet.web.serve import serve

    serve(args.host, args.port, open_browser=args.open, say=lambda line: print(line, flush=True))
    return 0
