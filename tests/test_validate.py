"""The table invariants behind the blocking asset checks."""

import numpy as np
import pandas as pd

from equivar_core import validate


def test_finite_stats():
    ok = pd.DataFrame({"layer": ["a", "a"], "mean": [0.0, 1.0], "std": [1.0, 0.0]})
    assert validate.finite_stats(ok)[0]
    assert not validate.finite_stats(ok.assign(mean=[np.nan, 1.0]))[0]
    assert not validate.finite_stats(ok.assign(std=[0.0, 0.0]))[0]


def test_scores_in_range():
    ok = pd.DataFrame({"score": [0.5, -1.0], "null_score": [0.0, 0.1]})
    assert validate.scores_in_range(ok)[0]
    assert not validate.scores_in_range(ok.assign(score=[1.5, 0.0]))[0]
    assert not validate.scores_in_range(ok.assign(null_score=[np.nan, 0.0]))[0]


def test_families_well_formed():
    ok = pd.DataFrame({"layer": "a", "family": [0, 0, 1, 1], "transform": ["rotate"] * 2 + ["hue"] * 2,
                       "unit": [1, 2, 1, 3], "fit": [0.9, 1.0, 0.5, 0.6]})
    assert validate.families_well_formed(ok)[0]
    assert not validate.families_well_formed(ok.iloc[:3])[0]                       # a family of one
    twice = ok.assign(transform="rotate")                                           # unit 1 in two rotate families
    assert not validate.families_well_formed(twice)[0]


def test_circuits_match_families():
    fam = pd.DataFrame({"layer": ["a", "b"], "family": [0, 0], "transform": ["rotate", "rotate"]})
    rows = pd.DataFrame({"src_layer": ["a"], "src_family": [0], "dst_layer": ["b"], "dst_family": [0],
                         "transform": ["rotate"], "equivariance": [0.9]})
    assert validate.circuits_match_families(rows, fam)[0]
    assert not validate.circuits_match_families(rows.assign(dst_family=[3]), fam)[0]
    assert validate.circuits_match_families(rows.assign(dst_family=[-1]), fam)[0]      # invariant unit target
