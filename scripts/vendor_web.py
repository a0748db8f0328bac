"""Vendor onnxruntime-web (npm, MIT) and swagger-ui-dist (npm, Apache-2.0) into the web page's static folder:
the page runs the whole pipeline in the browser and ``/docs`` shows the API, with no CDN and nothing
downloaded at run time.

    python scripts/vendor_web.py            # npm pack each pinned version, copy the files, check their sha256
    python scripts/vendor_web.py --check    # only check the committed files against the pins below

swagger-ui-dist: the bundle and its stylesheet (``static/vendor/swagger/``), with the package's LICENSE, NOTICE
and the bundle's third-party licence file; ``serving/assets.py`` serves ``/docs`` with them.

Only what the page needs is copied (into ``src/ferlab/serving/static/vendor/ort/``): the wasm-only ES module
API (``ort.wasm.min.mjs``), the Emscripten loader of the SIMD (+ threads) build (``ort-wasm-simd-threaded.mjs``)
and its WebAssembly binary.  onnxruntime-web 1.30 ships no plain (non-SIMD) wasm: a browser without WebAssembly
SIMD uses the server (the page detects it).  The package carries no licence file of its own (its README points
to onnxruntime's MIT licence), so the notice is written here from the copyright header its files carry.

Each file's sha256 is pinned: a different npm tarball (a re-published version, a proxy that rewrites it) stops
the script before anything is copied.  The files are committed; the wheel carries them (pyproject's
package-data ``serving/static/vendor/*``).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "src" / "ferlab" / "serving" / "static" / "vendor"
DEST = VENDOR / "ort"
PACKAGE = "onnxruntime-web"
VERSION = "1.30.0"
#: file in the npm package -> sha256 (measured on the npm registry's onnxruntime-web-1.30.0.tgz, 2026-12-07)
FILES = {
    "dist/ort.wasm.min.mjs": "219e6a1fc8a9938268d18efca3c91d310bd2f4a59bbd13744df5b2b7fc6cee3b",
    "dist/ort-wasm-simd-threaded.mjs": "e13f7f94fc51b4ca72b12faeb1ee95f4ace6dfbc8939bc718aabdc0a27c4299b",
    "dist/ort-wasm-simd-threaded.wasm": "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2",
}
LICENSE_NAME = "LICENSE-onnxruntime-web.txt"
#: swagger-ui-dist: file in the npm package -> sha256 (its own LICENSE and NOTICE are copied as they are)
SWAGGER = ("swagger-ui-dist", "5.36.0", VENDOR / "swagger", {
    "swagger-ui-bundle.js": "b164c5a22535e40dae08c00271674a67e437ec195098c55fcedf8ffac7ac3c88",
    "swagger-ui.css": "7eb9f5a125e4bc9b3f0b71869b66d1a3d7c501f972f53d44ef91c2ae6c5bda5e",
    "swagger-ui-bundle.js.LICENSE.txt": "37eb6e7e59aed57b2c1acf076574b818ea07b74265717e0bd67b59e0baf9abbb",
    "LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    "NOTICE": "0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2",
})
LICENSE = f"""onnxruntime-web {VERSION} (https://www.npmjs.com/package/onnxruntime-web,
https://github.com/microsoft/onnxruntime), vendored by scripts/vendor_web.py: {", ".join(Path(f).name for f in FILES)}.

MIT License

Copyright (c) Microsoft Corporation. All rights reserved.

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.

The WebAssembly binary contains ONNX Runtime and the libraries it is built with; their notices:
https://github.com/microsoft/onnxruntime/blob/v{VERSION}/ThirdPartyNotices.txt
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_files(folder: Path, files: dict) -> list[str]:
    bad = []
    for name, pin in files.items():
        p = folder / Path(name).name
        if not p.is_file():
            bad.append(f"{p}: missing")
        elif sha256(p) != pin:
            bad.append(f"{p}: sha256 {sha256(p)} is not the pinned {pin}")
    return bad


def check(folder: Path) -> list[str]:
    """Problems of the vendored files (empty: all present with their pinned sha256): onnxruntime-web's in
    ``folder``, swagger-ui-dist's in its own folder."""
    bad = _check_files(folder, FILES)
    if not (folder / LICENSE_NAME).is_file():
        bad.append(f"{folder / LICENSE_NAME}: missing")
    return bad + _check_files(SWAGGER[2], SWAGGER[3])


def fetch(tmp: Path, package: str = PACKAGE, version: str = VERSION) -> Path:
    """``npm pack`` the pinned version into ``tmp`` and unpack it: the package folder."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(f"npm is needed to vendor {package} (apt-get install npm, or Node.js's installer)")
    out = subprocess.run([npm, "pack", f"{package}@{version}", "--silent", "--pack-destination", str(tmp)],
                         capture_output=True, text=True, cwd=tmp)
    if out.returncode != 0:
        sys.exit(f"npm pack {package}@{version} failed: {out.stderr.strip()[-400:]}")
    tgz = tmp / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as t:
        t.extractall(tmp / package, filter="data")
    return tmp / package / "package"


def vendor_swagger(tmp: Path, print_pins: bool) -> None:
    package, version, dest, files = SWAGGER
    pkg = fetch(tmp, package, version)
    got = {name: sha256(pkg / name) for name in files}
    if print_pins:
        for name, digest in got.items():
            print(f'    "{name}": "{digest}",')
        return
    wrong = [f"{n}: {got[n]} (pinned {pin})" for n, pin in files.items() if got[n] != pin]
    if wrong:
        sys.exit(f"{package}@{version} from npm differs from the pinned files:\n  " + "\n  ".join(wrong))
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(pkg / name, dest / name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the vendored files against the pins")
    ap.add_argument("--print-pins", action="store_true", help="print the sha256 of the packed files (to update)")
    args = ap.parse_args(argv)
    if args.check:
        bad = check(DEST)
        print("\n".join(bad) or f"{PACKAGE} {VERSION} and {SWAGGER[0]} {SWAGGER[1]}: "
                                 f"{len(FILES) + len(SWAGGER[3])} files match their pins")
        return 1 if bad else 0
    with tempfile.TemporaryDirectory() as d:
        pkg = fetch(Path(d))
        got = {name: sha256(pkg / name) for name in FILES}
        if args.print_pins:
            for name, digest in got.items():
                print(f'    "{name}": "{digest}",')
            vendor_swagger(Path(d), True)
            return 0
        wrong = [f"{n}: {got[n]} (pinned {pin})" for n, pin in FILES.items() if got[n] != pin]
        if wrong:
            sys.exit(f"{PACKAGE}@{VERSION} from npm differs from the pinned files:\n  " + "\n  ".join(wrong))
        DEST.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copyfile(pkg / name, DEST / Path(name).name)
        vendor_swagger(Path(d), False)
    (DEST / LICENSE_NAME).write_text(LICENSE)
    bad = check(DEST)
    if bad:
        sys.exit("\n".join(bad))
    print(f"{PACKAGE} {VERSION}: {len(FILES)} files in {DEST.relative_to(ROOT)} ({LICENSE_NAME} beside them); "
          f"{SWAGGER[0]} {SWAGGER[1]}: {len(SWAGGER[3])} files in {SWAGGER[2].relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
