"""``solver_options``: one backend's options (flat), or options keyed by backend name.

A flat dict goes to whichever backend runs; the keyed form ``{"admm": {...}, "clarabel": {...}}``
lets ``backend="auto"`` (and the torch adapter) carry options for every backend it may pick. Options
are checked before any work: flat ones for the backend that will run, keyed ones for every backend
they name, used or not (each backend's ``check_options``).
"""

from __future__ import annotations

from ..errors import InvalidInputError

__all__ = ["OPTION_BACKENDS", "is_keyed", "options_for", "with_admm_defaults", "check"]

#: The backends ``solver_options`` may be keyed by.
OPTION_BACKENDS = ("admm", "clarabel", "osqp", "scs")


def is_keyed(solver_options) -> bool:
    """Whether ``solver_options`` is the form keyed by backend names."""
    return bool(solver_options) and all(key in OPTION_BACKENDS for key in solver_options)


def options_for(solver_options, backend: str) -> dict | None:
    """The options meant for ``backend`` (see the module docstring); None when there are none."""
    if solver_options is None:
        return None
    if not isinstance(solver_options, dict):
        raise InvalidInputError(f"solver_options must be a dict; got {type(solver_options).__name__}.")
    if is_keyed(solver_options):
        for key, value in solver_options.items():
            if not isinstance(value, dict):
                raise InvalidInputError(f"solver_options[{key!r}] must be a dict of {key}'s options; "
                                        f"got {type(value).__name__}.")
        return solver_options.get(backend)
    return solver_options


def with_admm_defaults(solver_options, **defaults) -> dict | None:
    """``solver_options`` with ``defaults`` added to ADMM's options (flat or keyed), never overriding."""
    options = dict(solver_options or {})
    if not is_keyed(options):
        return {**defaults, **options}
    admm_options = options.get("admm") or {}
    if isinstance(admm_options, dict):  # anything else is reported by check()
        options["admm"] = {**defaults, **admm_options}
    return options


def check(solver_options, backend: str) -> None:
    """Raise :class:`InvalidInputError` now, before any work, for options a backend would refuse."""
    from . import get

    options_for(solver_options, backend)  # the shape of solver_options
    if not solver_options:
        return
    named = solver_options if is_keyed(solver_options) else {backend: solver_options}
    for name, options in named.items():
        try:
            get(name).check_options(options)
        except InvalidInputError as error:
            keyed = ", ".join(f"{key!r}: {{...}}" for key in ("admm", "clarabel"))
            raise InvalidInputError(
                f"{error} With backend='auto' the backend depends on the program (its kind and "
                f"size); options for each can be given as {{{keyed}}}.") from None
