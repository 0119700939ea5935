"""Family assignment: which units are transformed copies of one another.

Rotation and hue families come from tuning curves. If unit v is unit u
transformed by an angle t, every tuning curve of v is u's shifted by t. For
units u, v with curves ``r_u[s, theta]`` over stimuli s (each curve
standardized over theta), the shifted similarity is the circular
cross-correlation, computed for all pairs with FFTs,

    sim(u, v) = max_t  sum_{s, theta} r_u[s, theta + t] r_v[s, theta] / sqrt(E_u E_v),

with E the curves' energies. Units are grouped by average-linkage clustering
of ``1 - sim`` cut at ``1 - min_similarity``; a group is a family if its
members' relative angles spread over at least ``min_spread`` degrees
(otherwise they are duplicates, not transformed copies). A member's ``param``
is the reference member's preferred angle plus the best shift t, modulo the
family's period (180 or 90 where the reference's curves repeat). ``fit`` is
the member's similarity to the reference.

Curves that the transform leaves in place must match without a shift
(:func:`unshifted_similarity` at least ``min_invariant_similarity``): a
rotation does not change a unit's colour preferences, a hue rotation does
not change its luminance responses.

When transform scores are given, natural images must agree: the rotation
(or hue) score of u and v at the sweep amount matching their tuning shift
(see :func:`transform_evidence`) must reach ``min_partner_score`` and beat
the units' plain correlation by ``min_gain``, with a tuning similarity of
at least ``min_tuning_similarity`` on its own. Pairs that natural images
cannot tell apart (plain correlation above ``max_plain_correlation``) and
pairs at near-zero shifts are untested: they are linked on tuning alone. Each
member needs one confirmed
link inside its family; and the
similarity used for clustering is the mean of the tuning similarity and that
score (the tuning similarity alone for near-zero shifts, which no amount
tests).

Independent evidence, ``agreement``: for each rotation (or hue) amount a of
the natural-image sweep, is the member's best transform partner the family
member whose param is closest to ``param + a``? The fraction of amounts where
it is (among the amounts where some member sits within ``tolerance`` of that
place) is reported per unit; members below ``min_agreement`` are removed
(and families left with one member or no spread dissolved). The place is read
on the family's own measured params: where it falls in a gap of an unevenly
spaced family, and the closest member is judged more closely at another
amount, the member on the gap's other side counts too (natural images cannot
rank two members 20 and 30 degrees away).

Flip and scale families are pairs from transform scores: u and v (u != v)
that are each other's best partner, with a score of at least ``pair_min_score``
whose shortfall ``1 - score`` is at most ``pair_max_error_ratio`` times that of
the better of the two units' own invariance scores (the partner explains at
least half of what invariance leaves unexplained).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from .limits import setting


def _standardize(curves: np.ndarray) -> np.ndarray:
    z = curves - curves.mean(-1, keepdims=True)
    sd = z.std(-1, keepdims=True)
    return np.where(sd > 1e-9, z / np.maximum(sd, 1e-12), 0.0)


def _centre(curves: np.ndarray) -> np.ndarray:
    """Curves minus their mean, amplitude kept: each stimulus weighs by how strongly it modulates the unit."""
    return np.nan_to_num(curves - np.nanmean(curves, -1, keepdims=True))


#: how curves are weighed against each other before the shifted similarity
WEIGHTINGS = {"standardized": lambda c: np.nan_to_num(_standardize(c)), "amplitude": _centre}


@dataclass(frozen=True)
class FamilySettings:
    #: correlation-like thresholds lie in [-1, 1]; angles in degrees; shares in [0, 1]
    min_similarity: float = setting(0.7, low=-1, high=1)   # mean of shifted tuning similarity and transform score
    min_tuning_similarity: float = setting(0.6, low=-1, high=1)   # shifted tuning similarity a link needs alone
    min_spread: float = setting(20.0, low=0, high=180)   # degrees; members closer than this are duplicates
    tolerance: float = setting(20.0, low=0, high=180, low_open=True)   # degrees, matching a member to its place
    min_partner_score: float = setting(0.4, low=-1, high=1)   # natural-image transform score to link two units
    min_gain: float = setting(0.05, low=-1, high=1)   # ... and by how much it must beat their plain correlation
    max_plain_correlation: float = setting(0.9, low=-1, high=1)   # above it natural images cannot test a link
    min_invariant_similarity: float = setting(0.5, low=-1, high=1)   # curves the transform leaves in place
    #: ... for hue families: natural images confirm any colour unit's smooth colour (see
    #: scores.orbit_centred_scores), so how the colour is laid out in space must match more closely
    min_hue_invariant_similarity: float = setting(0.75, low=-1, high=1)
    #: share of sweep amounts where a member's best partner is the expected sibling
    min_agreement: float = setting(0.6, low=0, high=1)
    curve_weighting: str = setting("standardized", choices=tuple(WEIGHTINGS))   # see families.shifted_similarity
    min_invariance: float = setting(0.8, low=-1, high=1)   # mean self score that makes a unit invariant
    pair_min_score: float = setting(0.5, low=-1, high=1)   # flip and scale pairs
    #: 1 - pair score must be at most this times 1 - self score
    pair_max_error_ratio: float = setting(0.5, low=0)
    #: a flip pair inside one rotation family is explained by rotation when the rotation its params imply
    #: scores at least its flip score less this (families.flip_relations)
    mirror_margin: float = setting(0.05, low=0, high=2)
    #: two families of a layer are siblings when their members' curves agree across families at least this
    #: share of how well they agree inside the worse family (see families.relate_families)
    sibling_similarity: float = setting(0.9, low=0, high=1)
    #: median frequency index difference that makes siblings two spatial frequencies
    frequency_gap: float = setting(0.3, low=0)

    def estimator_params(self, estimator, transform=None) -> dict:
        """The keyword parameters of a family estimator (``AngularFamilies``, ``PairFamilies``): the fields of
        the same names; for an angular ``transform`` the invariant-curve threshold is the one it names."""
        params = {f.name: getattr(self, f.name) for f in fields(estimator) if hasattr(self, f.name)}
        if transform is not None and transform.angular:
            params["min_invariant_similarity"] = getattr(self, transform.invariant_setting)
        return params


def setting_param(name: str):
    """An estimator's keyword parameter that is the :class:`FamilySettings` field ``name``: its default is read
    from there (declared once), and ``metadata["setting"]`` names the field."""
    return field(default=FamilySettings.__dataclass_fields__[name].default, metadata={"setting": name})


@dataclass(frozen=True)
class Evidence:
    """Natural-image evidence for a layer's links: amount (degrees) -> C x C transform scores (``scores``), and
    the C x C plain correlations of the units on the same images that the scores must beat (``identity``;
    None: no baseline)."""

    scores: dict[float, np.ndarray]
    identity: np.ndarray | None = None


@dataclass(frozen=True)
class Assignment:
    """A layer's families of one transform: each unit's family (``labels``, C ints, -1 for none), its place
    (``params``, C floats, NaN for none) and each family's period (``periods``: family -> degrees)."""

    labels: np.ndarray
    params: np.ndarray
    periods: dict[int, float]


def shifted_similarity(curves: np.ndarray, chunk: int = 128, weighting: str = "standardized"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Best circular-shift similarity and the shift index for all unit pairs.

    ``weighting``: ``standardized`` gives every stimulus curve unit variance (the default: a weakly
    modulated curve counts as much as a strong one, which keeps units whose one strong curve happens to
    match out of families: on the planted networks ``amplitude`` weighting let 1.7 noise units per
    network into rotation and hue families, standardized curves none; ``tests/test_families.py``);
    ``amplitude`` keeps each curve's amplitude in natural-image standard deviations.

    Parameters
    ----------
    curves : C x S x T tuning curves (T samples over the full circle)

    Returns
    -------
    sim : C x C in [-1, 1];  shift : C x C ints, sim attained with u's curves = v's shifted by shift[u, v]
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown curve weighting {weighting!r}; known: {', '.join(WEIGHTINGS)}")
    z = WEIGHTINGS[weighting](curves)
    c, s, t = z.shape
    # one complex GEMM per frequency (in double precision: near-ties between shifts and references then
    # resolve as they always have)
    spec = np.ascontiguousarray(np.fft.rfft(z, axis=-1).transpose(2, 0, 1))                       # F x C x S
    conj = np.conj(spec).transpose(0, 2, 1).copy()                                                 # F x S x C
    energy = (z**2).sum((1, 2))
    sim = np.zeros((c, c))
    shift = np.zeros((c, c), dtype=int)
    for i in range(0, c, chunk):
        cross = np.ascontiguousarray((spec[:, i:i + chunk] @ conj).transpose(1, 2, 0))   # u x v x F
        corr = np.fft.irfft(cross, n=t, axis=-1)        # [u, v, tau] = sum r_u(theta + tau) r_v(theta)
        best = corr.argmax(-1)
        shift[i:i + chunk] = best
        sim[i:i + chunk] = np.take_along_axis(corr, best[..., None], -1)[..., 0] / np.maximum(
            np.sqrt(np.outer(energy[i:i + chunk], energy)), 1e-12)
    return np.clip(sim, -1, 1), shift


def unshifted_similarity(curves: np.ndarray, floor: float = 0.3) -> np.ndarray:
    """``1 - |a_u - a_v| / (|a_u| + |a_v| + floor sqrt(n))`` for curves the transform must leave unchanged.

    ``a`` are the curves (C x S x T, in natural-image standard deviations)
    minus each curve's mean; ``floor`` (standard deviations per sample) keeps
    two flat curves similar. 1 for equal curves, near 0 when one unit is
    modulated and the other is not.
    """
    a = np.nan_to_num(curves - curves.mean(-1, keepdims=True)).reshape(len(curves), -1)
    norm = np.linalg.norm(a, axis=1)
    sq = (a**2).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * a @ a.T, 0.0))
    return 1.0 - dist / (norm[:, None] + norm[None] + floor * np.sqrt(a.shape[1]))


def _period_of(curve: np.ndarray, threshold: float = 0.8) -> float:
    """180 or 90 if the (S x T) curves repeat after that angle, else 360."""
    t = curve.shape[-1]

    def corr(k):
        a, b = curve.ravel(), np.roll(curve, k, -1).ravel()
        return np.corrcoef(a, b)[0, 1] if a.std() > 0 else 0.0

    if t % 2 == 0 and corr(t // 2) > threshold:
        return 90.0 if t % 4 == 0 and corr(t // 4) > threshold else 180.0
    return 360.0


def circular_distance(a, b, period):
    d = np.mod(np.asarray(a) - np.asarray(b), period)
    return np.minimum(d, period - d)


def curve_memo(curves: np.ndarray, eligible: np.ndarray, invariant_curves: np.ndarray | None = None,
               weighting: str = "standardized") -> dict:
    """What :meth:`AngularFamilies.fit` computes from the tuning curves alone, as the ``memo`` it reads: the
    eligible units' shifted similarity (``("similarity", weighting)``: sim, shift), the unshifted
    similarity of their invariant curves (``"invariant"``), the standardized curves and room for the units'
    periods. Fits of the same curves with other thresholds or other natural-image evidence can all start
    from a (shallow) copy of it."""
    idx = np.flatnonzero(eligible)
    if len(idx) < 2:
        return {}
    memo = {("similarity", weighting): shifted_similarity(curves[idx], weighting=weighting),
            "standardized": np.nan_to_num(_standardize(curves)), "periods": {}}
    if invariant_curves is not None and invariant_curves.shape[1]:
        memo["invariant"] = unshifted_similarity(invariant_curves[idx])
    return memo


@dataclass(kw_only=True)
class AngularFamilies:
    """Rotation or hue families from tuning curves (an estimator: ``fit`` sets the ``*_`` attributes).

    The parameters are keyword-only and are the fields of :class:`FamilySettings` of the same names, their
    defaults read from there (``FamilySettings.estimator_params`` hands a run's values over).
    """

    min_similarity: float = setting_param("min_similarity")
    min_tuning_similarity: float = setting_param("min_tuning_similarity")
    min_spread: float = setting_param("min_spread")
    tolerance: float = setting_param("tolerance")
    min_partner_score: float = setting_param("min_partner_score")
    min_gain: float = setting_param("min_gain")
    max_plain_correlation: float = setting_param("max_plain_correlation")
    min_invariant_similarity: float = setting_param("min_invariant_similarity")
    min_agreement: float = setting_param("min_agreement")
    curve_weighting: str = setting_param("curve_weighting")

    frequency_gap: float = setting_param("frequency_gap")

    def fit(self, curves: np.ndarray, eligible: np.ndarray, evidence: Evidence | None = None,
            invariant_curves: np.ndarray | None = None, bands: np.ndarray | None = None,
            memo: dict | None = None) -> "AngularFamilies":
        """Group units.

        Parameters
        ----------
        curves : C x S x T curves sampled at ``360 / T`` degree steps from 0
        eligible : C bool, units tuned enough to take part
        evidence : the natural-image transform scores (amount (degrees) -> C x C; evidence and ``agreement_``)
            and the C x C correlations of the units on the same images (baseline for the evidence)
        invariant_curves : C x S' x T' curves the transform leaves in place (hue curves for rotation,
            orientation curves for hue), in natural-image standard deviations
        bands : C values the transform leaves in place that can split a family in two, the units'
            :func:`~equivar_core.tuning.frequency_index` (see :func:`split_bands`)
        memo : a dict where the fit keeps what it computes from its inputs alone, whatever its thresholds
            (the shifted and unshifted similarities of the curves, most of its time, each unit's period, the
            natural-image evidence at each ``tolerance``, each unit's best partners, and the links and their
            clustering tree at each setting of the thresholds they read), for a refit of the same inputs with
            other thresholds; refits with other ``evidence`` start from a copy of :func:`curve_memo`
        """
        c = len(curves)
        self._unfitted(c)
        idx = np.flatnonzero(eligible)
        if len(idx) < 2:
            return self
        memo = {} if memo is None else memo
        pair_scores = evidence.scores if evidence is not None else None
        invariant = self._curve_similarities(memo, curves, idx, invariant_curves, evidence)
        # the links and their clustering tree read these thresholds (the cut, min_similarity, does not)
        key = ("links", self.curve_weighting, self.min_invariant_similarity, self.tolerance,
               self.max_plain_correlation, self.min_partner_score, self.min_gain, self.min_tuning_similarity)
        if key not in memo:
            memo[key] = self._links(memo, invariant, pair_scores)
        sim, supported, tree = memo[key]
        self.similarity_ = sim
        self._place_families(fcluster(tree, 1 - self.min_similarity, "distance"), supported, curves, idx, memo)
        if pair_scores:
            self._keep_agreeing_members(evidence, memo)
        if bands is not None:
            self.labels_, self.periods_ = split_bands(self.labels_, self.params_, self.periods_, bands,
                                                      self.frequency_gap, self.min_spread)
        self._mark_variants(idx, np.ones((len(idx), len(idx))) if invariant is None else invariant)
        return self

    @property
    def assignment_(self) -> Assignment:
        """The fitted families as an :class:`Assignment`."""
        return Assignment(self.labels_, self.params_, self.periods_)

    def _unfitted(self, c: int) -> None:
        """The fitted attributes of ``c`` units in no family."""
        self.labels_ = np.full(c, -1)
        self.params_ = np.full(c, np.nan)
        self.fit_ = np.full(c, np.nan)
        self.agreement_ = np.full(c, np.nan)
        self.variants_ = np.full(c, -1)
        self.periods_: dict[int, float] = {}

    def _curve_similarities(self, memo: dict, curves: np.ndarray, idx: np.ndarray,
                            invariant_curves: np.ndarray | None, evidence: Evidence | None) -> np.ndarray | None:
        """Fill ``memo`` with what the links read (the eligible units' shifted similarity and shifts, the
        natural-image evidence at this ``tolerance``); return the unshifted similarity of their invariant
        curves (None without such curves)."""
        step = 360.0 / curves.shape[-1]
        if ("similarity", self.curve_weighting) not in memo:
            memo["similarity", self.curve_weighting] = shifted_similarity(curves[idx], weighting=self.curve_weighting)
        _, shift = memo["similarity", self.curve_weighting]
        invariant = None
        if invariant_curves is not None and invariant_curves.shape[1]:
            if "invariant" not in memo:
                memo["invariant"] = unshifted_similarity(invariant_curves[idx])
            invariant = memo["invariant"]
        if evidence is not None and evidence.scores and ("evidence", self.tolerance) not in memo:
            memo["evidence", self.tolerance] = transform_evidence(shift * step, idx, evidence.scores, self.tolerance,
                                                                  evidence.identity)
        return invariant

    def _place_families(self, groups: np.ndarray, supported: np.ndarray, curves: np.ndarray, idx: np.ndarray,
                        memo: dict) -> None:
        """Families from the clusters ``groups`` of the eligible units ``idx``: the members with a confirmed link,
        placed on the circle of their reference member's period; clusters of one member or without spread are
        none."""
        step = 360.0 / curves.shape[-1]
        sim = self.similarity_
        _, shift = memo["similarity", self.curve_weighting]
        if "standardized" not in memo:
            memo["standardized"] = np.nan_to_num(_standardize(curves))
        z = memo["standardized"]
        family = 0
        for g in np.flatnonzero(np.bincount(groups) >= 2):          # in order; a lone unit is no family
            members = np.flatnonzero(groups == g)
            # every member needs one link that natural images confirm
            members = members[supported[np.ix_(members, members)].any(1)]
            if len(members) < 2:
                continue
            ref = members[np.argmax(sim[np.ix_(members, members)].mean(1))]
            # the reference's period: strong curves decide, not flat noisy ones
            periods = memo.setdefault("periods", {})
            if ref not in periods:
                periods[ref] = _period_of(_centre(curves[idx[ref]]))
            period = periods[ref]
            template = z[idx[ref]].mean(0)
            smooth = (np.roll(template, 1) + 2 * template + np.roll(template, -1)) / 4
            ref_param = np.argmax(smooth) * step
            params = np.mod(ref_param + shift[members, ref] * step, period)
            if circular_distance(params[:, None], params[None], period).max() < self.min_spread:
                continue
            units = idx[members]
            self.labels_[units] = family
            self.params_[units] = params
            self.fit_[units] = np.clip(sim[members, ref], 0, 1)
            self.fit_[idx[ref]] = np.clip(np.delete(sim[ref, members], members.tolist().index(ref)).mean(), 0, 1)
            self.periods_[family] = period
            family += 1

    def _keep_agreeing_members(self, evidence: Evidence, memo: dict) -> None:
        """Remove members whose partner agreement is below ``min_agreement``; set ``agreement_``."""
        if "best" not in memo:
            memo["best"] = {a: np.argmax(m, axis=1) for a, m in evidence.scores.items()}

        def agreement():
            return partner_agreement(self.assignment_, evidence, self.tolerance, self.max_plain_correlation,
                                     best=memo["best"])

        self._prune(agreement() < self.min_agreement)
        self.agreement_ = agreement()

    def _mark_variants(self, idx: np.ndarray, invariant: np.ndarray) -> None:
        """``variants_`` of every family (:func:`place_variants`) from the eligible units' unshifted
        similarities ``invariant`` (1 for the other units)."""
        c = len(self.labels_)
        full = np.ones((c, c))
        full[np.ix_(idx, idx)] = invariant
        for f, period in self.periods_.items():
            members = np.flatnonzero(self.labels_ == f)
            self.variants_[members] = place_variants(self.params_[members], period, full[np.ix_(members, members)],
                                                     self.min_spread / 2)

    def _links(self, memo: dict, invariant: np.ndarray | None, pair_scores
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(similarity used for clustering, links natural images confirm, the average-linkage tree) of the
        eligible units, from the fit's memo (see :meth:`fit`)."""
        sim, _ = memo["similarity", self.curve_weighting]
        if invariant is not None:
            sim = np.where(invariant >= self.min_invariant_similarity, sim, 0.0)
        supported = np.ones_like(sim, dtype=bool)
        if pair_scores:
            evidence, gain = memo["evidence", self.tolerance]
            # natural images cannot tell apart units that already correlate this much: no test
            # ... nor when the transformed pair scores well but no better than the plain pair
            untested = np.isnan(evidence) | (evidence - gain >= self.max_plain_correlation) | \
                ((evidence >= self.min_partner_score) & (gain < self.min_gain))
            ok = ~untested & (evidence >= self.min_partner_score) & (gain >= self.min_gain) & \
                (sim >= self.min_tuning_similarity)
            combined = np.where(untested, sim, (sim + np.nan_to_num(evidence)) / 2)
            sim = np.where(untested | ok, combined, 0.0)
            supported = ok
        dist = np.clip(1 - (sim + sim.T) / 2, 0, None)
        np.fill_diagonal(dist, 0)
        return sim, supported, linkage(squareform(dist, checks=False), "average")

    def _prune(self, drop: np.ndarray) -> None:
        """Remove members, then families left with one member or no spread; renumber families from 0."""
        self.labels_[drop] = -1
        labels, periods = np.full_like(self.labels_, -1), {}
        for f, period in self.periods_.items():
            members = np.flatnonzero(self.labels_ == f)
            if len(members) < 2 or circular_distance(self.params_[members][:, None], self.params_[members][None],
                                                     period).max() < self.min_spread:
                continue
            labels[members] = len(periods)
            periods[len(periods)] = period
        gone = labels < 0
        self.params_[gone], self.fit_[gone] = np.nan, np.nan
        self.labels_, self.periods_ = labels, periods


def split_bands(labels: np.ndarray, params: np.ndarray, periods: dict[int, float], bands: np.ndarray,
                gap: float, min_spread: float) -> tuple[np.ndarray, dict[int, float]]:
    """Split each family whose members fall into two clearly separate bands; renumber families from 0.

    Rotating a unit does not change the spatial frequency it prefers, so a family whose members' frequency
    indices (``bands``) fall into two groups is one feature at two spatial frequencies: two families, each a
    rotation orbit of its own. The sorted indices are cut at their largest gap when that gap is at least
    ``gap`` and twice the range inside either side, and each side keeps two members spread over at least
    ``min_spread`` degrees. :func:`relate_families` then names the two halves each other's siblings.
    """
    out, new_periods = np.full_like(labels, -1), {}
    for f, period in periods.items():
        members = np.flatnonzero(labels == f)
        groups = [members]
        b = bands[members]
        if np.isfinite(b).all() and len(members) >= 4:
            order = np.argsort(b)
            steps = np.diff(b[order])
            k = int(np.argmax(steps))
            low, high = members[order[:k + 1]], members[order[k + 1:]]
            spread = [circular_distance(params[g][:, None], params[g][None], period).max() if len(g) > 1 else 0.0
                      for g in (low, high)]
            ranges = [np.ptp(bands[g]) for g in (low, high)]
            if steps[k] >= max(gap, 2 * max(ranges)) and min(spread) >= min_spread:
                groups = [low, high]
        for g in groups:
            out[g] = len(new_periods)
            new_periods[len(new_periods)] = period
    return out, new_periods


@dataclass
class Relations:
    """Each family's closest other family of the same transform and period (see :func:`relate_families`)."""

    sibling: dict[int, int]
    similarity: dict[int, float]
    relation: dict[int, str]


def flip_relations(pairs: "PairFamilies", rotation: Assignment, rotation_scores: dict[float, np.ndarray],
                   settings: FamilySettings = FamilySettings(), placed: bool = True) -> dict[int, str]:
    """Whether each flip pair is explained by rotation: pair label -> ``rotation`` or ``mirror``.

    A left-right mirror takes a feature whose orientation is theta to one at 180 - theta, so a line at
    30 degrees and its partner at 150 are a flip pair and also rotated copies of each other. A pair (u, v)
    is ``rotation`` when both units are in one rotation family (``rotation``: the layer's rotation families)
    and the rotation its params imply explains the pair about as well as the mirror does: the natural-image
    rotation score at a = param(v) - param(u) (the best of ``score_x(u, v)`` and ``score_{-x}(v, u)`` over the
    sweep amounts x within ``settings.tolerance`` of a: params and sweep amounts both sit on coarse grids) is
    at least the pair's flip score less ``settings.mirror_margin``. Every other pair is ``mirror``: mirror images that
    rotation does not explain (the paper's left- and right-facing dog heads). A chiral feature (a
    colour "L") and its mirror image can land in one two-member rotation family, since their tuning
    curves are mirror images and natural images link them loosely; the score comparison tells them apart.

    In a layer without tuning curves (``placed=False``: the late layers, whose rotation families are not
    fitted) no params say which rotation to try, so every amount of the sweep is tried, in both directions:
    the pair is ``rotation`` when some rotation explains it about as well as the mirror does.
    """
    if not placed:
        return _flip_relations_unplaced(pairs, rotation_scores, settings.mirror_margin)
    out = {}
    labels, params, periods = rotation.labels, rotation.params, rotation.periods
    tolerance, margin = settings.tolerance, settings.mirror_margin
    amounts = np.array(sorted(rotation_scores), dtype=float)
    for f in np.unique(pairs.labels_[pairs.labels_ >= 0]):
        u, v = np.flatnonzero(pairs.labels_ == f)[:2]
        out[int(f)] = "mirror"
        if labels[u] < 0 or labels[u] != labels[v] or not len(amounts):
            continue
        a = np.mod(params[v] - params[u], periods.get(int(labels[u]), 360.0))
        forward = amounts[circular_distance(amounts, a, 360.0) <= tolerance]
        backward = amounts[circular_distance(amounts, -a, 360.0) <= tolerance]
        if not len(forward) and not len(backward):
            continue
        rotated = max([rotation_scores[x][u, v] for x in forward] + [rotation_scores[x][v, u] for x in backward])
        if rotated >= pairs.fit_[u] - margin:
            out[int(f)] = "rotation"
    return out


def _flip_relations_unplaced(pairs: "PairFamilies", rotation_scores: dict[float, np.ndarray], margin: float
                             ) -> dict[int, str]:
    """:func:`flip_relations` without rotation families: the best rotation score of the pair over the sweep."""
    out = {}
    for f in np.unique(pairs.labels_[pairs.labels_ >= 0]):
        u, v = np.flatnonzero(pairs.labels_ == f)[:2]
        rotated = max([max(m[u, v], m[v, u]) for m in rotation_scores.values()], default=-np.inf)
        out[int(f)] = "rotation" if rotated >= pairs.fit_[u] - margin else "mirror"
    return out


def relate_families(curves: np.ndarray, families: Assignment, frequency: np.ndarray,
                    settings: FamilySettings = FamilySettings(), similarity: np.ndarray | None = None) -> Relations:
    """Which families are one feature split in two, and by what.

    Natural images must confirm the links of a family (see :class:`AngularFamilies`), so a feature can
    come out as several families whose tuning curves match across them: each member's best match may
    lie in another family. For families F and G of one period, with ``sim`` the shifted tuning similarity
    of their members, ``ratio = mean_{F x G} sim / min(mean_F sim, mean_G sim)`` (off-diagonal means inside
    a family). F's sibling is the G of largest ratio when it is at least ``settings.sibling_similarity``, and
    the relation names what tells them apart:

    * ``frequency``: their members' median :func:`~equivar_core.tuning.frequency_index` differ by at least
      ``settings.frequency_gap``: one feature at two spatial frequencies (the paper's line and curve families come in
      several sizes);
    * ``fragment``: nothing the stimuli measure tells them apart: pieces of one family whose links across the
      pieces natural images did not confirm (too few images, or a difference no stimulus shows).

    Families with no sibling are absent from the result. ``similarity``: C x C shifted similarities of the
    units (at least of the members), when the caller has them; else computed with ``settings.curve_weighting``.
    """
    labels, periods = families.labels, families.periods
    min_ratio, frequency_gap, weighting = settings.sibling_similarity, settings.frequency_gap, settings.curve_weighting
    fams = sorted(periods)
    out = Relations({}, {}, {})
    members = np.flatnonzero(labels >= 0)
    if len(fams) < 2:
        return out
    sim = shifted_similarity(curves[members], weighting=weighting)[0] if similarity is None else \
        similarity[np.ix_(members, members)]
    onehot = (labels[members][:, None] == np.asarray(fams)[None]).astype(float)      # members x families
    n = onehot.sum(0)
    total = onehot.T @ sim @ onehot
    cross = total / np.outer(n, n)
    within = (np.diag(total) - n) / np.maximum(n * (n - 1), 1)          # the diagonal (self) terms are 1
    ratio = cross / np.maximum(np.minimum(within[:, None], within[None]), 1e-9)
    period = np.array([periods[f] for f in fams])
    ratio = np.where((period[:, None] == period[None]) & ~np.eye(len(fams), dtype=bool), ratio, -np.inf)
    median_freq = np.array([np.nanmedian(frequency[labels == f]) if np.isfinite(frequency[labels == f]).any()
                            else np.nan for f in fams])
    for i, f in enumerate(fams):
        j = int(np.argmax(ratio[i]))
        if ratio[i, j] < min_ratio:
            continue
        gap = abs(median_freq[i] - median_freq[j])
        out.sibling[f], out.similarity[f] = fams[j], float(ratio[i, j])
        out.relation[f] = "frequency" if gap >= frequency_gap else "fragment"
    return out


def place_variants(params: np.ndarray, period: float, invariant: np.ndarray, min_gap: float) -> np.ndarray:
    """Which member is the family's copy at each place, and which are variants beside it.

    Members closer than ``min_gap`` degrees (chained) share a place: a transformed copy of the same
    feature cannot tell them apart, but they differ in what the transform leaves alone (a second phase
    or frequency of a line detector, a colour unit whose luminance or spatial colour layout differs).
    At each place, the member whose transform-invariant curves agree best with the rest of the family
    (mean of ``invariant``, the members' unshifted similarities) is variant 0, the others 1, 2, ...
    """
    n = len(params)
    variants = np.zeros(n, dtype=int)
    if n < 2:
        return variants
    order = np.argsort(np.mod(params, period))
    gaps = np.mod(np.diff(np.r_[params[order], params[order[0]] + period]), period)
    agreement = (invariant.sum(1) - np.diag(invariant)) / (n - 1)
    place = np.cumsum(np.r_[0, (gaps[:-1] >= min_gap).astype(int)])      # a new place after each wide gap
    place[place == place[-1]] = 0 if gaps[-1] < min_gap else place[-1]      # wrap the circle
    for p in np.unique(place):
        at = order[place == p]
        variants[at[np.argsort(-agreement[at], kind="stable")]] = np.arange(len(at))
    return variants


def transform_evidence(shift_deg: np.ndarray, idx: np.ndarray, pair_scores: dict[float, np.ndarray],
                       tolerance: float, identity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Natural-image support for "v is u transformed by a" for every pair of ``idx``.

    With ``r_u(theta + t) = r_v(theta)`` (t = ``shift_deg[u, v]``), v is u
    moved by a = -t; the evidence is the larger of ``score_a(u, v)`` and
    ``score_{-a}(v, u)`` at the sweep amount nearest to a. The gain is the
    evidence minus the plain correlation ``corr(u(x), v(x))`` (``identity``):
    units that correlate whatever the transform (e.g. through shared
    luminance) gain nothing. Both are NaN where no amount lies within
    ``tolerance`` (near-zero shifts: duplicates).
    """
    amounts = np.array(sorted(pair_scores))
    # the shifts take the few values of the curves' grid: find the nearest amount once per value
    a, where = np.unique(np.mod(-shift_deg, 360.0).ravel(), return_inverse=True)
    d = np.abs(np.mod(a[:, None] - amounts + 180.0, 360.0) - 180.0)
    nearest = d.argmin(-1)[where].reshape(shift_deg.shape)
    close = (d.min(-1) <= tolerance)[where].reshape(shift_deg.shape)
    back = np.mod(360.0 - amounts, 360.0)
    back_idx = np.array([np.argmin(np.abs(np.mod(amounts - b + 180.0, 360.0) - 180.0)) for b in back])
    stack = np.stack([pair_scores[x][np.ix_(idx, idx)] for x in amounts])      # A x n x n
    fwd = np.take_along_axis(stack, nearest[None], 0)[0]                       # score_a(u, v)
    # score_{-a}(v, u): entry [u, v] read at [v, u] of the amount nearest to -a(u, v)
    rev = np.take_along_axis(stack, back_idx[nearest].T[None], 0)[0].T
    evidence = np.where(close, np.maximum(fwd, rev), np.nan)
    base = identity[np.ix_(idx, idx)] if identity is not None else np.zeros_like(evidence)
    return evidence, evidence - base


def partner_agreement(families: Assignment, evidence: Evidence, tolerance: float,
                      max_plain_correlation: float = 1.0, score_tie: float = 0.02,
                      best: dict[float, np.ndarray] | None = None) -> np.ndarray:
    """Fraction of transform amounts where a member's best partner is the member the family puts there.

    At sweep amount a, member u's partner should sit at ``param(u) + a``, read on the family's own measured
    params (members one period on count, u itself among them). The amount is judged when some member lies
    within ``tolerance`` of that place, and the member expected there is the nearest one. When the place
    falls in a gap, between the nearest member and the next member on its other side, and the nearest
    member is judged more closely at another amount (a is not the sweep amount nearest to its own offset
    from u), natural images cannot rank the two: either counts. A member counts as the best partner when
    its score is within ``score_tie`` of the best, or when natural images cannot tell it apart from the best
    (their plain correlation in ``evidence.identity`` is at least ``max_plain_correlation``). ``best``: amount
    -> each unit's best partner (``argmax`` of its row of the scores), when the caller has it.
    """
    labels, params, periods = families.labels, families.params, families.periods
    pair_scores, identity = evidence.scores, evidence.identity
    c = len(labels)
    hits, counts = np.zeros(c), np.zeros(c)
    if not pair_scores:
        return np.full(c, np.nan)
    keys = sorted(pair_scores)
    amounts = np.array(keys, dtype=float)
    if best is None:
        best = {a: np.argmax(pair_scores[a], axis=1) for a in keys}
    for f, period in periods.items():
        members = np.flatnonzero(labels == f)
        m, p = len(members), params[members]
        # only the members' rows and columns: no A x C x C stack of a whole layer
        top = np.stack([best[a][members] for a in keys])                               # A x u
        scores = np.stack([pair_scores[a][np.ix_(members, members)] for a in keys])   # A x u x v
        best_score = np.stack([pair_scores[a][members, best[a][members]] for a in keys])
        # is v (as good as) u's best partner at each amount (A x u x v)?
        partner = scores >= best_score[..., None] - score_tie
        if identity is not None:
            partner |= identity[top[..., None], members[None, None]] >= max_plain_correlation
        laps = np.arange(int(round(360.0 / period)))                              # places d + k * period
        d = np.mod(p[None, :, None] - p[:, None, None] + laps * period, 360.0).reshape(m, -1)   # u x (v, k)
        signed = np.mod(d[..., None] - amounts + 180.0, 360.0) - 180.0           # u x (v, k) x A
        dist = np.abs(signed)
        near = dist.argmin(1)                                                     # u x A
        gap = np.take_along_axis(dist, near[:, None], 1)[:, 0]
        side = np.sign(np.take_along_axis(signed, near[:, None], 1)[:, 0])
        other = np.where(np.sign(signed) == -side[:, None], dist, np.inf).argmin(1)
        has_other = (side != 0) & (np.sign(np.take_along_axis(signed, other[:, None], 1)[:, 0]) == -side)
        # a is not the sweep amount nearest to the nearest member's own offset
        judged_elsewhere = gap > np.take_along_axis(dist.min(2), near, 1) + 1e-9
        rows, amt = np.arange(m)[:, None], np.arange(len(keys))[None]
        hit = partner[amt, rows, near // len(laps)] | (
            has_other & judged_elsewhere & partner[amt, rows, other // len(laps)])
        judged = gap <= tolerance
        hits[members] += (hit & judged).sum(1)
        counts[members] += judged.sum(1)
    return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


@dataclass(kw_only=True)
class PairFamilies:
    """Flip or scale pairs from transform scores (an estimator; keyword parameters are the fields of
    :class:`FamilySettings` of the same names, their defaults read from there)."""

    pair_min_score: float = setting_param("pair_min_score")
    pair_max_error_ratio: float = setting_param("pair_max_error_ratio")

    def fit(self, scores: dict[float, np.ndarray], directed: bool = False) -> "PairFamilies":
        """Pair units; each joins at most one pair (best score first); pairs are numbered by their lowest unit.

        ``scores``: amount -> C x C score matrix. For ``directed`` transforms
        (scale) ``scores[a][u, v]`` relates u on x to v on g.x, so u gets param 1
        and v param a; for a flip the pair is unordered and gets params 0
        (lower unit index) and 1.
        """
        c = next(iter(scores.values())).shape[0]
        self.labels_ = np.full(c, -1)
        self.params_ = np.full(c, np.nan)
        self.fit_ = np.full(c, np.nan)
        candidates = []
        for amount, m in scores.items():
            others = m.copy()
            np.fill_diagonal(others, -np.inf)
            row_best, col_best = others.argmax(1), others.argmax(0)
            for u in range(c):
                v = int(row_best[u])
                if col_best[v] != u or (not directed and u > v):
                    continue
                score = m[u, v] if directed else (m[u, v] + m[v, u]) / 2
                if score >= self.pair_min_score and 1 - score <= self.pair_max_error_ratio * (1 - max(m[u, u], m[v, v])):
                    candidates.append((float(score), float(amount), u, v))
        family = 0
        for score, amount, u, v in sorted(candidates, reverse=True):
            if self.labels_[u] >= 0 or self.labels_[v] >= 0:
                continue
            self.labels_[[u, v]] = family
            self.params_[[u, v]] = (1.0, amount) if directed else (0.0, 1.0)
            self.fit_[[u, v]] = score
            family += 1
        # number the pairs by their lowest unit, not by score: near-equal scores (exact mirror copies) swap
        # places under rounding, and the ids would with them
        first = [np.flatnonzero(self.labels_ == f).min() for f in range(family)]
        rank = np.empty(family, dtype=int)
        rank[np.argsort(first)] = np.arange(family)
        if family:
            self.labels_ = np.where(self.labels_ >= 0, rank[np.maximum(self.labels_, 0)], -1)
        return self
