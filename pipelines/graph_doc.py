"""docs/graph.md, written from the asset definitions (``pipelines.assets.DECLARED``: each asset's upstream
assets, settings and code version) and the owners of the array files (:mod:`equivar_core.artifacts`): the
docs' graph is derived from the one declaration, and a test checks that the file is current.

    python -m pipelines.graph_doc > docs/graph.md
"""

from __future__ import annotations

from equivar_core.artifacts import ARTIFACTS

from .assets import DECLARED, GRAPH, family_matches
from .fingerprints import Declared


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


def _files(asset: str) -> str:
    """The kinds of array file an asset owns, each with what one file is of."""
    group = asset.partition("/")[2] or "identity"
    each = {"run": "one", "layer": "per layer", "group": "per layer", "pair": "per layer pair"}
    kinds = [f"`{a.kind}` ({each[a.per]})" for a in ARTIFACTS if a.owner_of(group) == asset]
    return ", ".join(kinds)


def render(graph: dict[str, list[str]] = GRAPH, declared: dict[str, Declared] = DECLARED) -> str:
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
    lines += ["```", ""]
    lines += ["Each asset's fingerprint (its data version) hashes its code version, the settings it declares",
              "(beside it in `pipelines/assets.py`), the device and precision, and the fingerprints of the assets it",
              "reads; its array files are declared in `equivar_core/artifacts.py` and read only by it and the assets",
              "that declare it upstream (`tests/test_structure.py` checks both on a traced run).", "",
              "| asset | reads | settings | code version | array files |", "| --- | --- | --- | --- | --- |"]
    for name in _order(graph):
        reads = ", ".join(f"`{u}`" for u in sorted(graph.get(name, []))) or "(settings only)"
        own = ", ".join(f"`{f}`" for f in declared[name].inputs) if name in declared else ""
        code = declared[name].code_version if name in declared else ""
        lines.append(f"| `{name}` | {reads} | {own} | {code} | {_files(name)} |")
    return "\n".join(lines + _across_models()) + "\n"


def _across_models() -> list[str]:
    """The assets that span model partitions (group ``universality``), with what they read."""
    reads = sorted(k.to_user_string() for k in family_matches.dependency_keys)
    lines = ["", "## Across models", "",
             "`family_matches` is not partitioned: it reads the tables below of every model partition it compares",
             "(all partitions of each, Dagster's default mapping) and is materialized by its own job, `compare`",
             "(config `pairs`: `\"A,B\"` model names; empty: every pair of models with families), from the UI or as",
             "`equivar compare A B`. `family_emergence` reads the same tables of every checkpoint of each training",
             "run (the models with a `step`) and runs in the same job (config `draws`, `seed`; nothing where the",
             "folder holds no training run), or as `equivar emergence`. The per-model jobs (`equivar`,",
             "`equivar_ray`) leave both out.", "",
             "```mermaid", "graph LR"]
    lines += [f'  {name.replace("/", "_")}["{name} (every model)"] --> {target}' for name in reads
              for target in ("family_matches", "family_emergence")]
    return lines + ["```"]


if __name__ == "__main__":
    print(render(), end="")
