"""Every table's columns, in order, with their types and meanings: declared once, here.

The stages build their DataFrames from these declarations (:meth:`Table.check` fails loudly on a table whose
columns are not its declaration's), and ``docs/tables.md`` is rendered from them (:func:`render`; a test
checks that the file is current)::

    python -m equivar_core.tables > docs/tables.md

A column whose meaning is :data:`SAME` shares the meaning of the column before it (one row of the docs).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: the meaning of a column that means what the column before it means
SAME = ""
TEXT, INTEGER, FLOAT, BOOLEAN = "text", "integer", "float", "boolean"
TYPES = (TEXT, INTEGER, FLOAT, BOOLEAN)
#: the pandas type each declared type is written as where a column holds no value (nullable, as Arrow reads them)
_DTYPES = {TEXT: "str", INTEGER: "Int64", FLOAT: "float64", BOOLEAN: "boolean"}


@dataclass(frozen=True)
class Column:
    """One column: its name, its type (text, integer, float or boolean; null where the meaning says so)
    and what it means (markdown; :data:`SAME`: as the column before it)."""

    name: str
    type: str
    meaning: str


@dataclass(frozen=True)
class Table:
    """The declaration of one table (or of several with the same columns, ``names``): what a row is
    (``about``), its columns in order, and what more there is to say (``notes``: queries, caveats).
    ``view``: a view of the catalog over other tables, with no files of its own."""

    names: tuple[str, ...]
    about: str
    columns: tuple[Column, ...]
    notes: str = ""
    view: bool = False

    @property
    def column_names(self) -> list[str]:
        """The columns in order, ``model`` first."""
        return [c.name for c in self.columns]

    @property
    def built(self) -> list[str]:
        """The columns a stage builds, in order: all but the ``model`` column (which comes first)."""
        return [c.name for c in self.columns if c is not MODEL]

    def empty(self) -> pd.DataFrame:
        """A table without rows, with the columns of :attr:`built` (untyped)."""
        return pd.DataFrame({c: [] for c in self.built})

    def check(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` if its columns are this declaration's, in order (else ``ValueError``), with every column that
        holds no value (all of them in a table without rows) given its declared type: a model whose run found
        nothing writes the same file schema as one that found something, so that the catalog's view over
        both reads (an empty text column would otherwise be written as float)."""
        if list(df.columns) != self.column_names:
            raise ValueError(f"table {self.names[0]} has columns {list(df.columns)}, but its declaration in "
                             f"equivar_core.tables has {self.column_names}")
        blank = {c.name: _DTYPES[c.type] for c in self.columns if df[c.name].isna().all()}
        return df.astype(blank) if blank else df


def _columns(*columns: tuple[str, str, str], model: bool = True) -> tuple[Column, ...]:
    """Columns from (name, type, meaning) triples, after the ``model`` column unless ``model`` is False."""
    return ((MODEL,) if model else ()) + tuple(Column(*c) for c in columns)


MODEL = Column("model", TEXT, "the model's name (the `--name`, by default the spec's name; its Dagster partition key)")
_LAYER = ("layer", TEXT, "the analysed layer, as in `layers`")
_UNIT = ("unit", INTEGER, "channel index in the layer's output, from 0")
_TRANSFORM = ("transform", TEXT, "`rotate`, `hue`, `hflip` or `scale`")
_LAYER_AND_TRANSFORM = (("layer", TEXT, "as in `families`"), ("transform", TEXT, SAME))

#: what holds for every table (the top of docs/tables.md)
PREAMBLE = """Every table has a `model` column (the `--name`, by default the spec's name;
it is also the model's Dagster partition key) and is stored as `<out>/<table>/model=<model>/[transform=<t>/][layer=<layer>/]data.parquet`
(`src_layer=` for the circuit tables). The DuckDB catalog `<out>/equivar.duckdb`
has a view of the same name over all models' files. Angles are degrees,
counter-clockwise on screen, in [0, 360); hues are angles in the chroma plane
of the opponent colour space of `equivar_core.transforms` (0 red, 120 green,
240 blue). Units are channel indices from 0.

Beside the tables, `<out>/_models/<name>.json` is the model index (what each
partition key loads: `name`, `model` spec, `weights` file, `step`, `sha256` of
the weights when registered, `layers`) and `<out>/_artifacts/model=<name>/`
holds the activation samples, score matrices and fingerprints of a model."""

MODELS = Table(("models",), "One row for the model of the run.", _columns(
    ("spec", TEXT, "the model spec given to `--model`"),
    ("weights_sha256", TEXT, "SHA-256 of the weights file (built-ins, `--weights`, timm's cache), or of the state "
     "dict's tensors for a callable and for `untrained:NAME` (seeded weights, batch-norm statistics of the run's "
     "photos)"),
    ("n_params", INTEGER, "number of parameters"),
    ("input_size", INTEGER, "input side in pixels"),
    ("weights", TEXT, "`built-in` (also for `untrained:NAME`), the `--weights` path, or for `timm:NAME` without "
     "`--weights` the file read from timm's cache"),
    ("seed", INTEGER, "the run's seed (image crops, subsampling)"),
    ("step", INTEGER, "training step of the checkpoint in `--weights` (`--step`), when known; else null"),
))

LAYERS = Table(("layers",), "One row per analysed layer.", _columns(
    ("layer", TEXT, "module name as in `model.named_modules()`, or one of the model's aliases (InceptionV1: "
     "Lucent's `mixed3b_3x3` ...); EfficientNet-Lite0's ReLU6 call sites are `_blocks.N.expand` and "
     "`_blocks.N.depthwise` (measured at their input, the batch-norm output)"),
    ("depth", INTEGER, "the layer's place in the forward pass (tables with this column are read back in this "
     "order; circuits run between consecutive analysed layers in it)"),
    ("n_units", INTEGER, "output channels: with `height` and `width`, the output shape at the input size"),
    ("privileged", BOOLEAN, "the layer's channels feed or come out of an elementwise nonlinearity (directly or "
     "through batch norm, pooling, concatenation), so single channels are candidate features; false for linear "
     "bottlenecks, residual sums and convolutions without a nonlinearity next to them (families are not expected "
     "there; `equivar run` warns)"),
    ("basis", TEXT, "why, in words: `input of ReLU6`, `output of Relu`, `feeds ReLU`, `linear: ...`"),
    ("tuned", BOOLEAN, "synthetic stimuli were measured (`tuning`, `unit_profiles`); false in the late preset's "
     "layers (`tuning.late = skip`, the default), whose families come from natural-image transform scores alone: "
     "flip and scale pairs, with the same controls (`basis_control`, `family_stability`, `family_sweeps`), and no "
     "rotation or hue families, which need tuning curves"),
    ("height", INTEGER, "the output map's size at the input size (with `n_units`: the output shape)"),
    ("width", INTEGER, SAME),
    ("stride", FLOAT, "input pixels per map cell"),
    ("rf_radius", FLOAT, "effective receptive-field radius in input pixels: the radius around the centre unit "
     "holding 90% of mean |d unit / d input|"),
    ("rf_offset_y", FLOAT, "where that gradient's centroid sits relative to the nominal cell centre (TF \"same\" "
     "padding shifts it)"),
    ("rf_offset_x", FLOAT, SAME),
))

IMAGES = Table(("images",), "One row per natural-image view, in order.", _columns(
    ("image", INTEGER, "index"),
    ("path", TEXT, "the image file"),
    ("crop_top", FLOAT, "the crop: as fractions of the free margin"),
    ("crop_left", FLOAT, SAME),
    ("crop_size", FLOAT, "the crop: as a fraction of the short side; 1 = centre square"),
))

UNIT_STATS = Table(("unit_stats",), "Per unit over all positions of the original natural images.", _columns(
    _LAYER, _UNIT,
    ("mean", FLOAT, "mean response (of the pre-activation where the layer is itself a nonlinearity)"),
    ("std", FLOAT, "standard deviation of the same"),
    ("best_image", INTEGER, "the image with the largest response anywhere"),
    ("best_value", FLOAT, "that largest response"),
    ("top_classes", TEXT, "the ImageNet classes of the unit's strongest photos, most frequent first, as `unit_classes` "
     "ranks them (`tench, goldfish, ...`); null where none of them has a class"),
))

UNIT_CLASSES = Table(("unit_classes",), """What each unit sees, in words: the ImageNet classes of its 16 strongest photos (those of
`unit_stats`), most frequent first, up to three per unit. A photo's class comes from its file name, as in the
shared ImageNet sample (`n01440764_tench.JPEG`: `n01440764`, `tench`), else from the folder it lies in (a
folder-per-class layout, `train/n01440764/x.JPEG`); a photo whose name and folder carry no WordNet id has none,
and a run on photos without classes (the scikit-image photos) has an empty table.""", _columns(
    _LAYER, _UNIT,
    ("rank", INTEGER, "1 for the unit's most frequent class among its top photos (ties: the class of the stronger "
     "photo first), 2, 3"),
    ("wnid", TEXT, "the class's WordNet id"),
    ("class_name", TEXT, "its short name"),
    ("count", INTEGER, "the unit's top photos of that class"),
    ("labelled", INTEGER, "the unit's top photos that have a class"),
    ("expected", FLOAT, "the count chance gives: `labelled` times the class's share of the run's labelled photos "
     "(on the shared sample, one photo per class: 0.016, so a count of 1 is what any unit gets; with many photos "
     "per class, `count / expected` is the unit's preference)"),
), notes="""```sql
-- units whose top photos gather on one class beyond chance
select layer, unit, class_name, count, labelled, round(count / expected, 1) as lift
from unit_classes where rank = 1 and count >= 3 order by lift desc limit 20;
```""")

SAMPLES = Table(("activation_samples", "transformed_samples"), """Manifests of the float16 sample arrays, per layer and sweep `group`:
`activation_samples` for the original images (`group = identity`),
`transformed_samples` for each transform family (`rotate`, `hflip`, `hue`,
`scale`; one Dagster asset each, `transformed_samples/<group>`, stored under
`transform=<group>/`).""", _columns(
    _LAYER,
    ("depth", INTEGER, "the layer's place in the forward pass, as in `layers`"),
    ("group", TEXT, "the sweep group: `identity` or a transform family"),
    ("path", TEXT, "V x K x P x C: version, kept image, point, unit; the first K = `n_kept` images, "
     "`--keep-samples`"),
    ("points_path", TEXT, "the same points for every group"),
    ("moments_path", TEXT, "the score moments of the group over all images, `equivar_core.moments`: what "
     "`transform_pairs`, `scale_pairs` and `basis_control` read; beside it `<layer>.<group>.folds.npz`, the scores "
     "of each fold of the images that `family_stability` reads"),
    ("n_versions", INTEGER, "counts"),
    ("n_images", INTEGER, SAME),
    ("n_kept", INTEGER, SAME),
    ("n_loaded", INTEGER, SAME),
    ("n_skipped", INTEGER, SAME),
    ("n_points", INTEGER, SAME),
    ("n_units", INTEGER, SAME),
    ("versions", TEXT, "`transform:amount` labels of the group"),
))

_STIMULUS = (
    "`edge`, `line`, `grating`, `curve`, `high_low`, `color_contrast` (param = orientation, max over hue), "
    "`color_contrast_hue` (param = hue, max over orientation), `color_contrast_grid` (param = orientation, param2 = "
    "hue), `grating` (param = orientation, max over the two periods), `grating_grid` (param = orientation, param2 = "
    "the grating period in pixels: 0.8 and 1.6 receptive-field radii, at least 4 and 6), `curve` (param = "
    "orientation, max over radius), `curve_grid` (param = orientation at 5 degree steps, param2 = the curve's radius "
    "in pixels, four radii from 0.75 to 4 receptive-field radii), `center_surround` (param = hue), `circle` (param = "
    "radius in pixels)")
TUNING = Table(("tuning",), "Every unit's response to every swept synthetic stimulus.", _columns(
    _LAYER, _UNIT,
    ("stimulus", TEXT, _STIMULUS),
    ("param", FLOAT, "the swept parameter"),
    ("param2", FLOAT, "second swept parameter (`color_contrast_grid`: hue; `curve_grid`: radius; `grating_grid`: "
     "period), else null"),
    ("response", FLOAT, "the centre unit's pre-activation, maximized over nuisances (phase, polarity, curve radius) "
     "and a 3 x 3 cell position jitter, in standard deviations of the unit over natural images: "
     "`(a - mean) / std`"),
))

TUNING_RANDOM_BASIS = Table(("tuning_random_basis",), """The same columns as `tuning`, for the units of each layer mixed by a seeded random orthogonal matrix Q
(unit i is `sum_j Q[i, j] u_j`; Q from the run's seed and the layer's name): measured in the same forward
passes (the raw responses at the read-out cells are mixed before the maxima) and standardized by the
mixed units' natural-image mean `Q mean` and standard deviation `sqrt(diag(Q Cov Q^T))`.""", _columns(
    _LAYER, ("unit", INTEGER, "the mixed unit i"), ("stimulus", TEXT, "as in `tuning`"),
    ("param", FLOAT, SAME), ("param2", FLOAT, SAME), ("response", FLOAT, "as in `tuning`, of the mixed unit"),
))

UNIT_PROFILES = Table(("unit_profiles",), "Per unit and stimulus, what its tuning curve prefers.", _columns(
    _LAYER, _UNIT,
    ("stimulus", TEXT, "as in `tuning` (no grid)"),
    ("preferred", FLOAT, "argmax of the (3-tap smoothed) curve, modulo the period"),
    ("selectivity", FLOAT, "`|sum r' e^(i k theta)| / sum r'` with `r' = r - min r`, `k = 360 / period`; 0 for "
     "untuned units"),
    ("period", FLOAT, "360, 180 or 90 (the curve repeats after 180 / 90 degrees with correlation > 0.8); null when "
     "untuned (max - min < 0.3 std) and for `circle`"),
    ("modulation", FLOAT, "max - min of the curve, in natural-image standard deviations"),
    ("preferred2", FLOAT, "for `color_contrast`: the preferred hue at the best cell of the orientation x hue grid, "
     "with the orientation folded into [0, 180) (orientation + 180 is hue + 180); for `grating`: the period (pixels) "
     "of the best cell of the orientation x period grid; null elsewhere"),
), notes="""Colour-contrast units of one rotation family couple hue to orientation when
`preferred2 - preferred` is the same for all members: query it with
`select f.family, p.unit, p.preferred, p.preferred2 from families f join unit_profiles p using (model, layer, unit) where p.stimulus = 'color_contrast'`.""")

TRANSFORM_PAIRS = Table(("transform_pairs",), """One Dagster asset per transform family (`transform_pairs/<transform>`, files
under `transform=<transform>/`); the view covers all of them. For each
layer, transform (`rotate`, `hflip`, `hue`, `scale`) and amount,
each unit's self row (`partner = unit`, `rank = 0`: its invariance) and its
three best other partners (`rank` 1..3).""", _columns(
    _LAYER, _TRANSFORM,
    ("amount", FLOAT, "degrees for `rotate` and `hue`, the factor for `scale`, 1 for `hflip`"),
    _UNIT,
    ("partner", INTEGER, "a unit of the same layer (`unit` itself on the self row)"),
    ("rank", INTEGER, "0 for the self row, 1..3 for the best other partners"),
    ("score", FLOAT, "Pearson r over images and positions inside the central disc of unit `unit` on the original "
     "images with unit `partner` on the transformed images at the corresponding positions; 0 for a dead unit (its "
     "standard deviation below 1% of the layer's median, `scores.DEAD_UNIT_SHARE`: constant but for round-off and "
     "the padding's border pattern, which dead units share)"),
    ("null_score", FLOAT, "the same statistic with the transformed images paired with other images (within each "
     "forward batch of B images, image i with image i + B/2)"),
    ("z", FLOAT, "`(score - mean) / std` of all null scores of that layer, transform and amount"),
), notes="""The full C x C score matrices are kept in
`<out>/_artifacts/model=<m>/scores/<layer>.<transform>.scores.npz` (and the
plain unit-unit correlations on the original images in
`<layer>.identity.scores.npz`).""")

SCALE_PAIRS = Table(("scale_pairs",), """The same feature at another size in a deeper layer. For analysed layers A (earlier) and B (later)
and each zoom s of the sweep, `score(u, v) = corr(u_A(x), v_B(zoom_s x))` at the same image points: v on
the enlarged image does what u does on the original, i.e. v is u at s times the size. Rows: each unit of A
with its three best partners in B, from the scale family's cross-layer moments (no pass of its own).""",
                    _columns(
    ("small_layer", TEXT, "the earlier layer A"),
    ("small_unit", INTEGER, "the unit u of A"),
    ("large_layer", TEXT, "the later layer B"),
    ("large_unit", INTEGER, "the unit v of B"),
    ("scale", FLOAT, "the zoom s"),
    ("rank", INTEGER, "1..3: v's rank among u's partners"),
    ("score", FLOAT, "`corr(u_A(x), v_B(zoom_s x))`, Pearson r over images and positions inside the central disc"),
    ("null_score", FLOAT, "the same with the zoomed images paired with other images, as in `transform_pairs`"),
    ("z", FLOAT, "`(score - mean) / std` of all null scores of that layer pair and zoom"),
    ("mutual", BOOLEAN, "u is also v's best partner in A"),
))

TRANSFORM_MAPS = Table(("transform_maps",), """Per layer, transform and amount, the least-squares linear map M with
`phi(g.x) ~ M^T phi(x)` on standardized activations (Lenc & Vedaldi 2015),
computed from the same samples as the scores.""", _columns(
    _LAYER, _TRANSFORM,
    ("amount", FLOAT, "as in `transform_pairs`"),
    ("r2", FLOAT, "mean over units of the variance of the unit on g.x that the map explains"),
    ("permutation", FLOAT, "mean share of each column's largest squared weight: 1 when every unit on g.x is one "
     "unit of x (transformed-neuron equivariance)"),
    ("identity", FLOAT, "mean share of the diagonal weight: 1 when every unit is invariant"),
    ("n_units", INTEGER, "units in the layer"),
))

FAMILIES = Table(("families",), "Units that are transformed copies of one another: one row per member.", _columns(
    _LAYER,
    ("family", INTEGER, "id, unique within a model and layer"),
    ("transform", TEXT, "`rotate`, `hue`, `hflip` or `scale`"),
    _UNIT,
    ("param", FLOAT, "place in the family: degrees for rotate and hue (relative to the family's reference unit's "
     "preferred angle), 0 / 1 for the two sides of a flip pair, 1 / s for a scale pair (the unit on x, the unit on "
     "x zoomed by s)"),
    ("fit", FLOAT, "rotate, hue: shifted tuning similarity to the family's reference unit (the reference: its mean "
     "similarity to the others), in [0, 1]; hflip, scale: the pair's transform score"),
    ("period", FLOAT, "360, 180 or 90 for rotate and hue families (null for pairs)"),
    ("agreement", FLOAT, "share of the natural-image sweep amounts a at which the unit's best transform partner is "
     "the member expected at param + a: the nearest member, or either member around that place where it falls in a "
     "gap and the nearest member's own offset lies nearer another amount (null if no member sits within "
     "`tolerance` of the place, and for pairs)"),
    ("size", INTEGER, "members in the family"),
    ("places", FLOAT, "rotate, hue: how many places the family's circle has (`basis.family_order`: its size where "
     "the members go round the whole period with no gap over twice the median spacing, else period / median "
     "spacing); null for pairs"),
    ("holes", FLOAT, "places - copies (variant 0): the members a fragment is missing (0 for a complete family)"),
    ("variant", INTEGER, "0 for the family's copy at its place; 1, 2, ... for further units at a place already held "
     "(closer than half `min_spread`), ranked by how well their transform-invariant curves agree with the rest of "
     "the family; 0 for pairs"),
    ("frequency_index", FLOAT, "the unit's preference for the finer grating: `(R_fine - R_coarse) / (R_fine + "
     "R_coarse)` from `grating_grid` (each R the best response over orientation at one period, less the unit's "
     "lowest response on the grid), in [-1, 1]"),
    ("sibling", INTEGER, "rotate, hue: the family of the same layer, transform and period whose members' tuning "
     "curves match this family's (cross-family shifted similarity at least `sibling_similarity`, 0.9, of the worse "
     "family's own); -1 if none"),
    ("sibling_similarity", FLOAT, "that cross-family similarity over the worse family's within-family similarity "
     "(above 1: the members match the other family better than their own)"),
    ("relation", TEXT, "`frequency`: the two families' median `frequency_index` differ by at least `frequency_gap` "
     "(0.3): one feature at two spatial frequencies; `fragment`: nothing the stimuli measure tells them apart, so "
     "they are pieces of one family whose links across the pieces natural images did not confirm; null without a "
     "sibling. hflip pairs: `rotation` when both units are in one rotation family and the rotation their params "
     "imply scores on natural images at least the flip score less `families.mirror_margin` (0.05): a line at 30 "
     "degrees and its partner at 150; in an untuned layer (`layers.tuned` false: no rotation families), `rotation` "
     "when some rotation of the sweep, in either direction between the two, scores at least the flip score less "
     "the margin; `mirror` otherwise: mirror images that rotation does not explain (the paper's left- and "
     "right-facing dog heads)"),
), notes="""A rotation family whose members' `frequency_index` falls into two clearly separate groups (the largest
gap between sorted values at least `frequency_gap` and twice the range inside either group, each group
spread over `min_spread` degrees) is split into two families, which then name each other as `frequency`
siblings: rotating a unit does not change the spatial frequency it prefers.

```sql
-- families and what they are to one another, per layer
select layer, family, sibling, relation, count(*) as size, median(frequency_index) as band
from families where transform = 'rotate' group by all order by layer, family;
```

A unit belongs to at most one family per transform. Units in no family have no row.""")

FAMILY_SWEEPS = Table(("family_sweeps",), """The paper's own test, on each layer's two largest rotation or hue families
(`RotationTestSettings.max_families`) and its two largest curve families. For each
member (`driver`), its two strongest natural images are resampled onto a
receptive-field-sized canvas with its peak on the centre cell's receptive
field and rotated (or hue-rotated) about that point in `step` degree steps
(10; 5 for curve families) through one period of the family (a 180-periodic
family turns its images through 0-175 degrees: a half turn repeats what its
members see); every member's response is recorded. Each tested family is run
again on its control: as many units of the layer in no family of the
transform, matched one to one on tuning selectivity, given the family's params
in a seeded random order.

Flip pairs (`transform = hflip`, the `rotation_test.max_flip_pairs` best of
each layer, 8 by default): each member's two best photos, centred alike, as
they are (`angle` 0) and mirrored left-right about the unit's receptive-field
centre (`angle` 1); the partner of a true mirror pair answers the mirrored
photos best (`expected_angle` 1) and about as strongly as the driver answered
the originals (compare `response` of its `angle = 1` row with the driver's
`self` row at `angle = 0`). Their controls are two units in no flip pair,
matched on flip invariance (their own score under `hflip`), params 0 and 1 at
random, both driving. `chance` is 1/2.""", _columns(
    _LAYER,
    ("family", INTEGER, "the tested family, as in `families` (for `control` rows: the family they stand in for)"),
    ("transform", TEXT, "`rotate`, `hue` or `hflip`"),
    ("role", TEXT, "`member` (a real family), `self` (the driver's own row: expected angle 0, its best photos were "
     "chosen unturned, so leave it out of summaries), `control` (the family's control units; `family` is the family "
     "they stand in for; `rotation_test.control_drivers` of them, 2 by default, drawn at random, drive, each read "
     "against all of them; a control driver's own row is left out)"),
    ("driver", INTEGER, "the unit whose best images are turned"),
    ("member", INTEGER, "the family member whose response is recorded"),
    ("angle", FLOAT, "rotation (or hue rotation) of the images, degrees; for `hflip` 0 (as they are) or 1 "
     "(mirrored)"),
    ("response", FLOAT, "the member's pre-activation at the centre cell (3 x 3 jitter max), in natural-image "
     "standard deviations, mean over the images"),
    ("peak_angle", FLOAT, "the angle of the member's largest response, modulo the family period"),
    ("expected_angle", FLOAT, "param(member) - param(driver), modulo the period"),
    ("drive", FLOAT, "the member's response at the sweep angle nearest `expected_angle` over the driver's own "
     "response to its photos as they are (angle 0): 1 when the member answers the transformed photos as strongly as "
     "the driver answers the originals (the flip test's \"about as well\"); NaN where the driver's own response is "
     "not positive"),
    ("error", FLOAT, "circular distance between the two"),
    ("passed", BOOLEAN, "`error` is at most `rotation_test.tolerance` (15 degrees by default): the pass mark the "
     "summaries count"),
    ("chance", FLOAT, "the probability that a peak on a uniformly random sweep angle lands within "
     "`rotation_test.tolerance` (15 degrees) of `expected_angle`: 3/18 at 10 degree steps over 180, 3/36 over 360"),
    ("step", FLOAT, "the angle step of this family's sweep (degrees)"),
))

CIRCUIT_WEIGHTS = Table(("circuit_weights",), """Expanded weights between consecutive analysed layers (every unit pair when
the two layers have at most 128 x 128 pairs, else family members only).""", _columns(
    ("src_layer", TEXT, "the earlier of two consecutive analysed layers"),
    ("src_unit", INTEGER, "a unit of `src_layer`"),
    ("dst_layer", TEXT, "the next analysed layer"),
    ("dst_unit", INTEGER, "a unit of `dst_layer`"),
    ("dy", INTEGER, "offset in the source layer's grid from the cell under the destination unit's centre"),
    ("dx", INTEGER, SAME),
    ("weight", FLOAT, "d dst(centre) / d src(centre + (dy, dx)) in the linearized network (ReLU -> identity, max "
     "pool -> average pool, LRN -> identity)"),
    ("cancellation", FLOAT, "|sum W| / sum |W| over the pair's kernel: near 0 where excitation and inhibition "
     "cancel"),
))

CIRCUIT_FAMILIES = Table(("circuit_families",),
                         "One row per source family, destination family (same transform) and relative place.",
                         _columns(
    ("src_layer", TEXT, "as in `circuit_weights`"),
    ("src_family", INTEGER, "a family of `src_layer`, as in `families`"),
    ("dst_layer", TEXT, "as in `circuit_weights`"),
    ("dst_family", INTEGER, "a family of `dst_layer` of the same transform; -1 for equivariant -> invariant rows "
     "(see `dst_unit`)"),
    _TRANSFORM,
    ("delta", FLOAT, "param of the destination member minus param of the source member, wrapped to the period "
     "(binned to 15 degrees for rotate and hue)"),
    ("mean_weight", FLOAT, "mean over member pairs at that delta of the summed kernel"),
    ("n_pairs", INTEGER, "member pairs at that delta"),
    ("equivariance", FLOAT, "Pearson r over all matched pairs of `T_t(W(a -> b))` and `W(a' -> b')` inside the "
     "kernel's central disc, where a' is a turned by t and b' is the member of the destination family at param(b) + "
     "t (bilinear rotation for angles that are not multiples of 90); for flip pairs b' is the other member; empty "
     "(NaN) for scale pairs, which have no circle to match members on"),
    ("n_matched", INTEGER, "how many (a, a', b) were matched"),
    ("null_mean", FLOAT, "the same score with every destination member (or the invariant unit) replaced by a random "
     "unit of the destination layer of similar kernel norm, on both sides of the comparison: mean and standard "
     "deviation over `circuits.null_draws` (32) seeded draws; NaN where no other unit receives weights from the "
     "family"),
    ("null_sd", FLOAT, SAME),
    ("z", FLOAT, "(equivariance - null_mean) / null_sd: claim a motif only where it is large (the planted group "
     "convolution: 28-130)"),
    ("dst_unit", INTEGER, "for equivariant -> invariant rows (`dst_family = -1`): the destination unit, invariant to "
     "the transform (mean self score >= 0.8) and in no family of it; there b' = b, and `delta` is minus the source "
     "member's param; null on the other rows. Sources are rotation and hue families and flip pairs (`hflip`: a unit "
     "invariant to mirroring that pools a left- and a right-facing detector with mirrored kernels, the paper's "
     "pose-invariant dog head)"),
    ("kernel_rank_one", FLOAT, "of the layer pair: median over destination units of the share of their kernels' "
     "energy (all sources) that one spatial pattern holds (`circuits.kernel_rank_one`). Near 1 where only 1 x 1 "
     "convolutions lie between the layers but the destination's own depthwise step (consecutive blocks of an "
     "inverted-residual network, the `late` preset): every kernel into a unit is then that unit's own kernel times "
     "a number, so `equivariance` tests only whether that kernel has the symmetry and the numbers line up, and an "
     "equivariant -> invariant score and its null are degenerate (near -1 for a near-constant kernel and any two "
     "unequal numbers): read those layer pairs by the summed weights (`mean_weight`), not by `z`"),
))

REFERENCE_FAMILIES = Table(("reference_families",), """Published unit lists for the run's architecture (`equivar_core/reference/<spec>_families.csv`;
shipped: InceptionV1's ten mixed3b curve detectors from the Curve Detectors article).""", _columns(
    _LAYER,
    ("family_name", TEXT, "the family's name in the publication (`curve detectors`)"),
    ("transform", TEXT, "the family's transform, as in `families`"),
    _UNIT,
    ("source", TEXT, "the publication"),
), notes="""Precision and recall of the automatic families against them:

```sql
with ref as (select layer, unit from reference_families where model = 'inceptionv1'),
     best as (select f.family, count(*) as hits from families f join ref using (layer, unit)
              where f.model = 'inceptionv1' and f.transform = 'rotate' group by 1 order by 2 desc limit 1),
     fam as (select unit from families where model = 'inceptionv1' and transform = 'rotate'
             and family = (select family from best))
select (select hits from best) * 1.0 / (select count(*) from fam) as precision,
       (select hits from best) * 1.0 / (select count(*) from ref) as recall;
```""")

BASIS_CONTROL = Table(("basis_control",), """Are the families a property of the units? The same family assignment, run on each layer in a random
orthogonal basis (`tuning_random_basis`, and transform scores of the stored samples mixed by the same Q;
no new forward pass). See `equivar_core/basis.py`.""", _columns(
    *_LAYER_AND_TRANSFORM,
    ("units", INTEGER, "units in the layer"),
    ("units_in_families", INTEGER, "units in families, in the layer's own basis (equal to the `families` table's "
     "counts)"),
    ("units_in_families_random_basis", INTEGER, "the same in the random basis"),
    ("families", INTEGER, "families, in the layer's own basis (equal to the `families` table's counts)"),
    ("families_random_basis", INTEGER, "the same in the random basis"),
    ("ratio", FLOAT, "units_in_families_random_basis / units_in_families (null when the real basis has none)"),
))

FAMILY_STABILITY = Table(("family_stability",), """Do the families come back from other photos? The natural images are split into `stability.folds` (4)
disjoint folds (image i in fold i mod 4); the passes keep each fold's transform scores apart (no pass of
their own) and families are fitted again in each fold with the run's tuning, in the `families` step. See
`equivar_core/stability.py`.""", _columns(
    ("layer", TEXT, "as in `families`; `family = -1`: the row of the layer and transform"),
    ("transform", TEXT, SAME),
    ("family", INTEGER, SAME),
    ("size", INTEGER, "the family's members; on the layer row, units in families"),
    ("folds", INTEGER, "folds that had images (a family is compared in each)"),
    ("reappear", FLOAT, "share of the folds where a fold family of the same layer and transform overlaps the family "
     "with a Jaccard (shared members / members of either) of at least `stability.min_jaccard` (0.5); on the layer "
     "row, the mean over its families (null without families)"),
    ("median_jaccard", FLOAT, "median over the folds of that best Jaccard (0 in a fold without families there); on "
     "the layer row, the median over its families"),
    ("ari", FLOAT, "layer row: mean adjusted Rand index between the folds' families over every pair of folds (units "
     "in no family count as clusters of one: 1 = the same families, about 0 = no more alike than chance)"),
    ("ari_whole", FLOAT, "layer row: mean adjusted Rand index between each fold's families and the run's"),
))

SENSITIVITY = Table(("sensitivity",), """How much the families depend on where the thresholds sit: each membership threshold of `families`
named in `stability.thresholds` moved, one at a time, by each share in `stability.changes`
(-20%, -10%, +10%, +20%), the families refitted from the stored scores and tuning (no pass); a
transform whose estimator does not read the threshold (flip and scale pairs for the angular ones, rotation
and hue for `pair_min_score`) keeps the run's counts. Computed in the `families` step.""", _columns(
    *_LAYER_AND_TRANSFORM,
    ("threshold", TEXT, "the `families` setting moved, by what share of its value, and the value used (kept inside "
     "its declared range)"),
    ("change", FLOAT, SAME),
    ("value", FLOAT, SAME),
    ("units_in_families", INTEGER, "with the moved threshold"),
    ("families", INTEGER, SAME),
    ("units_in_families_base", INTEGER, "the run's own (the `families` table)"),
    ("families_base", INTEGER, SAME),
), notes="""```sql
select transform, family, size, reappear, median_jaccard from family_stability where family >= 0 order by reappear;
select layer, transform, threshold, change, units_in_families, units_in_families_base from sensitivity
 where transform = 'rotate' order by layer, threshold, change;
```""")

LAYER_SUMMARY = Table(("layer_summary",), "What to design in, per layer and transform.", _columns(
    _LAYER, _TRANSFORM,
    ("units", INTEGER, "how much of the layer is in families of this transform"),
    ("units_in_families", INTEGER, SAME),
    ("fraction", FLOAT, SAME),
    ("families", INTEGER, "how many families, and the members of the largest"),
    ("largest_family", INTEGER, SAME),
    ("median_spacing", FLOAT, "rotate, hue: median over the layer's families of the median gap (degrees) between "
     "neighbouring members; null for pairs"),
    ("period", FLOAT, "rotate, hue: the largest family's period"),
    ("mirror_pairs", FLOAT, "hflip: flip pairs whose `relation` is `mirror` (mirror images that rotation does not "
     "explain); null for the other transforms"),
    ("above_chance", BOOLEAN, "at least two units in families and at least twice as many as in the random basis "
     "(`basis_control`)"),
    ("group_step", FLOAT, "rotate, hue: degrees between the largest family's places (its period over its number of "
     "places M: its size when it goes round the whole circle, else period / median spacing), on the image for "
     "rotate, on the hue circle for hue"),
    ("suggested_group", TEXT, "`C<N>` (rotation: the rotations of the image the family implies, N = 360 / "
     "group_step; a 180-periodic family of 7 places is C14), `D<N>` where flip pairs are above chance in the same "
     "layer too, `C<M> (hue)`, `D1 (flip)`, `scale`, or `none` where the structure is at chance"),
), notes="""```sql
select layer, transform, fraction, largest_family, suggested_group from layer_summary order by layer, transform;
select layer, transform, units_in_families, units_in_families_random_basis from basis_control where transform = 'rotate';
```""")

FAMILY_MATCHES = Table(("family_matches",), """The same families in two networks (`equivar compare A B`, `equivar_core.universality`): each rotation
and hue family of model A (`model`, `model_a`) against the families of the same transform in model B at a
comparable depth. A family is summarized by its frame curve: its members' tuning curves over the
transform's stimuli, each turned back by the member's `param`, averaged; two families are compared by the
best circular-shift correlation of their frame curves (every stimulus shifted together). Both directions
are written: `compare A B` stores A's families against B under `family_matches/model=A/model_b=B/` and B's
against A under `model=B/model_b=A/`. The match is made on the synthetic stimuli, which are the same for
every network (scaled to each layer's receptive field); where both runs kept samples of the same photos, the
matched members' responses to them are correlated too, against the same null.""", _columns(
    ("model_a", TEXT, "the model whose families are matched (the same as `model`)"),
    ("model_b", TEXT, "the model they are matched in"),
    ("layer_a", TEXT, "the family's layer in A"),
    ("layer_b", TEXT, "the layer of B it is compared in: the one with the same nominal stride (the power of two "
     "nearest `layers.stride`; the nearest in relative depth among several), else the nearest in relative depth"),
    ("paired_by", TEXT, "`stride` or `depth`: how `layer_b` was chosen"),
    ("transform", TEXT, "`rotate` or `hue`"),
    ("family_a", INTEGER, "the family in A, as in `families`"),
    ("size_a", INTEGER, "its members"),
    ("family_b", INTEGER, "its best match in B (null where `layer_b` has no family of the transform)"),
    ("size_b", INTEGER, "that family's members"),
    ("similarity", FLOAT, "correlation of the two frame curves at the best circular shift, in [-1, 1]"),
    ("shift", FLOAT, "degrees by which B's frame is A's turned at that shift (the two reference units' angles "
     "differ by it), on a 5 degree grid"),
    ("mutual", BOOLEAN, "the match is one-to-one: among A's families of `layer_a`, the best match of `family_b` "
     "is `family_a`"),
    ("null_similarity", FLOAT, "the null: the best similarity of the family to B's families of `layer_b` rebuilt "
     "from random units (each member replaced by a unit of the same selectivity quintile of the layer, at the "
     "member's place), mean over `draws` rebuilds"),
    ("null_p95", FLOAT, "the 95th percentile of the same"),
    ("above_null", BOOLEAN, "`similarity` above `null_p95`"),
    ("photos", INTEGER, "the photos both runs kept samples of (`activation_samples`: the same image files and "
     "crops, read by both runs) where both sampled the same points; 0 where they share none"),
    ("photo_correlation", FLOAT, "the correlation of the members' responses to those photos at those points: "
     "each member of `family_a` beside the member of `family_b` at its place once `shift` is turned back, "
     "mean over A's members (null where `photos` is 0)"),
    ("turned_photo_correlation", FLOAT, "the control for the alignment: the same members paired turned away, each "
     "member of A beside the member of B 90 degrees further round (half the period for a family of period 90): the "
     "orthogonal edge or line, or the hue a quarter turn away. Below `photo_correlation` where the families "
     "match member to member, not only as a kind of feature"),
    ("null_photo_correlation", FLOAT, "the same for the null's rebuilds of `family_b` from random units of similar "
     "selectivity at its members' places: mean over `draws` rebuilds"),
    ("null_photo_p95", FLOAT, "the 95th percentile of the same"),
), notes="""```sql
-- how many families of each transform have a mutual match above the null in the other network
select model_a, model_b, transform, count(*) as families, count(*) filter (mutual and above_null) as matched
from family_matches group by all order by all;
-- and of those, how many respond alike to the same photos (above the null's 95th percentile)
select model_a, model_b, transform, count(*) as matched,
       count(*) filter (photo_correlation > null_photo_p95) as alike_on_photos, median(photo_correlation) as median_r
from family_matches where mutual and above_null and photos > 0 group by all order by all;
```""")

FAMILY_EMERGENCE = Table(("family_emergence",), """Families over training (`equivar emergence`): every rotation and hue family of the last checkpoint
of a training run (the models of one spec with a `step`, `models.step`) matched, as in `family_matches`, in
each earlier checkpoint: one row per family and earlier checkpoint. Stored under the last checkpoint's
model.""", _columns(
    ("layer", TEXT, "the family's layer"),
    ("transform", TEXT, "`rotate` or `hue`"),
    ("family", INTEGER, "the family of the last checkpoint, as in `families`"),
    ("size", INTEGER, "its members"),
    ("step", INTEGER, "the earlier checkpoint's training step"),
    ("checkpoint", TEXT, "that checkpoint's model name"),
    ("family_b", INTEGER, "the family's best match in the checkpoint (null: none of the transform in that layer)"),
    ("size_b", INTEGER, "that family's members"),
    ("similarity", FLOAT, "as in `family_matches`"),
    ("null_p95", FLOAT, SAME),
    ("mutual", BOOLEAN, SAME),
    ("present", BOOLEAN, "`mutual` and above the null: the family exists at this step"),
    ("first_step", INTEGER, "the first step of the unbroken run of steps up to the last checkpoint at which the "
     "family is present (the last checkpoint's step where no earlier one has it)"),
    ("appeared", TEXT, "`whole`: at `first_step` its match has at least as many members; `piecewise`: fewer (it "
     "gathered members over training); `last`: present at no earlier checkpoint"),
), notes="""```sql
select layer, transform, appeared, min(first_step) as earliest, count(distinct family) as families
from family_emergence group by all order by all;
```""")

WEIGHT_TYING = Table(("weight_tying",), """What building the families in would save (`equivar_core.tying`): per layer and transform (`rotate`
families, `hflip` pairs), the members' kernels replaced by one template acted on by the transform at each
member's place (a free gain per member, least squares), and the whole network run on the photos
(the first `tying.n_images`, 16, of `tying.images`, else of the run's own) with the tied kernels: every family of the layer at once (`scope =
layer`) and each of the `tying.max_families` largest alone (`scope = family`). Each row beside its control:
`tying.controls` sham families of as many units from outside the transform's families, at the same places,
tied the same way. Only layers made by the network's first convolution (over the image: `tied = kernel`) or
by a depthwise convolution (`tied = depthwise`: the k x k kernels; the 1 x 1 expansion feeding them stays
free) are tied; other layers have no rows.""", _columns(
    ("layer", TEXT, "as in `families`"),
    ("transform", TEXT, "`rotate` or `hflip`"),
    ("scope", TEXT, "`layer`: every family of the layer and transform tied at once; `family`: one family alone"),
    ("family", INTEGER, "the family, as in `families` (null for `scope = layer`)"),
    ("tied", TEXT, "`kernel` (the first convolution's C x k x k kernels) or `depthwise` (the k x k kernels)"),
    ("weights", INTEGER, "weights of the convolution that makes the layer's units"),
    ("size", INTEGER, "units tied"),
    ("saved", INTEGER, "weights the tying saves: every tied kernel but one template per family, less one gain per "
     "unit"),
    ("saved_share", FLOAT, "`saved / weights`"),
    ("weight_change", FLOAT, "`|K' - K| / |K|` over the tied kernels: how far the members' kernels are from "
     "exact copies"),
    ("unit_change", FLOAT, "`|a' - a| / |a|` of the tied units' own responses (the layer's tensor, every photo and "
     "place): what the tie does where it acts, whatever reads the units downstream"),
    ("images", INTEGER, "photos the network ran on"),
    ("labelled", INTEGER, "of them with an ImageNet class (file name or folder, `equivar_core.labels`)"),
    ("top1_untied", FLOAT, "top-1 of the network as it is, on the labelled photos (null without any)"),
    ("top1_tied", FLOAT, "top-1 with the kernels tied"),
    ("top1_change", FLOAT, "`100 * (top1_tied - top1_untied)`: points of top-1 the tying costs (negative: lost)"),
    ("agreement", FLOAT, "share of the photos whose top class is the untied network's (null for a network "
     "without class scores)"),
    ("output_change", FLOAT, "`|f_tied - f| / |f|` of the network's output (logits, or its output map) over "
     "every photo"),
    ("control_weight_change", FLOAT, "the same five for the sham families, mean over `tying.controls` draws "
     "(null without controls)"),
    ("control_unit_change", FLOAT, SAME),
    ("control_top1_change", FLOAT, SAME),
    ("control_agreement", FLOAT, SAME),
    ("control_output_change", FLOAT, SAME),
), notes="""```sql
-- what tying each layer's families costs, beside tying as many unrelated units
select layer, transform, size, round(100 * saved_share, 1) as saved_pct, unit_change, control_unit_change,
       top1_change, control_top1_change, agreement, control_agreement
from weight_tying where scope = 'layer' order by layer, transform;
```""")

LEARNED_CONTROL = Table(("learned_control",), """A view of the catalog (no files of its own): each trained model beside its
untrained control (`equivar run --model untrained:NAME`, README "The
untrained control"), per layer and transform. The control of a model is any
model of the folder whose `spec` is `untrained:` + its spec (any
`@seed=N`): every model of a built-in architecture (checkpoints with
`--weights` too) is paired with every untrained control of that
architecture. Rows are the (layer, transform) pairs both have in
`layer_summary`; a model without an untrained control in the folder has no
rows. The catalog file and `equivar sql` define it from the same SQL
(`equivar_core/learned_control.py`).""", _columns(
    ("model", TEXT, "the trained model and its untrained control"),
    ("untrained_model", TEXT, SAME),
    ("layer", TEXT, "as in `layer_summary`"),
    ("transform", TEXT, SAME),
    ("units", INTEGER, SAME),
    ("units_in_families", INTEGER, "units in families of the transform, trained and untrained"),
    ("units_in_families_untrained", INTEGER, SAME),
    ("units_ratio", FLOAT, "units_in_families_untrained / units_in_families (null when the trained layer has none)"),
    ("families", INTEGER, "how many families"),
    ("families_untrained", INTEGER, SAME),
    ("largest_family", INTEGER, "members of the largest family"),
    ("largest_family_untrained", INTEGER, SAME),
    ("rotation_pass_rate", FLOAT, "`family_sweeps` (the rotated, or hue-rotated, dataset-example test): share of "
     "(driver, member) pairs, `role = 'member'`, that `passed` (their `error` within the run's "
     "`rotation_test.tolerance`, 15 degrees by default), read at their `angle = 0` row; the drivers' own `self` rows "
     "are left out; null where the layer's families of this transform were not swept (none, or `scale` and `hflip`)"),
    ("rotation_pass_rate_untrained", FLOAT, SAME),
    ("control_pass_rate", FLOAT, "the same for the `control` rows (matched units outside the families)"),
    ("control_pass_rate_untrained", FLOAT, SAME),
    ("chance", FLOAT, "mean `chance` over the member pairs: the pass rate of peaks at random angles"),
    ("chance_untrained", FLOAT, SAME),
    model=False,
), notes="""```sql
-- the untrained network's share of the rotation-family units, per layer
select layer, units_in_families, units_in_families_untrained, units_ratio,
       rotation_pass_rate, rotation_pass_rate_untrained, chance
from learned_control where model = 'efficientnet_lite0' and transform = 'rotate' order by layer;
```""", view=True)

CURVE_DETECTORS = Table(("curve_detectors",), """Units whose strongest response to any stimulus is to a curve and whose best curve beats their best
edge and line (`equivar_core/curves.py`, after Cammarata et al., "Curve Detectors", Distill 2020).""", _columns(
    _LAYER, _UNIT,
    ("orientation", FLOAT, "preferred orientation of the curve (degrees; the direction the arc is convex towards), "
     "at the 5 degree steps of `curve_grid`"),
    ("radius", FLOAT, "preferred radius (pixels) at that orientation, and 1 / radius"),
    ("curvature", FLOAT, SAME),
    ("width", FLOAT, "full width at half maximum of the radial orientation tuning (max over radius), degrees"),
    ("radius_selectivity", FLOAT, "range of the responses over radii at the preferred orientation / range of the "
     "orientation curve, in [0, 1]"),
    ("curve_response", FLOAT, "best curve response and best edge or line response (natural-image standard "
     "deviations)"),
    ("straight_response", FLOAT, SAME),
    ("family", INTEGER, "the unit's rotation family and place in it (-1 / null if none)"),
    ("family_param", FLOAT, SAME),
), notes="""`family_sweeps` runs the rotated dataset-example test on each layer's two largest rotation families at least
half of whose members are curve detectors, at 5 degree steps (`step` column), besides each layer's largest families at 10.""")

#: every declaration, in the order of docs/tables.md
DECLARATIONS = (MODELS, LAYERS, IMAGES, UNIT_STATS, UNIT_CLASSES, SAMPLES, TUNING, TUNING_RANDOM_BASIS, UNIT_PROFILES,
                TRANSFORM_PAIRS, SCALE_PAIRS, TRANSFORM_MAPS, FAMILIES, FAMILY_SWEEPS, CIRCUIT_WEIGHTS,
                CIRCUIT_FAMILIES, REFERENCE_FAMILIES, BASIS_CONTROL, FAMILY_STABILITY, SENSITIVITY, LAYER_SUMMARY,
                FAMILY_MATCHES, FAMILY_EMERGENCE, WEIGHT_TYING, LEARNED_CONTROL, CURVE_DETECTORS)
#: table (or view) name -> its declaration
TABLES = {name: t for t in DECLARATIONS for name in t.names}


def _rows(table: Table) -> list[str]:
    """The column rows of a table's markdown: consecutive columns of one meaning (:data:`SAME`) share a row;
    the ``model`` column every table has is said once, above all tables."""
    groups: list[list[Column]] = []
    for c in table.columns:
        if c is MODEL:
            continue
        if c.meaning == SAME and groups:
            groups[-1].append(c)
        else:
            groups.append([c])
    rows = []
    for g in groups:
        types = g[0].type if len({c.type for c in g}) == 1 else ", ".join(c.type for c in g)
        rows.append(f"| {', '.join(c.name for c in g)} | {types} | {g[0].meaning} |")
    return rows


def render(declarations: tuple[Table, ...] = DECLARATIONS) -> str:
    """docs/tables.md: the preamble, then each table's description, columns and notes."""
    lines = ["# Tables", "",
             "Generated from the declarations in `equivar_core/tables.py` by",
             "`python -m equivar_core.tables > docs/tables.md` (`tests/test_structure.py` checks that it is current).",
             "", PREAMBLE]
    for t in declarations:
        lines += ["", f"## {', '.join(t.names)}", t.about, "", "| column | type | meaning |", "| --- | --- | --- |",
                  *_rows(t)]
        if t.notes:
            lines += ["", t.notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
