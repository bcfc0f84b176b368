"""Package-level rules: a cheap import, the layer boundaries, the bench's output contract."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "testbed"


@pytest.mark.timeout(60)
def test_import_testbed_is_cheap():
    """`import testbed` starts no process and imports no SimPy, pandas or matplotlib."""
    code = "import sys, testbed; print(sorted(m for m in ('simpy', 'pandas', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    """testbed subpackages a module imports (absolute or relative)."""
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(ROOT.parent).parts[:-1]     # ('testbed', 'sim')
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            parts = mod.split(".")
            if parts[0] == "testbed" and len(parts) > 1:
                found.add(parts[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "testbed" and len(parts) > 1:
                    found.add(parts[1])
    return found


ALLOWED = {
    "core": {"core"},
    "policy": {"core", "policy"},
    "workloads": {"core", "workloads"},
    "sim": {"core", "policy", "workloads", "sim"},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_they_may(layer):
    """DESIGN.md: core imports nothing above it; policy only core; sim never real."""
    for path in (ROOT / layer).rglob("*.py"):
        bad = _imports(path) - ALLOWED[layer]
        assert not bad, f"{path.relative_to(ROOT.parent)} imports testbed.{sorted(bad)}"


@pytest.mark.timeout(120)
def test_bench_json_prints_one_object_per_case(capsys):
    """`testbed bench sim --json` prints one JSON object per case with the documented keys."""
    from testbed.cli import main
    assert main(["bench", "sim", "--json", "--tasks", "2000", "--cases", "sim-100-nodes"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1
    rec = json.loads(lines[0])
    for key in ("case", "nodes", "tasks", "tasks_per_s", "peak_mem_mib"):
        assert key in rec
    assert rec["case"] == "sim-100-nodes" and rec["nodes"] == 100 and rec["tasks"] == 2000
    assert rec["tasks_per_s"] > 0 and rec["peak_mem_mib"] > 0


@pytest.mark.timeout(120)
def test_bench_real_json_prints_figures_with_units(capsys):
    """`testbed bench real --json` prints one JSON object per figure, with its unit."""
    from testbed.cli import main
    assert main(["bench", "real", "--json", "--cases", "memory"]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert recs and all({"case", "metric", "value", "unit"} <= set(r) for r in recs)
    rss = next(r for r in recs if r["metric"].startswith("idle RSS"))
    assert rss["unit"] == "MiB" and rss["value"] > 0
