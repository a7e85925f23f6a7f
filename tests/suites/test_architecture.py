"""The layering recorded in the README stays true: kernels <- ops <- samplers <- compat layers."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLERS = {"sampling", "samplers", "sampler_run", "solvers", "mcmc", "denoisers"}
COMPAT = {"diffusers", "k_diffusion", "comfyui", "distributed", "demo", "demo_run", "demo_mcmc", "bench", "cli", "cli_bench"}


def imported_fastdiff_modules(path: Path) -> set:
    """First component under fastdiff of every fastdiff import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(ROOT).with_suffix("")
    parts = ["fastdiff", *rel.parts[1:]] if rel.parts[0] == "fastdiff" else ["fastdiff", "kernels", *rel.parts[1:]]
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                full = base + (node.module.split(".") if node.module else [])
                names = [full + [a.name] for a in node.names] if not node.module else [full]
            else:
                names = [node.module.split(".")] if node.module else []
            for n in names:
                if n and n[0] == "fastdiff" and len(n) > 1:
                    found.add(n[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                n = a.name.split(".")
                if n[0] == "fastdiff" and len(n) > 1:
                    found.add(n[1])
    return found


def test_kernels_import_only_triton():
    for path in (ROOT / "kernels").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [] if node.level else [node.module.split(".")[0]]
            else:
                continue
            assert set(mods) <= {"triton", "math"}, f"{path.name} imports {mods}: kernels/ holds device code only"


@pytest.mark.parametrize("path", sorted((ROOT / "fastdiff" / "ops").rglob("*.py")), ids=lambda p: p.name)
def test_ops_do_not_import_samplers_or_compat(path):
    bad = imported_fastdiff_modules(path) & (SAMPLERS | COMPAT)
    assert not bad, f"{path} imports {bad}"


def source_files(name: str) -> list:
    """The files of ``fastdiff.<name>``: the module's file, or every file of the package."""
    package = ROOT / "fastdiff" / name
    files = sorted(package.rglob("*.py")) if package.is_dir() else [ROOT / "fastdiff" / f"{name}.py"]
    assert files and all(f.is_file() for f in files), f"fastdiff.{name} has no source files"
    return files


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_do_not_import_compat_layers(name):
    for path in source_files(name):
        bad = imported_fastdiff_modules(path) & COMPAT
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_schedules_are_a_shared_bottom_layer():
    """Samplers and compat layers build on the schedules, never the other way round."""
    for path in source_files("schedules"):
        bad = imported_fastdiff_modules(path) & (SAMPLERS | COMPAT)
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_sampler_math_imports_no_other_layer():
    """``fastdiff.solvers`` is pure weight functions: every face builds on it, it builds on nothing of fastdiff."""
    assert imported_fastdiff_modules(ROOT / "fastdiff" / "solvers.py") == set()


def test_the_core_samplers_know_no_face():
    """A sampler is written once against the run context; the faces adapt, the core never names them."""
    for name in ("samplers", "sampler_run"):
        bad = imported_fastdiff_modules(ROOT / "fastdiff" / f"{name}.py") & (COMPAT | {"sampling"})
        assert not bad, f"fastdiff/{name}.py imports {bad}"


def test_backend_module_re_exports_the_ops_helpers():
    """``fastdiff._backend`` is kept for older imports: each of its names is the ops layer's own object."""
    from fastdiff import _backend
    from fastdiff.ops import _common, backend, dispatch, launch, profiling

    homes = (_common, backend, dispatch, launch, profiling)
    for name in _backend.__all__:
        obj = getattr(_backend, name)
        assert any(getattr(home, name, None) is obj for home in homes), name
    assert {"BACKENDS", "maybe_rows", "resolve_backend", "interpret_mode", "triton_available"} <= set(_backend.__all__)
