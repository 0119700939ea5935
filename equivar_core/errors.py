"""The one exception users see for bad input."""


class EquivarError(ValueError):
    """Bad input: an unknown model or layer, an unreadable file, a wrong shape...

    The message is one line meant for the user; the CLI prints it and exits 2.
    """


def damaged_table(exc: Exception, out: str) -> EquivarError:
    """The error for a table file of ``out`` that Arrow cannot read (``exc``): its first line, and the cure."""
    return EquivarError(f"{str(exc).splitlines()[0]}: run `equivar run --out {out}` to recompute it")
