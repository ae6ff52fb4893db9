"""The layout is the design: each package imports only the packages below it, and the shared
core imports no package at all. Read from the source with ast, function-level imports too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "processor"

# package -> the packages its modules may import ("core" is the top-level modules).
ALLOWED = {
    "core": {"core"},
    "providers": {"core", "providers"},
    "queue": {"core", "queue"},
    "images": {"core", "providers", "images"},
    "ops": {"core", "providers", "ops"},
    "web": {"core", "providers", "queue", "images", "ops", "web"},
    "cli": {"core", "providers", "queue", "images", "ops", "web", "cli"},
}


def package_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()):
        return parts[1]
    return "core"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("processor")}
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("processor")
        ):
            if node.module == "processor":  # from processor import redact, db
                found |= {f"processor.{a.name}" for a in node.names if a.name != "__version__"}
            else:
                found.add(node.module)
    return found


def edges() -> list[tuple[str, str]]:
    return [
        (module_name(path), target)
        for path in sorted(ROOT.rglob("*.py"))
        if path.name != "__main__.py"
        for target in sorted(imports(path))
    ]


def test_every_package_is_known():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED) - {"core"}


def test_no_import_runs_upward():
    upward = [
        f"{source} -> {target}"
        for source, target in edges()
        if package_of(target) not in ALLOWED[package_of(source)]
    ]
    assert upward == []


def test_the_check_sees_real_edges():
    """The edges the layout is built on are found (so an empty list above means something)."""
    found = set(edges())
    assert ("processor.web.app", "processor.queue.claim") in found
    assert ("processor.images.common", "processor.providers.registry") in found
    assert package_of("processor.queue.claim") == "queue"
    assert package_of("processor.settings") == "core"
    assert package_of("processor.web.ui.pages") == "web"


def test_every_package_says_what_it_owns_and_may_import():
    for init in ROOT.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc and len(doc) > 120, init.parent.name
