"""The layering rules of docs/ARCHITECTURE.md, checked on the source."""

import ast
import pathlib

import runtime

PKG = pathlib.Path(runtime.__file__).parent
CORE_DIRS = ("core", "sandbox", "jail")


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_grpc_or_protobuf():
    for d in CORE_DIRS:
        for path in (PKG / d).rglob("*.py"):
            bad = {n for n in _imports(path) if n.startswith(("grpc", "google.protobuf", "runtime.v1", "runtime.api"))}
            assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_only_compose_builds_nsjail_arguments():
    """Other modules may call compose.build, but none spells nsjail flags."""
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ("jail", "v1") or rel.name == "doctor.py":
            continue
        text = path.read_text()
        for flag in ("--cgroup_mem_max", "--seccomp_string", "--bindmount", "--disable_clone_newuser"):
            assert flag not in text, f"{rel} builds nsjail arguments ({flag})"


def _proto_root() -> pathlib.Path:
    # Tests run against the installed package; the protos are in the checkout.
    return pathlib.Path(__file__).resolve().parents[2] / "proto"


def test_every_proto_field_is_commented():
    """A field needs a comment above it, on its line, or above the run of
    fields it belongs to (optional fields sharing one rule)."""
    files = list(_proto_root().rglob("*.proto"))
    assert files
    for proto in files:
        lines = [line.strip() for line in proto.read_text().splitlines()]
        for i, s in enumerate(lines):
            if not _is_field(s) or s.split("=")[0].strip().isupper():  # enum values name themselves
                continue
            j = i - 1
            while j >= 0 and _is_field(lines[j]):
                j -= 1
            assert "//" in s or (j >= 0 and lines[j].startswith("//")), \
                f"{proto.name}:{i + 1} field without a comment: {s}"


def _is_field(s: str) -> bool:
    return "=" in s and s.endswith(";") and not s.startswith(("option", "syntax", "package", "//", "rpc"))
