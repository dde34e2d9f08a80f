"""Architecture metrics of the a2lc_cli package (rerun before/after a refactor; see docs/architecture-metrics.md).

Prints: the five largest modules (lines), the number of places that name an artifact file
(string literals such as ``"query.h5"``), and every function longer than 60 lines.

    python tools/code_metrics.py [--json] [--limit 60] [PACKAGE_DIR]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

# the artifact files of a workspace (docs/state.md), as they appear in string literals
ARTIFACT = re.compile(r"""["'](dataset\.h5|acquire\.h5|query\.h5|lcm\.h5|lcm\.pt|model\.pt|model\.ckpt|train\.json)["']""")


def module_lines(pkg: Path) -> list[tuple[str, int]]:
    out = [(str(p.relative_to(pkg.parent)), len(p.read_text().splitlines())) for p in sorted(pkg.rglob("*.py"))]
    return sorted(out, key=lambda t: -t[1])


def artifact_literals(pkg: Path) -> tuple[int, int]:
    """(occurrences, modules holding one) of artifact file names in string literals."""
    n, mods = 0, 0
    for p in sorted(pkg.rglob("*.py")):
        k = len(ARTIFACT.findall(p.read_text()))
        n += k
        mods += bool(k)
    return n, mods


def long_functions(pkg: Path, limit: int) -> list[tuple[str, int]]:
    out = []
    for p in sorted(pkg.rglob("*.py")):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append((f"{p.relative_to(pkg.parent)}:{node.lineno} {node.name}", n))
    return sorted(out, key=lambda t: -t[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pkg", nargs="?", default=str(Path(__file__).resolve().parent.parent / "a2lc_cli"))
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    pkg = Path(a.pkg)
    mods = module_lines(pkg)
    lits, lit_mods = artifact_literals(pkg)
    longf = long_functions(pkg, a.limit)
    res = {"total_lines": sum(n for _, n in mods), "modules": len(mods), "largest": mods[:5],
           "artifact_literals": lits, "artifact_literal_modules": lit_mods,
           "functions_over_limit": len(longf), "long_functions": longf}
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        return
    print(f"modules: {len(mods)}, lines: {res['total_lines']}")
    print("largest five:")
    for name, n in mods[:5]:
        print(f"  {n:5d}  {name}")
    print(f"artifact file names in string literals: {lits} in {lit_mods} modules")
    print(f"functions over {a.limit} lines: {len(longf)}")
    for name, n in longf:
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main()
