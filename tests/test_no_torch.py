"""The inference install has no torch: ``import ferlab``, the CLI and ``ferlab predict`` must work without it.

Each check runs in a fresh interpreter where a meta-path finder makes every ``import torch`` fail as if
torch were not installed, then asserts that torch was never loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from helpers_models import ASTRONAUT, ROOT, make_tiny_model

BLOCK_TORCH = textwrap.dedent("""
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by test_no_torch)", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
""")


def _run(code: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("models")))


def test_the_blocker_works():
    r = _run("""
        try:
            import torch  # noqa: F401
        except ModuleNotFoundError:
            print("blocked")
    """)
    assert r.returncode == 0 and "blocked" in r.stdout, r.stderr


def test_import_ferlab_and_recognizer_without_torch(tiny):
    r = _run(f"""
        import ferlab
        rec = ferlab.Recognizer(model={tiny!r}, threads=1)
        faces = rec.predict({str(ASTRONAUT)!r})
        assert len(faces) == 1 and not faces[0].whole_image, faces
        from ferlab.inference import video, draw  # noqa: F401
        assert "torch" not in sys.modules
        print("OK", faces[0].label)
    """)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


def test_ferlab_predict_without_torch(tiny, tmp_path):
    out = tmp_path / "r.json"
    r = _run(f"""
        from ferlab.cli import main
        rc = main(["predict", {str(ASTRONAUT)!r}, "--model", {tiny!r}, "--json", {str(out)!r},
                   "--annotate", {str(tmp_path / "ann")!r}])
        print("TORCH_LOADED", "torch" in sys.modules)
        sys.exit(rc)
    """)
    assert r.returncode == 0, r.stderr
    assert "TORCH_LOADED False" in r.stdout and "Traceback" not in r.stderr
    assert "astronaut.jpg" in r.stdout
    doc = json.loads(out.read_text())
    assert len(doc["images"]) == 1 and len(doc["images"][0]["faces"]) == 1
    assert (tmp_path / "ann" / "astronaut.jpg").exists()


def test_cli_help_without_torch():
    r = _run("""
        from ferlab.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code == 0
        assert "torch" not in sys.modules
        print("HELP_OK")
    """)
    assert r.returncode == 0, r.stderr
    assert "HELP_OK" in r.stdout and "predict" in r.stdout


def test_models_lists_the_bundled_models_without_torch():
    r = _run("""
        from ferlab.cli import main
        rc = main(["models"])
        assert rc == 0 and "torch" not in sys.modules
    """)
    assert r.returncode == 0, r.stderr
    assert "ferlab[train]" in r.stdout and "default" in r.stdout, r.stdout
    r = _run("""
        from ferlab.cli import main
        main(["models", "--json"])
    """)
    out = json.loads(r.stdout)
    assert out["architectures"] == [] and out["bundled"] and "architectures_note" in out
