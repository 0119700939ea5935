"""The ``learned_control`` view: each trained model beside its untrained twin, per layer and transform.

A twin is a model of the same folder whose spec is ``untrained:<the trained model's spec>`` (with any
``@seed=N``; see :mod:`equivar_core.models.untrained`): every model of a built-in architecture, checkpoints
included, is set beside every untrained control of that architecture. Rows are the (layer, transform)
pairs that both have in ``layer_summary``; the rotation test's pass rates come from ``family_sweeps`` (a
driver-member pair passes when its peak lies within the run's ``rotation_test.tolerance`` of where the family
puts it: ``passed``, read at its ``angle = 0`` row; the drivers' own ``self`` rows are left out). A model without an untrained
twin in the folder has no rows.

The view is SQL over the tables' views, defined here once and created both in the catalog file
(:func:`equivar_core.storage.build_catalog`) and in the read-only connection of ``equivar sql``
(:func:`equivar_core.storage.open_catalog`).
"""

from __future__ import annotations

NAME = "learned_control"
#: the tables the view reads (``family_sweeps`` is optional: without it the pass rates are null)
REQUIRED = ("models", "layer_summary")

_NO_SWEEPS = ("SELECT NULL::VARCHAR AS model, NULL::VARCHAR AS layer, NULL::VARCHAR AS transform, "
              "NULL::DOUBLE AS pass_rate, NULL::DOUBLE AS control_pass_rate, NULL::DOUBLE AS chance WHERE false")


_SWEEPS = """SELECT model, layer, transform,
           avg(passed::DOUBLE) FILTER (WHERE role = 'member') AS pass_rate,
           avg(passed::DOUBLE) FILTER (WHERE role = 'control') AS control_pass_rate,
           avg(chance) FILTER (WHERE role = 'member') AS chance
    FROM family_sweeps WHERE angle = 0 AND error IS NOT NULL GROUP BY model, layer, transform"""


def select_sql(with_sweeps: bool = True) -> str:
    """The view's query (``with_sweeps``: whether a ``family_sweeps`` table exists to read)."""
    sweeps = _SWEEPS if with_sweeps else _NO_SWEEPS
    return f"""WITH pairs AS (
    SELECT DISTINCT t.model AS model, u.model AS untrained_model
    FROM models t JOIN models u
      ON u.spec = 'untrained:' || t.spec OR starts_with(u.spec, 'untrained:' || t.spec || '@')
    WHERE NOT starts_with(t.spec, 'untrained:')
), sweeps AS ({sweeps})
SELECT p.model, p.untrained_model, t.layer, t.transform, t.units,
       t.units_in_families, u.units_in_families AS units_in_families_untrained,
       u.units_in_families / nullif(t.units_in_families, 0) AS units_ratio,
       t.families, u.families AS families_untrained,
       t.largest_family, u.largest_family AS largest_family_untrained,
       ts.pass_rate AS rotation_pass_rate, us.pass_rate AS rotation_pass_rate_untrained,
       ts.control_pass_rate, us.control_pass_rate AS control_pass_rate_untrained,
       ts.chance, us.chance AS chance_untrained
FROM pairs p
JOIN layer_summary t ON t.model = p.model
JOIN layer_summary u ON u.model = p.untrained_model AND u.layer = t.layer AND u.transform = t.transform
LEFT JOIN sweeps ts ON ts.model = p.model AND ts.layer = t.layer AND ts.transform = t.transform
LEFT JOIN sweeps us ON us.model = p.untrained_model AND us.layer = t.layer AND us.transform = t.transform"""


def create(con, tables, temporary: bool = False) -> bool:
    """Create the view on the DuckDB connection ``con`` whose views or tables are ``tables`` (names); returns
    whether it was made. Without its input tables, or where they lack a column it reads (a folder written
    by an older equivar), there is no view and nothing fails."""
    import duckdb

    tables = set(tables)
    if not all(t in tables for t in REQUIRED):
        return False
    kind = "TEMPORARY VIEW" if temporary else "VIEW"
    for with_sweeps in ((True, False) if "family_sweeps" in tables else (False,)):
        try:
            con.execute(f'CREATE OR REPLACE {kind} "{NAME}" AS {select_sql(with_sweeps)}')
            return True
        except duckdb.Error:                # a missing column: try without the sweeps, else no view
            continue
    return False
