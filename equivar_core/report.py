"""A static HTML report of a run: family galleries, circuit diagrams, first-layer weights.

``build_report(out, model)`` reads the tables and artifacts that ``equivar run``
wrote under ``out`` and writes ``<out>/report/<model>/index.html`` with its PNG
pictures beside it (the page opens from disk, no server). Pictures follow the
paper's conventions: members ordered by their place in the family, tuning
curves as polar plots, kernels in a diverging colour map centred at zero with
red for excitation and blue for inhibition.
"""

from __future__ import annotations

import html
import logging
import os
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from .activations import TopImages  # noqa: E402
from .basis import median_spacing  # noqa: E402
from .capture import LayerGeometry, Network, canvas_size  # noqa: E402
from .featurevis import visualize  # noqa: E402
from .images import ImageView, load_view  # noqa: E402
from .errors import EquivarError  # noqa: E402
from .layout import Layout, safe_value, unescape  # noqa: E402
from .models.registry import load_model  # noqa: E402
from .storage import atomic_file, read_table  # noqa: E402
from .stimuli import render_stimulus  # noqa: E402
from .transforms import ANGULAR, PAIRED, TRANSFORMS, HFlip  # noqa: E402
from .tuning import GRIDS  # noqa: E402

log = logging.getLogger(__name__)


class RunTables:
    """The tables of one model's run, read from ``out``."""

    def __init__(self, out: str, model: str):
        self.out, self.model = out, model
        self.layout = Layout(out, model)
        self._cache: dict[str, pd.DataFrame] = {}
        self._views: dict[int, torch.Tensor | None] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._cache:
            t = read_table(self.out, name, self.model)
            self._cache[name] = t.to_pandas() if t is not None else pd.DataFrame()
        return self._cache[name]

    def calibration(self) -> list[ImageView] | None:
        """The run's views, which set an ``untrained:`` model's batch-norm statistics (other models ignore them)."""
        images = self["images"]
        return [ImageView.from_row(r) for r in images.itertuples()] if len(images) else None

    def view(self, image: int) -> torch.Tensor | None:
        """Image ``image`` of the run as the network saw it (decoded once per report)."""
        if image not in self._views:
            images = self["images"].set_index("image", drop=False)
            self._views[image] = load_view(ImageView.from_row(images.loc[image]), self.input_size)
        return self._views[image]

    def geometry(self, layer: str) -> LayerGeometry:
        r = self["layers"].set_index("layer").loc[layer]
        return LayerGeometry.from_row(r, layer)

    @property
    def input_size(self) -> int:
        return int(self["models"]["input_size"].iloc[0])


def _save(fig, path: str, laid_out: bool = False) -> str:
    """Write ``fig`` as a PNG; a figure already ``laid_out`` (tight_layout) is not measured again."""
    fig.savefig(path, dpi=90, bbox_inches=None if laid_out else "tight", facecolor="white")
    plt.close(fig)
    return path


def _label(ax, text: str, fontsize: float = 8) -> None:
    """A title above ``ax``, placed without measuring the axes (``set_title`` measures every tick label)."""
    ax.text(0.5, 1.02, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=fontsize)


def _polar_curve(ax, theta_deg: np.ndarray, r: np.ndarray) -> None:
    """A closed polar plot of ``r`` (>= 0) over ``theta_deg`` drawn on plain axes: the curve, its outer circle
    and the 0 / 90 / 180 / 270 degree spokes (a polar projection builds and measures a tick per angle)."""
    t = np.deg2rad(np.r_[theta_deg, theta_deg[:1]])
    rr = np.r_[r, r[:1]]
    top = float(np.nanmax(rr)) if np.isfinite(rr).any() else 0.0
    top = top if top > 0 else 1.0
    ring = np.linspace(0, 2 * np.pi, 97)
    ax.plot(top * np.cos(ring), top * np.sin(ring), color="0.8", lw=0.6)
    for a in (0, 90, 180, 270):
        c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
        ax.plot([0, top * c], [0, top * s], color="0.85", lw=0.5)
        ax.text(1.15 * top * c, 1.15 * top * s, str(a), ha="center", va="center", fontsize=6, color="0.4")
    ax.plot(rr * np.cos(t), rr * np.sin(t), color="tab:red")
    ax.set_xlim(-1.3 * top, 1.3 * top)
    ax.set_ylim(-1.3 * top, 1.3 * top)
    ax.set_aspect("equal")
    ax.axis("off")


def _curve_stimulus(run: RunTables, layer: str, units, transform: str) -> str:
    """The stimulus whose curves vary most across the family (the one the gallery plots)."""
    kinds = TRANSFORMS[transform].plotted_stimuli
    prof = run["unit_profiles"]
    sel = prof[(prof["layer"] == layer) & prof["unit"].isin(units) & prof["stimulus"].isin(kinds)]
    return sel.groupby("stimulus")["modulation"].mean().idxmax() if len(sel) else kinds[0]


def _best_crops(run: RunTables, layer: str, unit: int, geom: LayerGeometry, k: int = 3) -> np.ndarray | None:
    """The unit's ``k`` strongest natural images, each cropped around its peak (2 RF radii), side by side."""
    try:
        top = TopImages.load(run.layout.top_images(layer))
    except (OSError, KeyError, ValueError):
        return None
    half = int(min(max(8, 2 * geom.rf_radius), run.input_size // 2))
    crops = []
    for n, position in top.best(unit, k):
        img = run.view(int(n))
        if img is None:
            continue
        py, px = divmod(position, geom.width)
        cy, cx = (py + 0.5) * geom.stride, (px + 0.5) * geom.stride
        y0 = int(np.clip(cy - half, 0, run.input_size - 2 * half))
        x0 = int(np.clip(cx - half, 0, run.input_size - 2 * half))
        crops.append(img[:, y0:y0 + 2 * half, x0:x0 + 2 * half].permute(1, 2, 0).numpy())
        crops.append(np.ones((2 * half, max(1, half // 8), 3)))                         # a white gap
    return np.concatenate(crops[:-1], 1) if crops else None


def _top_classes(run: RunTables, layer: str, unit: int) -> str | None:
    """The classes of the unit's strongest photos (``unit_stats.top_classes``), where the photos have any."""
    stats = run["unit_stats"]
    if "top_classes" not in stats or stats.empty:
        return None
    row = stats[(stats["layer"] == layer) & (stats["unit"] == unit)]
    value = row["top_classes"].iloc[0] if len(row) else None
    return value if isinstance(value, str) and value else None


def _best_stimulus(run: RunTables, tuning: pd.DataFrame, geom: LayerGeometry) -> tuple[np.ndarray, str]:
    """The picture of the stimulus a unit responds to most (``tuning``: the unit's rows) and its label."""
    # the grids name both parameters; their marginals are left out
    t = tuning[~tuning["stimulus"].isin(["color_contrast", "color_contrast_hue", "curve", "grating"])]
    best = t.loc[t["response"].idxmax()]
    grid = best.stimulus in GRIDS
    kind = best.stimulus.removesuffix("_grid")
    size = canvas_size(geom, run.input_size)
    img = render_stimulus(kind, size, geom.rf_centre(size), geom.rf_radius, (best.param, best.param2 if grid else None))
    label = f"{kind} {best.param:g}" + (f"/{best.param2:.3g}" if grid else "")
    return img.permute(1, 2, 0).numpy(), label


def featurevis_images(run: RunTables, units: dict[str, list[int]], steps: int = 96, max_units: int = 32
                      ) -> dict[tuple[str, int], str]:
    """Feature visualizations of ``units`` (layer -> units), cached as PNGs under the run's artifacts."""
    m = run["models"].iloc[0]
    sha = str(m.weights_sha256)[:12]
    os.makedirs(run.layout.featurevis, exist_ok=True)
    model = None
    out = {}
    todo = [(layer, int(u)) for layer, us in units.items() for u in us][:max_units]
    for layer, u in todo:
        path = run.layout.featurevis_image(layer, u, sha, steps)
        if not os.path.exists(path):
            if model is None:
                model = load_model(m.spec, None if m.weights == "built-in" else m.weights, str(m.model),
                                   calibration=run.calibration()).module
            img, _ = visualize(Network(model, run.input_size), run.geometry(layer), u, steps=steps)
            with atomic_file(path) as tmp:
                Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG")
        out[(layer, u)] = path
    return out


def family_gallery(run: RunTables, layer: str, family: pd.DataFrame, path: str,
                   featurevis: dict[tuple[str, int], str] | None = None) -> str:
    """One row per member (ordered by param): polar tuning curve, best photo crop, best stimulus
    (and its feature visualization when given)."""
    family = family.sort_values("param")
    transform = family["transform"].iloc[0]
    units = family["unit"].to_numpy(int)
    geom = run.geometry(layer)
    stim = _curve_stimulus(run, layer, units, transform) if TRANSFORMS[transform].angular else None
    featurevis = featurevis or {}
    ncol = 4 if any((layer, int(u)) in featurevis for u in units) else 3
    fig = plt.figure(figsize=(2.2 * ncol + 2.0, 2.4 * len(units)))
    gs = fig.add_gridspec(len(units), ncol, width_ratios=[1, 2.2, 1, 1][:ncol])
    tun = run["tuning"]
    tun = tun[(tun["layer"] == layer) & tun["unit"].isin(units)]
    for i, (u, p) in enumerate(zip(units, family["param"])):
        mine = tun[tun["unit"] == u]
        if stim is not None:
            ax = fig.add_subplot(gs[i, 0])
            c = mine[mine["stimulus"] == stim].sort_values("param")
            r = c["response"].to_numpy()
            _polar_curve(ax, c["param"].to_numpy(), r - np.nanmin(r) if len(r) else r)
            _label(ax, f"unit {u} @ {p:g}  ({stim})")
        else:
            ax = fig.add_subplot(gs[i, 0])
            ax.axis("off")
            ax.text(0.5, 0.5, f"unit {u}\nparam {p:g}", ha="center", va="center")
        crop = _best_crops(run, layer, u, geom)
        ax = fig.add_subplot(gs[i, 1])
        ax.axis("off")
        if crop is not None:
            ax.imshow(crop)
            seen = _top_classes(run, layer, u)
            _label(ax, "strongest photos" + (f": {seen}" if seen else ""), fontsize=8)
        ax = fig.add_subplot(gs[i, 2])
        ax.axis("off")
        if len(mine):                       # a late layer has no tuning (``layers.tuned``)
            img, label = _best_stimulus(run, mine, geom)
            ax.imshow(np.clip(img, 0, 1))
            _label(ax, label, fontsize=8)
        if (layer, int(u)) in featurevis:
            from PIL import Image

            ax = fig.add_subplot(gs[i, 3])
            ax.axis("off")
            ax.imshow(np.asarray(Image.open(featurevis[(layer, int(u))])))
            _label(ax, "feature visualization", fontsize=8)
    # fixed margins (inches) instead of tight_layout, which measures every tick label of every axis
    height, width = fig.get_size_inches()[::-1]
    fig.subplots_adjust(left=0.45 / width, right=1 - 0.1 / width, bottom=0.3 / height, top=1 - 0.45 / height,
                        hspace=0.5, wspace=0.12)
    return _save(fig, path, laid_out=True)


def kernel_mosaic(tiles: np.ndarray, gap: int = 1, fill: float = np.nan) -> np.ndarray:
    """Kernels ``tiles`` (rows x cols x k x k, optionally x channels) as one (rows (k + gap) - gap) x
    (cols (k + gap) - gap) [x channels] image, row-major as given, with ``gap`` pixels of ``fill`` between
    neighbours."""
    rows, cols, k = tiles.shape[:3]
    padded = np.full((rows, cols, k + gap, k + gap, *tiles.shape[4:]), fill, dtype=float)
    padded[:, :, :k, :k] = tiles
    image = padded.swapaxes(1, 2).reshape(rows * (k + gap), cols * (k + gap), *tiles.shape[4:])
    return image[:rows * (k + gap) - gap, :cols * (k + gap) - gap]


def tile_centres(n: int, k: int, gap: int = 1) -> np.ndarray:
    """Pixel coordinates of the centres of ``n`` tiles of side ``k`` along one axis of a :func:`kernel_mosaic`."""
    return np.arange(n) * (k + gap) + (k - 1) / 2


def circuit_figure(run: RunTables, rows: pd.DataFrame, path: str) -> str | None:
    """Kernels W(a -> b) of a family pair on a grid ordered by param, and weight versus relative place."""
    r0 = rows.iloc[0]
    wpath = run.layout.circuit_weights(r0.src_layer, r0.dst_layer)
    if not os.path.exists(wpath):
        return None
    with np.load(wpath) as z:                                    # rows: the computed destination units
        w, row = z["weights"], {int(u): i for i, u in enumerate(z["dst_units"])}
    fam = run["families"]
    src = fam[(fam["layer"] == r0.src_layer) & (fam["family"] == r0.src_family)].sort_values("param")
    if r0.dst_family >= 0:
        dst = fam[(fam["layer"] == r0.dst_layer) & (fam["family"] == r0.dst_family)].sort_values("param")
        dst_units, dst_labels = dst["unit"].to_numpy(int), [f"{p:g}" for p in dst["param"]]
    else:
        dst_units, dst_labels = np.array([int(r0.dst_unit)]), ["invariant"]
    src_units = src["unit"].to_numpy(int)
    grid = w[np.ix_([row[int(u)] for u in dst_units], src_units)]   # dst x src x k x k
    vmax = float(np.abs(grid).max()) or 1.0
    width, height = 1.2 * len(dst_units) + 3.5, 1.2 * len(src_units) + 0.9
    fig = plt.figure(figsize=(width, height))
    # the kernels as one image (a grid of tiles, white between them) on one axes: an axes per kernel costs
    # a tenth of a second each to draw; fixed margins (inches) for the labels, so nothing is measured
    ax = fig.add_axes([0.9 / width, 0.1 / height, 1 - 4.1 / width, 1 - 0.6 / height])
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    tiles = np.transpose(grid, (1, 0, 2, 3))                                 # src x dst x k x k
    k = tiles.shape[-1]
    ax.imshow(kernel_mosaic(tiles), cmap=cmap, vmin=-vmax, vmax=vmax)
    ax.xaxis.tick_top()
    ax.set_xticks(tile_centres(len(dst_units), k),
                  [f"{r0.dst_layer}:{b}\n{dst_labels[j]}" for j, b in enumerate(dst_units)], fontsize=7)
    ax.set_yticks(tile_centres(len(src_units), k),
                  [f"{r0.src_layer}:{a}\n{src['param'].iloc[i]:g}" for i, a in enumerate(src_units)], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    prof = rows.sort_values("delta")
    left = 1 - 2.6 / width
    ax = fig.add_axes([left, 0.2, 0.97 - left, 0.55])
    ax.plot(prof["delta"], prof["mean_weight"], "o-", color="k")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("relative place", fontsize=7)
    ax.set_title(f"equivariance {r0.equivariance:.2f}", fontsize=8)
    ax.tick_params(labelsize=6)
    return _save(fig, path, laid_out=True)


def first_layer_weights(run: RunTables, path: str) -> str | None:
    """The model's first convolution on RGB as an image grid, family members together, ordered by param."""
    m = run["models"].iloc[0]
    try:
        model = load_model(m.spec, None if m.weights == "built-in" else m.weights, str(m.model),
                           calibration=run.calibration())
    except Exception as exc:  # the report still renders without this picture
        log.warning("first-layer weights skipped: %s", exc)
        return None
    conv = next((mod for mod in model.module.modules() if isinstance(mod, torch.nn.Conv2d) and mod.in_channels == 3),
                None)
    if conv is None:
        return None
    w = conv.weight.detach().cpu().numpy()
    order = list(range(w.shape[0]))
    layers = run["layers"]
    if len(layers) and int(layers["n_units"].iloc[0]) == w.shape[0]:
        fam = run["families"]
        fam = fam[fam["layer"] == layers["layer"].iloc[0]]
        rank = {name: i for i, name in enumerate(ANGULAR + PAIRED)}
        fam = fam.assign(r=fam["transform"].map(rank)).sort_values(["r", "family", "param"])
        first = list(dict.fromkeys(fam["unit"].astype(int)))
        order = first + [u for u in order if u not in first]
    cols = 8
    rows = int(np.ceil(len(order) / cols))
    k = w.shape[-1]
    tiles = np.ones((rows * cols, k, k, 3))                    # white where the grid has no filter
    for i, u in enumerate(order):
        f = w[u].transpose(1, 2, 0)
        tiles[i] = (f - f.min()) / (f.max() - f.min() + 1e-12)
    fig = plt.figure(figsize=(cols * 0.9, rows * 0.95))
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.9])                  # one image: an axes per filter is slow to draw
    ax.imshow(kernel_mosaic(tiles.reshape(rows, cols, k, k, 3), fill=1.0), interpolation="nearest")
    ax.axis("off")
    x, top = tile_centres(cols, k), tile_centres(rows, k) - (k - 1) / 2
    for i, u in enumerate(order):
        ax.text(x[i % cols], top[i // cols] - 0.6, str(u), ha="center", va="bottom", fontsize=7)
    return _save(fig, path)


def _ranked_circuits(circuit_families: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """The rows of each circuit (a source family into a destination family or unit), most equivariant first."""
    keys = ["src_layer", "src_family", "dst_layer", "dst_family", "dst_unit", "transform"]
    return sorted(circuit_families.groupby(keys, dropna=False),
                  key=lambda kv: -np.nan_to_num(kv[1]["equivariance"].iloc[0], nan=-2.0))


def _family_summary(g: pd.DataFrame) -> str:
    transform = g["transform"].iloc[0]
    size = len(g)
    line = f"{transform}, {size} units, mean fit {g['fit'].mean():.2f}"
    if TRANSFORMS[transform].angular:
        period = float(g["period"].iloc[0])
        agreement = g["agreement"].mean()
        line += f", period {period:g}, spacing ~{median_spacing(g['param'], period):.0f} deg, " \
                f"{g['places'].iloc[0]:.0f} places, holes {g['holes'].iloc[0]:.0f}"
        if np.isfinite(agreement):
            line += f", partner agreement {agreement:.2f}"
        if isinstance(g["relation"].iloc[0], str):
            kind = {"frequency": "at another spatial frequency", "fragment": "a fragment of one family"}
            relation = g['relation'].iloc[0]
            line += f"; with family {int(g['sibling'].iloc[0])}: {kind.get(relation, relation)}"
    return line


def _src(path: str) -> str:
    """A picture's file name as a link from index.html: URL-quoted, since escaped names hold ``%XX``
    (a layer ``a/b`` is ``family_a%2Fb_0.png`` on disk, which a browser would read as ``a/b``)."""
    return quote(os.path.basename(path))


def build_report(out: str, model: str | None = None, featurevis: bool = False, featurevis_steps: int = 96,
                 max_families: int = 3, max_circuits: int = 10) -> str:
    """Write the report of ``model`` (default: the only or first model in ``out``); returns index.html's path.

    Each layer shows its ``max_families`` largest families (rotation and hue first; the rest are listed),
    and the ``max_circuits`` most equivariant family pairs get a diagram. With ``featurevis``, family
    members (at most 32) also get a feature visualization, cached.
    """
    model = _report_model(out, model)
    run = RunTables(out, model)
    if run["models"].empty:
        raise FileNotFoundError(f"no results for model {model} under {out}")
    os.makedirs(run.layout.report, exist_ok=True)
    parts = [f"<h1>equivar report: {html.escape(model)}</h1>",
             f"<p>spec <code>{html.escape(str(run['models']['spec'].iloc[0]))}</code>, "
             f"{int(run['models']['n_params'].iloc[0]):,} parameters, layers "
             f"{', '.join(run['layers']['layer'])}.</p>"]
    parts += _what_to_build_in(run)
    pictures: list[str] = []
    flw = first_layer_weights(run, run.layout.first_layer_picture)
    if flw:
        pictures.append(flw)
        parts.append("<h2>First-layer weights</h2><p>Family members first, ordered by their place.</p>"
                     f"<img src='{_src(flw)}'>")
    fam = run["families"]
    fv = {}
    if featurevis and len(fam):
        members = {layer: sorted(set(g["unit"].astype(int))) for layer, g in fam.groupby("layer")}
        fv = featurevis_images(run, members, featurevis_steps)
    for layer in run["layers"]["layer"]:
        parts += _layer_section(run, layer, fv, max_families, pictures)
    parts += _circuit_section(run, max_circuits, pictures)
    parts += _mirror_section(run, 4, pictures)
    parts += _tying_section(run)
    parts += _across_models_section(run, max_families, pictures)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>equivar: "
            f"{html.escape(model)}</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}"
            "img{max-width:100%;border:1px solid #ddd}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    index = run.layout.report_index
    with atomic_file(index) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    log.info("report: %s (%d pictures)", index, len(pictures))
    return index


def _report_model(out: str, model: str | None) -> str:
    """``model``, checked, or the first model folder of the models table under ``out``."""
    models_dir = os.path.join(out, "models")
    if model is None:
        # the model folders of the models table (a stray file or folder beside them is no model)
        found = os.listdir(models_dir) if os.path.isdir(models_dir) else []
        names = sorted(unescape(d.split("=", 1)[1]) for d in found
                       if d.startswith("model=") and os.path.isdir(os.path.join(models_dir, d)))
        if not names:
            raise FileNotFoundError(f"no results under {out}: run `equivar run` first")
        model = names[0]
    try:
        safe_value(model)
    except ValueError as exc:
        raise EquivarError(f"bad --model: {exc}") from None
    return model


def _what_to_build_in(run: RunTables) -> list[str]:
    """The layer summary beside the basis control (nothing without a summary)."""
    summary = run["layer_summary"]
    if not len(summary):
        return []
    table = summary.merge(run["basis_control"][["layer", "transform", "units_in_families_random_basis"]],
                          on=["layer", "transform"], how="left")
    table = table[table["units_in_families"] > 0]
    cols = ["layer", "transform", "units", "units_in_families", "units_in_families_random_basis", "families",
            "largest_family", "median_spacing", "period", "suggested_group"]
    return ["<h2>What to build in</h2><p>Per layer and transform: units in families in the layer's own "
            "basis and in a random orthogonal basis of it (the basis control), and the symmetry group the "
            "families suggest (<code>none</code> where a random basis does half as well).</p>"
            + (table[cols].to_html(index=False, float_format=lambda x: f"{x:.0f}", na_rep="")
               if len(table) else "<p>No families in any layer.</p>")]


def _layer_section(run: RunTables, layer: str, fv: dict, max_families: int, pictures: list[str]) -> list[str]:
    """One layer's ``max_families`` largest families with their galleries (paths added to ``pictures``)."""
    parts = [f"<h2>Layer {html.escape(layer)}</h2>"]
    fam = run["families"]
    lf = fam[fam["layer"] == layer] if len(fam) else fam
    if lf.empty:
        return parts + ["<p>No families.</p>"]
    ranked = lf.groupby("family").agg(size=("unit", "size"), fit=("fit", "mean"), angular=(
        "transform", lambda t: TRANSFORMS[t.iloc[0]].angular)).sort_values(["angular", "size", "fit"],
                                                                          ascending=False)
    for f in ranked.index[:max_families]:
        g = lf[lf["family"] == f]
        png = family_gallery(run, layer, g, run.layout.family_picture(layer, f), fv)
        pictures.append(png)
        parts.append(f"<h3>Family {f}</h3><p>{html.escape(_family_summary(g))}</p>"
                     f"<img src='{_src(png)}'>")
    if len(ranked) > max_families:
        rest = ", ".join(f"{f} ({int(r.size)} {lf.loc[lf['family'] == f, 'transform'].iloc[0]})"
                         for f, r in ranked.iloc[max_families:].iterrows())
        parts.append(f"<p>{len(ranked) - max_families} more families, in the <code>families</code> table: "
                     f"{html.escape(rest)}.</p>")
    return parts


def _circuit_section(run: RunTables, max_circuits: int, pictures: list[str]) -> list[str]:
    """Diagrams of the ``max_circuits`` most equivariant circuits (paths added to ``pictures``)."""
    cf = run["circuit_families"]
    if len(cf):
        # every family pair; invariant targets only where the circuit is clearly equivariant
        cf = cf[(cf["dst_family"] >= 0) | (cf["equivariance"] >= 0.5)]
    if not len(cf):
        return []
    parts = ["<h2>Circuits</h2><p>Rows: source members, columns: destination members, both ordered by "
             "place; red excites, blue inhibits.</p>"]
    for i, (key, rows) in enumerate(_ranked_circuits(cf)[:max_circuits]):
        png = circuit_figure(run, rows, run.layout.circuit_picture(i))
        if png:
            pictures.append(png)
            rank_one = rows["kernel_rank_one"].iloc[0] if "kernel_rank_one" in rows else np.nan
            note = (" (every kernel into a unit is its own depthwise kernel times a number: the weights' sizes "
                    "carry the circuit, not their shapes)" if rank_one > 0.99 else "")
            parts.append(f"<h3>{html.escape(' / '.join(str(k) for k in key))}{note}</h3>"
                         f"<img src='{_src(png)}'>")
    return parts


def _tying_section(run: RunTables) -> list[str]:
    """What tying each layer's families would cost and save, beside the sham families (``weight_tying``)."""
    t = run["weight_tying"]
    if not len(t):
        return []
    t = t[t["scope"] == "layer"].assign(saved_pct=lambda d: 100 * d["saved_share"])
    cols = ["layer", "transform", "tied", "size", "saved_pct", "weight_change", "control_weight_change",
            "top1_change", "control_top1_change", "agreement", "control_agreement", "output_change",
            "control_output_change"]
    return ["<h2>What building the families in would cost</h2><p>Per layer and transform, every family's "
            "kernels tied to one template turned to each member's place (<code>weight_tying</code>), beside "
            "as many unrelated units tied the same way (control). Top-1 in points, on the labelled photos "
            "(empty without labels); agreement: photos whose top class stays.</p>"
            + t[cols].to_html(index=False, float_format=lambda x: f"{x:.3g}", na_rep="")]


def _frame_side(axes: list, run: RunTables, layer: str, family: pd.DataFrame, title: str) -> None:
    """One family's members (one per pair of ``axes``, evenly over its places): polar curve, best crops."""
    family = family.sort_values("param")
    pick = np.unique(np.linspace(0, len(family) - 1, min(len(axes), len(family))).round().astype(int))
    units = family["unit"].to_numpy(int)
    stim = _curve_stimulus(run, layer, units, family["transform"].iloc[0])
    tun = run["tuning"]
    tun = tun[(tun["layer"] == layer) & (tun["stimulus"] == stim)]
    geom = run.geometry(layer)
    for (polar, photos), k in zip(axes, pick):
        u, p = int(units[k]), float(family["param"].iloc[k])
        c = tun[tun["unit"] == u].sort_values("param")
        r = c["response"].to_numpy()
        _polar_curve(polar, c["param"].to_numpy(), r - np.nanmin(r) if len(r) else r)
        _label(polar, (f"{title}\n" if k == pick[0] else "") + f"unit {u} @ {p:g}", fontsize=7)
        crop = _best_crops(run, layer, u, geom, k=2)
        if crop is not None:
            photos.imshow(crop)
    for polar, photos in axes:
        photos.axis("off")
        if not polar.lines:
            polar.axis("off")


def match_figure(run_a: RunTables, run_b: RunTables, match: pd.Series, path: str, shown: int = 4) -> str:
    """A family of A beside its match in B: members' polar tuning curves and strongest photos, side by side."""
    fa, fb = run_a["families"], run_b["families"]
    a = fa[(fa["layer"] == match["layer_a"]) & (fa["family"] == match["family_a"])]
    b = fb[(fb["layer"] == match["layer_b"]) & (fb["family"] == match["family_b"])]
    rows = max(min(shown, len(a)), min(shown, len(b)))
    fig = plt.figure(figsize=(9.0, 2.0 * rows + 0.4))
    gs = fig.add_gridspec(rows, 4, width_ratios=[1, 1.5, 1, 1.5])
    for col, (run, side, key) in enumerate(((run_a, a, "a"), (run_b, b, "b"))):
        axes = [(fig.add_subplot(gs[i, 2 * col]), fig.add_subplot(gs[i, 2 * col + 1])) for i in range(rows)]
        _frame_side(axes, run, match[f"layer_{key}"], side,
                    f"{run.model} {match[f'layer_{key}']} #{int(match[f'family_{key}'])}")
    fig.subplots_adjust(left=0.03, right=0.98, bottom=0.04, top=1 - 0.5 / (2.0 * rows + 0.4), hspace=0.6,
                        wspace=0.1)
    return _save(fig, path, laid_out=True)


def mirror_figure(run: RunTables, layer: str, pairs: pd.DataFrame, path: str) -> str:
    """Flip pairs of one layer (``families`` rows of ``hflip`` pairs), one row each: each side's strongest
    photos (cropped around the peak) with the classes they show."""
    geom = run.geometry(layer)
    ids = list(dict.fromkeys(pairs["family"]))
    fig = plt.figure(figsize=(9.0, 1.9 * len(ids) + 0.2))
    gs = fig.add_gridspec(len(ids), 2)
    for i, f in enumerate(ids):
        members = pairs[pairs["family"] == f].sort_values("param")
        for side, (_, m) in enumerate(members.head(2).iterrows()):
            ax = fig.add_subplot(gs[i, side])
            ax.axis("off")
            u = int(m["unit"])
            crop = _best_crops(run, layer, u, geom, k=3)
            if crop is not None:
                ax.imshow(crop)
            seen = _top_classes(run, layer, u)
            drive = _flip_drive(run, layer, u)
            _label(ax, f"pair {int(f)}, unit {u}" + (f": {seen}" if seen else "")
                   + (f"\nits photos mirrored drive the partner at {drive:.2f}" if drive is not None else ""),
                   fontsize=7)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.35 / (1.9 * len(ids) + 0.2), hspace=0.45,
                        wspace=0.05)
    return _save(fig, path, laid_out=True)


def _flip_drive(run: RunTables, layer: str, unit: int) -> float | None:
    """The flip test's ``drive`` of ``unit``'s pair (``family_sweeps``): its partner's response to the unit's
    mirrored photos over the unit's own response to them as they are; None where the pair was not tested."""
    sw = run["family_sweeps"]
    if sw.empty:
        return None
    rows = sw[(sw["transform"] == HFlip.name) & (sw["layer"] == layer) & (sw["role"] == "member")
              & (sw["driver"] == unit)]
    return float(rows["drive"].iloc[0]) if len(rows) and np.isfinite(rows["drive"].iloc[0]) else None


def _mirror_section(run: RunTables, max_pairs: int, pictures: list[str]) -> list[str]:
    """Per layer, its best mirror pairs (flip pairs that rotation does not explain: the paper's left- and
    right-facing detectors), side by side with the classes of their photos (paths added to ``pictures``)."""
    fam = run["families"]
    if fam.empty or "relation" not in fam:
        return []
    mirror = fam[(fam["transform"] == HFlip.name) & (fam["relation"] == "mirror")]
    if mirror.empty:
        return []
    parts = ["<h2>Mirror pairs</h2><p>Per layer, its flip pairs that rotation does not explain, best transform "
             "score first: each member's strongest photos, with the ImageNet classes they show where the photos "
             "have classes (<code>unit_classes</code>), and the paper's flip test where it ran "
             "(<code>family_sweeps</code>, <code>hflip</code>): the partner's response to the member's photos "
             "mirrored about its receptive-field centre, over the member's own response to them as they are "
             "(1: as strong; the controls' are in the table).</p>"]
    for layer, g in mirror.groupby("layer", sort=False):
        best = g.groupby("family")["fit"].mean().sort_values(ascending=False).head(max_pairs).index
        png = mirror_figure(run, str(layer), g[g["family"].isin(best)].set_index("family", drop=False)
                            .loc[list(best)].reset_index(drop=True), run.layout.mirror_picture(str(layer)))
        pictures.append(png)
        parts.append(f"<h3>{html.escape(str(layer))}: {g['family'].nunique()} mirror pairs</h3>"
                     f"<img src='{_src(png)}'>")
    return parts


def _across_models_section(run: RunTables, max_matches: int, pictures: list[str]) -> list[str]:
    """The model's best family matches in each other model (``family_matches``: mutual, above the null),
    side by side (paths added to ``pictures``)."""
    matches = run["family_matches"]
    if not len(matches):
        return []
    parts = ["<h2>Across models</h2><p>Families of this model and their mutual matches above the null in "
             "other networks (<code>equivar compare</code>): each side's members, evenly over the family, with "
             "their tuning curves and strongest photos.</p>"]
    for other, rows in matches.groupby("model_b"):
        kept = rows[rows["mutual"] & rows["above_null"]].sort_values(["similarity", "size_a"], ascending=False)
        counts = rows.groupby("transform").agg(families=("family_a", "size"), matched=(
            "above_null", lambda x: int((x & rows.loc[x.index, "mutual"]).sum())))
        parts.append(f"<h3>In {html.escape(str(other))}</h3>"
                     + counts.reset_index().to_html(index=False))
        run_b = RunTables(run.out, str(other))
        if run_b["families"].empty:
            continue
        for i, (_, m) in enumerate(kept.head(max_matches).iterrows()):
            png = match_figure(run, run_b, m, run.layout.match_picture(str(other), i))
            pictures.append(png)
            parts.append(f"<p>{html.escape(m['transform'])} family {int(m['family_a'])} of {html.escape(m['layer_a'])}"
                         f" and family {int(m['family_b'])} of {html.escape(str(other))} {html.escape(m['layer_b'])}: "
                         f"similarity {m['similarity']:.2f} (null 95th percentile {m['null_p95']:.2f})"
                         + (f"; on the {int(m['photos'])} photos both runs kept, the members' responses correlate "
                            f"at {m['photo_correlation']:.2f} (paired turned away: "
                            f"{m['turned_photo_correlation']:.2f}; null 95th percentile {m['null_photo_p95']:.2f})"
                            if m["photos"] > 0 else "") + "</p>"
                         f"<img src='{_src(png)}'>")
    return parts
