"""What an exception may say where others read it: a SageMaker job's FailureReason, a step's card.

A library's exception message can quote whatever it was given: a URL with a token in
it, a line of a corpus file, a request body, an environment value. FailureReason is
shown to anyone who may describe the job and a card to anyone who can open the run, so
those get only messages this project wrote (and that never put a secret in); any other
exception shows its type, and its full text stays in the log of the step or job where it
was printed. An error of ours that carries other processes' words in its message (a
`LaunchError` with the ranks' last lines) gives its own `public` text instead.
"""

from __future__ import annotations

OWN_MODULES = ("steps", "__main__")
"""Our package, and the main module: every process that shows errors this way is one of our entrypoints
(`python -m steps.dispatch.container` defines its errors in `__main__`); a library is never the main module."""


def is_own_error(error: BaseException) -> bool:
    """True for exception types defined in this project, whose messages it writes itself."""
    return type(error).__module__.split(".")[0] in OWN_MODULES


def shown_message(error: BaseException) -> str:
    """`Type: message` for an error of ours (its `public` text where it has one); the type alone otherwise."""
    kind = type(error).__name__
    if not is_own_error(error):
        return f"{kind} (its message is in the log only: library messages may quote their input)"
    text = getattr(error, "public", None) or str(error)
    return f"{kind}: {text}" if text else kind


class NotFound(FileNotFoundError):
    """A file or folder that the config names is not there. Raised with a message of ours (the field, the path,
    what to do), so cards and FailureReasons show it; the standard library's own FileNotFoundError shows its type
    only there."""
