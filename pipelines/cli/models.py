"""``equivar models``: the built-in models, the registered ones, every addressable layer of a model
(``--layers``), and ``models add`` to register a model or checkpoint as a partition."""

from __future__ import annotations

import os

from equivar_core.capture import layer_geometry
from equivar_core.layer_info import inspect_layers
from equivar_core.model_index import ModelEntry, registered_trust
from equivar_core.models.registry import BUILTINS, load_model
from equivar_core.settings import default_out

from ..partitions import add_model
from ..resources import EquivarConfig
from . import _layers
from .common import _check_writable, _instance


def command(args) -> int:
    if args.action == "add":
        return _add_model(args)
    return _models(args)


def _models(args) -> int:
    if args.layers:
        return _model_layers(args.layers, args.weights)

    for arch in BUILTINS.values():
        print(f"{arch.name}\n  {arch.description}\n  default layers: {', '.join(arch.preset_layers)}")
        for preset, layers in arch.named_presets.items():
            print(f"  --layers {preset}: {', '.join(layers)}")
    print("untrained:NAME[@seed=N]\n  a built-in architecture with seeded random weights and batch-norm statistics "
          "of the run's photos (the untrained control; named untrained_NAME[_seedN])")
    print("timm:NAME\n  any timm architecture (needs timm); weights from --weights PATH or timm's local cache")
    print("package.module:callable\n  any torch.nn.Module returned by a no-argument callable")
    out = os.path.abspath(args.out or default_out())
    entries = registered_trust(out)
    if entries:
        print(f"\nregistered in {out}:")
        for e, ok in entries:
            extra = (f" weights={e.weights}" if e.weights else "") + (f" step={e.step}" if e.step is not None else "")
            if not ok:
                extra += "  (not signed by your key: refused; `equivar models add` it again if you trust it)"
            print(f"{e.name}  model={e.model}{extra}")
    return 0


def _model_layers(spec: str, weights: str | None) -> int:
    """``equivar models --layers SPEC``: one line per addressable layer."""
    model = load_model(spec, weights, untrained_ok=True)
    infos = inspect_layers(model.module, model.input_size)
    rf = {g.layer: g.rf_radius for g in layer_geometry(model.module, [i.layer for i in infos], model.input_size)}
    print(f"{'layer':<34} {'kind':<14} {'units':>5} {'map':>9} {'stride':>6} {'rf_px':>6}  privileged")
    for i in infos:
        print(f"{i.layer:<34} {i.kind[:14]:<14} {i.n_units:>5} {f'{i.height}x{i.width}':>9} {i.stride:>6g} "
              f"{rf[i.layer]:>6.1f}  {'yes' if i.privileged else 'no '} ({i.reason})")
    if model.weights_sha256 == "untrained":
        print(f"(no weights given for {spec}: receptive fields measured on an untrained network)")
    return 0


def _add_model(args) -> int:
    out = os.path.abspath(args.add_out or args.out or default_out())
    _check_writable(out)
    entry = ModelEntry(name=args.name, model=args.model, weights=args.weights, step=args.step,
                       layers=tuple(_layers(args.layers)))
    with _instance() as instance:
        entry = add_model(EquivarConfig(model=args.model, out=out), entry, instance)
    print(f"added {entry.name}: {entry.model}" + (f" with {entry.weights}" if entry.weights else "") +
          f" (materialize it with `equivar run --name {entry.name}` or from the UI)")
    return 0
