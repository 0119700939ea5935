"""What each step of a pipeline run reads and writes: the settings fields its stage reads and the files it
opens and replaces, recorded during an in-process run (``tests.conftest.traced_run``).

Settings are traced by handing each step a copy of its :class:`~equivar_core.settings.RunSettings` whose
dataclasses (the run's and every section's) record each field read by path (``families.min_invariance``);
a copy made by ``dataclasses.replace`` records only the fields its user then reads. Files are traced by
``open`` (``np.load``, ``TopImages.load``, ``StoredMoments`` and every Python-level read go through it),
``storage.read_table`` (tables an asset body reads itself) and ``os.replace`` (every file is written under a
temporary name and moved in place). Reads of the IO manager (``load_input``: the declared inputs, by
construction) are left out.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import os
import sys
from dataclasses import dataclass, field

#: the step being run: its asset keys' names, what it has read and written
_current: dict = {"step": None}


@dataclass
class Step:
    """One step of the run (an asset or a multi-asset): its assets, their declared upstream assets, and what
    it read and wrote."""

    assets: tuple[str, ...]
    upstream: frozenset[str]
    fields: set[str] = field(default_factory=set)
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)


_classes: dict = {}


def _machinery(frame) -> bool:
    """A read that copies or compares the dataclass rather than uses a value: ``dataclasses.replace`` and the
    generated ``__eq__``, ``__hash__`` and ``__repr__``."""
    code = frame.f_code
    return (code.co_filename.endswith("dataclasses.py") and code.co_name in ("replace", "_replace")) or \
        (code.co_filename == "<string>" and code.co_name.startswith("__"))


def _traced_class(cls, prefix: str):
    if (cls, prefix) not in _classes:
        names = frozenset(f.name for f in dataclasses.fields(cls))

        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            step = _current["step"]
            if step is not None and name in names and not dataclasses.is_dataclass(value) \
                    and not _machinery(sys._getframe(1)):
                step.fields.add(prefix + name)
            return value

        _classes[(cls, prefix)] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__,
                                                               "__module__": cls.__module__})
    return _classes[(cls, prefix)]


def traced(obj, prefix: str = ""):
    """A copy of the dataclass ``obj`` (and of the dataclasses in its fields) that records the fields read."""
    new = object.__new__(_traced_class(type(obj), prefix))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = traced(value, f"{prefix}{f.name}.")
        object.__setattr__(new, f.name, value)
    return new


@contextlib.contextmanager
def tracing(monkeypatch):
    """Record every step of the runs inside: yields the list of :class:`Step`, in the order they ran."""
    from equivar_core import storage
    from pipelines import assets
    from pipelines.io_manager import ParquetIOManager

    steps: list[Step] = []
    settings_of, open_, replace, read_table = assets._settings, builtins.open, os.replace, storage.read_table
    load_input, handle_output = ParquetIOManager.load_input, ParquetIOManager.handle_output

    def _settings(context, equivar, name):
        a = context.assets_def
        upstream = frozenset(k.to_user_string() for key in a.keys for k in a.asset_deps[key])
        step = Step(tuple(sorted(k.to_user_string() for k in a.keys)), upstream)
        steps.append(step)
        _current["step"] = step
        return traced(settings_of(context, equivar, name))

    def recorded(kind):
        def record(path):
            if _current["step"] is not None:
                getattr(_current["step"], kind).add(os.path.abspath(os.fspath(path)))
        return record

    read, wrote = recorded("reads"), recorded("writes")

    def traced_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            (wrote if any(c in mode for c in "wax+") else read)(file)
        return open_(file, mode, *args, **kwargs)

    def traced_replace(src, dst, *args, **kwargs):
        wrote(dst)
        return replace(src, dst, *args, **kwargs)

    def traced_read_table(root, name, model, part=None):
        read(storage.table_dir(root, name, model, part))
        return read_table(root, name, model, part)

    def outside_the_step(method):
        def call(self, context, *args):
            step, _current["step"] = _current["step"], None    # the IO manager's reads and records
            try:
                return method(self, context, *args)
            finally:
                _current["step"] = step
        return call

    monkeypatch.setattr(assets, "_settings", _settings)
    monkeypatch.setattr(builtins, "open", traced_open)
    monkeypatch.setattr(os, "replace", traced_replace)
    monkeypatch.setattr(storage, "read_table", traced_read_table)
    monkeypatch.setattr(ParquetIOManager, "load_input", outside_the_step(load_input))
    monkeypatch.setattr(ParquetIOManager, "handle_output", outside_the_step(handle_output))
    try:
        yield steps
    finally:
        _current["step"] = None
