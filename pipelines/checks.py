"""Blocking asset checks, one per model partition: bad data does not flow downstream."""

from __future__ import annotations

import warnings

import pandas as pd
from dagster import AssetCheckResult, AssetIn, PreviewWarning, asset_check

from equivar_core import stages, validate

from . import assets
from .definitions_common import models_partitions as MODELS

# checks run per model partition; partitioned checks are a "preview" feature of Dagster 1.13
warnings.filterwarnings("ignore", category=PreviewWarning, message="Specifying a partitions_def on an AssetCheckSpec")


def _result(outcome: tuple[bool, str]) -> AssetCheckResult:
    passed, description = outcome
    return AssetCheckResult(passed=bool(passed), description=description)


@asset_check(asset=assets.natural_activations.keys_by_output_name["unit_stats"], blocking=True, partitions_def=MODELS)
def activations_are_finite(unit_stats: pd.DataFrame) -> AssetCheckResult:
    """Finite natural-image statistics, and no dead layer."""
    return _result(validate.finite_stats(unit_stats))


@asset_check(asset=assets.tuning_tables.keys_by_output_name["tuning"], blocking=True, partitions_def=MODELS,
             additional_ins={"layers": AssetIn("layers")})
def tuning_is_finite(tuning: pd.DataFrame, layers: pd.DataFrame) -> AssetCheckResult:
    """Every layer measured with synthetic stimuli (``layers.tuned``) has finite tuning responses."""
    return _result(validate.finite_tuning(tuning, list(stages.tuned(layers)["layer"])))


def _scores_check(asset):
    @asset_check(asset=asset, name="scores_are_correlations", blocking=True, partitions_def=MODELS,
                 description="Scores within [-1, 1].")
    def scores_are_correlations(pairs: pd.DataFrame) -> AssetCheckResult:
        return _result(validate.scores_in_range(pairs))

    return scores_are_correlations


SCORE_CHECKS = [_scores_check(a) for a in assets.TRANSFORM_PAIRS]


@asset_check(asset=assets.families.keys_by_output_name["families"], blocking=True, partitions_def=MODELS)
def families_are_well_formed(families: pd.DataFrame) -> AssetCheckResult:
    """At least two units per family, one family per unit and transform."""
    return _result(validate.families_well_formed(families))


@asset_check(asset=assets.circuit_families, blocking=True, partitions_def=MODELS,
             additional_ins={"families": AssetIn("families")})
def circuits_reference_existing_families(circuit_families: pd.DataFrame, families: pd.DataFrame
                                         ) -> AssetCheckResult:
    """Circuit rows name families that exist."""
    return _result(validate.circuits_match_families(circuit_families, families))


ALL_CHECKS = [activations_are_finite, tuning_is_finite, *SCORE_CHECKS, families_are_well_formed,
              circuits_reference_existing_families]
