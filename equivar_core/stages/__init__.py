"""The pipeline's stages as plain functions: settings and upstream tables in, a table out.

Each function is what one Dagster asset calls; the CLI and the tests run the
same code through those assets. Tables are pandas DataFrames with the
columns declared in :mod:`equivar_core.tables` (at least those of ``CONTRACT.md``); every table has a
``model`` column first, and a table built with other columns fails. Large intermediate arrays (activation samples, full score
matrices, expanded weights) live where :mod:`equivar_core.layout` puts them.

One module per concern, in the order of the graph:

* :mod:`.common`: the model on its device, the ``model`` column, image views and layer geometries;
* :mod:`.inputs`: ``models``, ``layers``, ``images``, ``reference_families``;
* :mod:`.sampling`: forward passes to sample arrays (``unit_stats``, ``activation_samples``,
  ``transformed_samples``);
* :mod:`.class_tables`: ``unit_classes`` (the ImageNet classes of each unit's strongest photos);
* :mod:`.scoring`: ``tuning``, ``unit_profiles``, ``transform_pairs``, ``scale_pairs``, ``transform_maps``
  and the loaders of stored score matrices;
* :mod:`.family_tables`: ``families``, ``basis_control``, ``layer_summary``;
* :mod:`.stability_tables`: ``family_stability``, ``sensitivity`` (computed with ``families``);
* :mod:`.sweep_tables`: ``family_sweeps`` (the rotation test) and ``curve_detectors``;
* :mod:`.circuit_tables`: ``circuit_weights``, ``circuit_families``;
* :mod:`.tying_tables`: ``weight_tying`` (what tying each layer's families would cost and save);
* :mod:`.match_tables`: ``family_matches`` (two models' families matched, :mod:`equivar_core.universality`).
"""

from .circuit_tables import POOLED, circuit_family_table, circuit_weight_table, invariant_units, layer_pairs, load_weights
from .class_tables import unit_class_table
from .common import load, tuned
from .family_tables import basis_control_table, family_table, layer_families, layer_summary_table
from .match_tables import analysed_pairs, compare_models, write_emergence
from .inputs import REFERENCE_DIR, image_table, layer_table, model_table, reference_family_table
from .sampling import located, natural_activations, sample_shard, transformed_activations
from .scoring import (all_transform_pairs, load_evidence, load_fold_evidence, load_identity, load_scores, profile_table,
                      scale_pair_table, transform_map_table, transform_pair_table, tuning_table)
from .stability_tables import checked_family_tables, family_check_tables
from .sweep_tables import curve_detector_table, curve_families, family_sweep_table
from .tying_tables import weight_tying_table

__all__ = [
    "POOLED", "REFERENCE_DIR", "all_transform_pairs", "basis_control_table", "checked_family_tables",
    "circuit_family_table", "circuit_weight_table", "curve_detector_table", "curve_families", "family_check_tables", "family_sweep_table",
    "family_table", "image_table", "invariant_units", "layer_families", "layer_pairs", "layer_summary_table",
    "layer_table", "load", "load_evidence", "load_fold_evidence", "load_identity", "load_scores", "load_weights",
    "located", "model_table", "natural_activations", "profile_table", "reference_family_table", "sample_shard",
    "scale_pair_table", "transform_map_table", "transform_pair_table", "transformed_activations", "tuning_table",
    "weight_tying_table", "tuned", "unit_class_table", "analysed_pairs", "compare_models", "write_emergence",
]
