"""The layer rule of DESIGN.md ("who may import whom"), checked by reading every import.

core imports nothing of testbed; policy and workloads only core (workloads: core only);
sim and real: core, policy, workloads — never each other, never studies. A violation names
the file, the line and the layer it reached into.
"""
from __future__ import annotations

import ast
from pathlib import Path

import testbed

ROOT = Path(testbed.__file__).parent

#: layer -> the testbed layers its modules may import (itself always allowed)
ALLOWED = {
    "core": set(),
    "policy": {"core"},
    "workloads": {"core"},
    "sim": {"core", "policy", "workloads"},
    "real": {"core", "policy", "workloads"},
    "studies": {"core", "policy", "workloads", "sim", "real"},
}


def _imported_layers(path: Path, layer: str, root: Path):
    """(line, target layer) of every testbed import in one module, relative or absolute."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = ["testbed", layer] + list(path.relative_to(root / layer).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                mod = base + (node.module.split(".") if node.module else [])
                names = [".".join(mod)] if node.module else [".".join(mod + [a.name]) for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "testbed" and len(parts) > 1:
                yield node.lineno, parts[1]


def violations(root: Path = ROOT) -> list[str]:
    """Every import under ``root`` (a ``testbed`` package folder) that breaks the layer table."""
    out = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((root / layer).rglob("*.py")):
            for line, target in sorted(_imported_layers(path, layer, root)):
                if target != layer and target in ALLOWED and target not in allowed:
                    out.append(f"{path.relative_to(root.parent)}:{line}: {layer} imports {target}")
    return out


def test_no_layer_imports_above_or_beside_itself():
    """Every import in testbed/ respects DESIGN.md's layer table."""
    assert violations() == []


def test_the_scan_sees_relative_and_lazy_imports(tmp_path):
    """The checker catches an import inside a function, relative or absolute (so it can fail)."""
    fake = tmp_path / "testbed"
    (fake / "real").mkdir(parents=True)
    (fake / "real" / "x.py").write_text("def f():\n    from ..studies.experiment import resolve\n"
                                        "import testbed.sim.engine\nfrom ..policy import build\n")
    assert violations(fake) == ["testbed/real/x.py:2: real imports studies", "testbed/real/x.py:3: real imports sim"]


def test_the_runtime_writes_only_shared_task_states():
    """Every task state the runtime's task table ranks is a TaskState, the rank only advances
    along the shared transitions, and no module of testbed/real spells a state as a literal."""
    import re
    from testbed.core.task import TRANSITIONS, TaskState
    from testbed.real.gcs import Shard
    values = {s.value for s in TaskState}
    rank = Shard.STATE_RANK
    assert set(rank) <= values
    for a, b in TRANSITIONS:
        # a rebuild starts over; a spilled-back task is placed again (a new hop: gcs.Shard.task_update)
        if a.value in rank and b.value in rank and b is not TaskState.RECONSTRUCTING \
                and (a, b) != (TaskState.QUEUED, TaskState.ASSIGNED):
            assert rank[a.value] <= rank[b.value], (a, b)
    words = "|".join(sorted(values))
    literal = re.compile(rf'"state"\s*:\s*"(?:{words})"|state\S*\s*[!=]=\s*"(?:{words})"'
                         rf'|state\S*\s+(?:not\s+)?in\s+\("(?:{words})"')
    root = Path(__file__).resolve().parents[1] / "testbed" / "real"
    found = [f"{p.name}:{i}" for p in sorted(root.glob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert not found, found
