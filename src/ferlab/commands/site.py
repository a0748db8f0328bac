"""ferlab site --out DIR [--model NAME|PATH ...]: the web page, its runtime and the models as a static site"""

from __future__ import annotations

from ._options import check_output


def add_parser(sub) -> None:
    p = sub.add_parser("site", help="write the web page, its runtime and the models to a folder any static web "
                                    "server serves: the page runs everything on the visitor's device",
                       description="Write a static site: the web page (live camera and photos), onnxruntime-web "
                                   "(vendored, no CDN), the face detectors and the models with their cards. Any "
                                   "static server serves it (nginx, a bucket, GitHub Pages); the page runs the "
                                   "whole pipeline in the browser. Threads need the server to send "
                                   "'Cross-Origin-Opener-Policy: same-origin' and "
                                   "'Cross-Origin-Embedder-Policy: require-corp' (a _headers file is written "
                                   "for hosts that read it); without them the page runs on one thread.")
    p.add_argument("--out", required=True, help="folder to write (new, empty, or a site written before)")
    p.add_argument("--model", action="append", metavar="NAME|PATH",
                   help="a bundled model name, an .onnx path (card beside it) or a folder of them; repeat for "
                        "several (default: every bundled model; the page's default is 'default' or the first)")
    p.add_argument("--no-gzip", action="store_true", help="do not write the precompressed NAME.gz copies")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serving.site import write_site

    check_output(args.out, "--out", folder=True)
    s = write_site(args.out, args.model, compress=not args.no_gzip)
    print(f"wrote {s['out']}: {s['files']} files, {s['bytes'] / 2**20:.1f} MB; models {', '.join(s['models'])} "
          f"(default {s['default']}). Serve the folder with any static web server, e.g. "
          f"`python -m http.server -d {s['out']}` (one thread: it sends no COOP/COEP headers), and open it.")
    return 0
