"""The house rules of src/ferlab (ARCHITECTURE.md), read from the code itself (the AST of every module).

1. A module imports only from its own layer or below (``LAYERS``, ground floor first); units that stand
   side by side on one floor and must not know each other are in ``APART``.
2. No import circle between modules (imports inside functions count too).
3. ferlab-internal imports stand at the top of the module.  One may sit inside a function only where the
   module it imports needs an optional third-party package when imported (``OPTIONAL``: torch, OpenCV,
   scikit-learn, ...), so that the base install and ``ferlab --help`` stay light; ``commands/`` and
   ``cli.py`` (entry points that import the library inside ``run``) are exempt.

Known exceptions are listed in ``KNOWN`` with their reason; the test fails when one is no longer needed, so
the list can only shrink.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "ferlab"

#: floors, ground floor first: a module may import its own floor and those below.  A name stands for that module
#: or package and everything under it, except the names in ``ONLY_ITSELF``; a module under none of them is on no
#: floor, and the test fails until it is given one.
LAYERS: list[tuple[str, ...]] = [
    ("ferlab", "ferlab.errors", "ferlab.labels", "ferlab.io", "ferlab.calibration", "ferlab.card",
     "ferlab.hardware", "ferlab.tta"),                     # stdlib + numpy only
    ("ferlab.imageio", "ferlab.zoo"),                      # the gate for untrusted bytes; the bundled models
    ("ferlab.data", "ferlab.inference"),                   # datasets | torch-free inference, side by side
    ("ferlab.models",),                                    # torch architectures, the registry, weights
    ("ferlab.training",),                                  # recipes, the run directory, forward pass, export
    ("ferlab.evaluation",),                                # metrics, reports, evaluating a model
    ("ferlab.ensemble", "ferlab.features", "ferlab.tune", "ferlab.batch", "ferlab.serving"),
    ("ferlab.commands", "ferlab.cli"),                     # one module per subcommand; the parser
]
#: names that stand for that module alone, not for what lies under it: the package ``ferlab`` is its
#: ``__init__`` (on the ground floor), not every module of the package
ONLY_ITSELF = frozenset({"ferlab"})
#: units on one floor that must not import each other
APART = [("ferlab.data", "ferlab.inference"), ("ferlab.batch", "ferlab.serving"),
         ("ferlab.ensemble", "ferlab.tune"), ("ferlab.features", "ferlab.tune")]
#: third-party packages that may be imported late (inside functions), with what imports them
OPTIONAL = {"torch", "cv2", "sklearn", "imblearn", "onnx", "onnxruntime", "onnxscript", "optuna", "fastapi",
            "starlette", "uvicorn", "matplotlib", "ray", "pyarrow", "safetensors"}
#: entry points: may import the library inside their functions (startup time of ``ferlab --help``)
LATE_OK = ("ferlab.commands", "ferlab.cli")

#: (importer, imported, rule) -> why it stays for now
KNOWN: dict[tuple[str, str, str], str] = {
    ("ferlab", "ferlab.inference.recognizer", "layer"):
        "the package's face: ``ferlab.Recognizer`` is re-exported lazily (PEP 562) so ``import ferlab`` "
        "stays light; nothing imports it from there",
    ("ferlab", "ferlab.inference.recognizer", "late"): "the lazy re-export above",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    """Internal modules an ImportFrom names (a name that is a submodule counts as that module)."""
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target != "ferlab" and not target.startswith("ferlab."):
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


@cache
def imports(mod: str) -> tuple[tuple[str, bool, int], ...]:
    """(imported internal module, at module top?, line) for every import in ``mod``."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    for n in tree.body:  # imports under a top-level if/try run at import time too
        if isinstance(n, (ast.If, ast.Try)):
            top |= {id(c) for c in ast.walk(n)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out += [(t, id(node) in top, node.lineno) for t in _resolve(mod, path.name == "__init__.py", node)]
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in top, node.lineno) for a in node.names
                    if a.name == "ferlab" or a.name.startswith("ferlab.")]
    return tuple(out)


@cache
def third_party_at_top(mod: str) -> frozenset[str]:
    path = MODULES[mod]
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return frozenset(names & OPTIONAL)


def heavy(mod: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether importing ``mod`` imports an optional third-party package (through its top-level imports)."""
    if mod not in MODULES or mod in seen:
        return False
    if third_party_at_top(mod):
        return True
    parents = [".".join(mod.split(".")[:i]) for i in range(2, mod.count(".") + 1)]
    deps = [t for t, at_top, _ in imports(mod) if at_top] + parents
    return any(heavy(t, seen | {mod}) for t in deps)


def unit(mod: str) -> tuple[int, str]:
    """(floor, name in LAYERS) of module ``mod``: the longest name that is ``mod`` or a package above it."""
    best = None
    for floor, names in enumerate(LAYERS):
        for name in names:
            under = mod.startswith(name + ".") and name not in ONLY_ITSELF
            if (mod == name or under) and (best is None or len(name) > len(best[1])):
                best = (floor, name)
    assert best is not None, f"{mod}: not on any floor of LAYERS (add it)"
    return best


def _problems() -> dict[tuple[str, str, str], str]:
    found: dict[tuple[str, str, str], str] = {}
    apart = {frozenset(p) for p in APART}
    for mod in MODULES:
        floor, home = unit(mod)
        for target, at_top, line in imports(mod):
            if target not in MODULES:
                continue
            t_floor, t_home = unit(target)
            where = f"{MODULES[mod].relative_to(SRC.parent)}:{line}"
            if t_floor > floor:
                found[(mod, target, "layer")] = f"{where}: {home} (floor {floor}) imports {target} (floor {t_floor})"
            elif home != t_home and frozenset((home, t_home)) in apart:
                found[(mod, target, "apart")] = f"{where}: {home} and {t_home} stand apart"
            if not at_top and not mod.startswith(LATE_OK) and not heavy(target):
                found[(mod, target, "late")] = (f"{where}: imports {target} inside a function; it needs no "
                                                "optional package, so import it at the top")
    return found


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m: sorted({t for t, _, _ in imports(m) if t in MODULES and t != m}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


#: circles that stay for now -> why
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def test_every_module_stands_on_a_floor():
    for mod in MODULES:
        unit(mod)


def test_a_module_on_no_floor_fails():
    """The floor check can fail: a new top-level module is on no floor until LAYERS names it (the package
    ``ferlab`` stands for its ``__init__`` only), while a new module inside a package takes the package's floor."""
    for made_up in ("ferlab.made_up_module", "ferlab.made_up_package.module", "ferlabx"):
        with pytest.raises(AssertionError, match="not on any floor"):
            unit(made_up)
    assert unit("ferlab") == (0, "ferlab")
    assert unit("ferlab.inference.made_up_module") == (2, "ferlab.inference")
    assert unit("ferlab.training.callbacks") == (4, "ferlab.training")


def test_every_name_on_a_floor_is_a_module():
    """LAYERS names only modules and packages that exist (a stale name would hide nothing, but mislead)."""
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    missing = [name for names in LAYERS for name in names if name not in MODULES and name not in packages]
    assert not missing, f"on a floor but not in src/ferlab: {missing}"


def test_no_import_runs_up_a_floor_or_across_apart_units_or_hides_in_a_function():
    found = _problems()
    new = {k: v for k, v in found.items() if k not in KNOWN}
    assert not new, "layering broken:\n" + "\n".join(sorted(new.values()))
    stale = [k for k in KNOWN if k not in found]
    assert not stale, f"no longer needed, remove from KNOWN: {stale}"


def test_no_import_circles():
    circles = [c for c in _circles() if frozenset(c) not in KNOWN_CIRCLES]
    assert not circles, f"import circles: {circles}"
    stale = [c for c in KNOWN_CIRCLES if sorted(c) not in _circles()]
    assert not stale, f"no longer circles, remove from KNOWN_CIRCLES: {stale}"


def test_ground_floor_needs_only_stdlib_and_numpy():
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__", "ferlab"}
    for mod in MODULES:
        if unit(mod)[0] != 0:
            continue
        tree = ast.parse(MODULES[mod].read_text())
        for node in tree.body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{mod}: ground floor imports {name} at its top"
