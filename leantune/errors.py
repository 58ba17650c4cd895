"""One exception type for problems the user can fix; the CLI prints it as one line and exits 2."""


class LeantuneError(Exception):
    """A user-facing error: bad path, unsupported model, corrupt config, bad argument.

    The message must name the problem and say what to do; the CLI prints it without a traceback.
    """
