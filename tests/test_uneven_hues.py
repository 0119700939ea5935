"""A hue family of eight members evenly spaced in YIQ's I-Q plane (unevenly in the chroma plane that
equivar's hue transform turns: gaps of about 32 to 61 degrees) whose kernels are scaled by gains spanning
six-fold, in an order unrelated to the hue order (``equivar_core.planted.UNEVEN_HUES``)."""

import numpy as np

from tests.test_families import _best_match


def test_unevenly_spaced_hue_family_is_found_whole_in_order(uneven_hue_runs):
    """Found whole (Jaccard >= 0.9) with the default settings in every seed, its members in the true circular
    order, their natural-image magnitudes (standard deviations on the photos) at least five-fold apart and
    their gaps uneven. The partner-agreement check once expected, at each sweep amount a, only the member nearest
    to param + a, which in a gap of 50 degrees can lie 20 degrees from one member and 30 from the other, where
    natural images often prefer the farther one: agreements of 0.78 to 0.82 for four of the eight members on
    this model, in each of seeds 0-2, and this test failed (issue 27 reports a held-out model of this kind whose
    family fell below ``min_agreement``). The member across the gap now counts too."""
    for seed, (run, truth) in uneven_hue_runs.items():
        units, params, transform = truth.families["conv1"]["hues"]
        stats = run.stats[run.stats["layer"] == "relu1"].set_index("unit")
        magnitude = stats.loc[list(units), "std"].to_numpy()
        assert magnitude.max() >= 5 * magnitude.min(), (seed, magnitude)
        fam = run.families[run.families["layer"] == "relu1"]
        jaccard, group = _best_match(fam[fam["variant"] == 0], units, transform)
        assert jaccard >= 0.9, (seed, jaccard)
        true_order = [u for _, u in sorted(zip(params, units))]
        found = [int(u) for u in group.sort_values("param")["unit"] if u in units]
        k = true_order.index(found[0])
        assert found == [u for u in true_order[k:] + true_order[:k] if u in found], (seed, found, true_order)
        # the places found are as uneven as the planted ones (the family is not read as evenly spaced)
        gaps = np.diff(np.sort(group["param"].to_numpy()), append=group["param"].min() + 360.0)
        assert gaps.max() - gaps.min() >= 20.0, (seed, gaps)
        agreement = group["agreement"].to_numpy()
        assert np.all(agreement >= 0.9), (seed, agreement)
