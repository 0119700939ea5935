"""The one exception users see for bad input."""


class EquivarError(ValueError):
    """Bad input: an unknown model or layer, an unreadable file, a wrong shape...

    The message is one line meant for the user; the CLI prints it and exits 2.
    """
