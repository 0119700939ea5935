"""docs/graph.md, written from the asset definitions (``pipelines.assets.GRAPH``): the docs' graph is derived
from the one declaration, and a test checks that the file is current.

    python -m pipelines.graph_doc > docs/graph.md
"""

from __future__ import annotations

from .assets import GRAPH


def _order(graph: dict[str, list[str]]) -> list[str]:
    """Every asset after the assets it reads (ties by name)."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for up in sorted(graph.get(name, [])):
            visit(up)
        done.append(name)

    for name in sorted(graph):
        visit(name)
    return done


def render(graph: dict[str, list[str]] = GRAPH) -> str:
    lines = ["# The asset graph", "",
             "Generated from the asset definitions by `python -m pipelines.graph_doc > docs/graph.md`",
             "(`tests/test_structure.py` checks that it is current). Every asset is partitioned by model; the",
             "`report` and `duckdb_catalog` assets read every table below.", "", "```mermaid", "graph LR"]
    ids = {name: f"a{i}" for i, name in enumerate(_order(graph))}
    for name in _order(graph):
        lines.append(f'  {ids[name]}["{name}"]')
    for name in _order(graph):
        for up in sorted(graph.get(name, [])):
            lines.append(f"  {ids[up]} --> {ids[name]}")
    lines += ["```", "", "| asset | reads |", "| --- | --- |"]
    for name in _order(graph):
        reads = ", ".join(f"`{u}`" for u in sorted(graph.get(name, []))) or "(settings only)"
        lines.append(f"| `{name}` | {reads} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
