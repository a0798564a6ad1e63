r"""Learning-rate schedules: functions ``step -> learning rate`` of the 0-based step ``t``.

.. math::

    \text{constant:}\quad        & \eta_t = \eta_0 \\
    \text{inverse\_scaling:}\quad & \eta_t = \eta_0 / (t + 1)^{p}
        \quad\text{(scikit-learn's ``'invscaling'``)} \\
    \text{step\_decay:}\quad      & \eta_t = \eta_0\,\gamma^{\lfloor t / s \rfloor} \\
    \text{cosine:}\quad           & \eta_t = \eta_T + \tfrac12(\eta_0 - \eta_T)
        \bigl(1 + \cos(\pi \min(t, T) / T)\bigr)

Build one by name with :func:`make_schedule`; optimizers accept a float (a constant rate) or
any ``Schedule``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

from dsoftmax.optim.base import Schedule
from dsoftmax.validation import finite_float, whole_number

__all__ = [
    "SCHEDULES",
    "as_schedule",
    "constant",
    "cosine",
    "inverse_scaling",
    "make_schedule",
    "step_decay",
]


def _positive_rate(name: str, value: object) -> float:
    rate = finite_float(name, value)
    if not rate > 0:
        raise ValueError(f"{name} must be > 0, got {rate!r}; pass a positive rate such as 0.1.")
    return rate


def _step(step: object) -> int:
    count = whole_number("step", step)
    if count < 0:
        raise ValueError(f"step must be >= 0 (steps count from 0), got {count}.")
    return count


def constant(lr: float) -> Schedule:
    """``η_t = lr`` for every step.

    Examples
    --------
    >>> constant(0.1)(1000)
    0.1
    """
    rate = _positive_rate("lr", lr)

    def constant_schedule(step: int) -> float:
        _step(step)
        return rate

    return constant_schedule


def inverse_scaling(lr: float, power_t: float = 0.5) -> Schedule:
    """``η_t = lr / (t + 1)^power_t``, scikit-learn's ``'invscaling'`` with ``t`` from 0.

    Examples
    --------
    >>> inverse_scaling(1.0, power_t=0.5)(3)
    0.5
    """
    rate = _positive_rate("lr", lr)
    power = finite_float("power_t", power_t)
    if power < 0:
        raise ValueError(
            f"power_t must be >= 0, got {power!r}; 0 keeps the rate constant, 0.5 is usual."
        )

    def inverse_scaling_schedule(step: int) -> float:
        return rate / (_step(step) + 1) ** power

    return inverse_scaling_schedule


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``η_t = lr · gamma^⌊t / step_size⌋``: multiply by ``gamma`` every ``step_size`` steps.

    Examples
    --------
    >>> step_decay(1.0, step_size=10, gamma=0.5)(25)
    0.25
    """
    rate = _positive_rate("lr", lr)
    period = whole_number("step_size", step_size)
    if period < 1:
        raise ValueError(f"step_size must be >= 1 (steps between decays), got {period}.")
    factor = finite_float("gamma", gamma)
    if not 0 < factor <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {factor!r}; 0.1 divides the rate by ten.")

    def step_decay_schedule(step: int) -> float:
        return rate * factor ** (_step(step) // period)

    return step_decay_schedule


def cosine(lr: float, total_steps: int, final_lr: float = 0.0) -> Schedule:
    """Cosine decay from ``lr`` at step 0 to ``final_lr`` at ``total_steps``, constant after.

    ``η_t = final_lr + ½ (lr − final_lr) (1 + cos(π min(t, T) / T))`` with ``T = total_steps``.

    Examples
    --------
    >>> schedule = cosine(1.0, total_steps=10)
    >>> schedule(0), schedule(5), schedule(10)
    (1.0, 0.5, 0.0)
    """
    rate = _positive_rate("lr", lr)
    horizon = whole_number("total_steps", total_steps)
    if horizon < 1:
        raise ValueError(f"total_steps must be >= 1 for the cosine schedule, got {horizon}.")
    final = finite_float("final_lr", final_lr)
    if not 0 <= final <= rate:
        raise ValueError(f"final_lr must be in [0, lr] = [0, {rate!r}], got {final!r}.")

    def cosine_schedule(step: int) -> float:
        progress = min(_step(step), horizon) / horizon
        return final + 0.5 * (rate - final) * (1.0 + math.cos(math.pi * progress))

    return cosine_schedule


#: Schedules by name, for configuration files and the command line.
SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "inverse_scaling": inverse_scaling,
    "step_decay": step_decay,
    "cosine": cosine,
}


def make_schedule(
    name: str, learning_rate: float, *, total_steps: int | None, **options: float
) -> Schedule:
    """Build the schedule ``name`` from :data:`SCHEDULES`.

    Parameters
    ----------
    name : str
        One of ``constant``, ``inverse_scaling``, ``step_decay``, ``cosine``.
    learning_rate : float
        The rate at step 0 (``lr`` of the schedule).
    total_steps : int or None
        Number of optimizer steps of the whole run; used by the schedules that need the horizon
        (``cosine``), which refuse None.
    **options
        The schedule's own keywords (``power_t``, ``step_size``, ``gamma``, ``final_lr``);
        any other keyword raises a TypeError that lists the accepted ones.

    Returns
    -------
    Schedule

    Examples
    --------
    >>> make_schedule("step_decay", 1.0, total_steps=100, step_size=30)(60)  # doctest: +ELLIPSIS
    0.0100...
    """
    if name not in SCHEDULES:
        raise ValueError(
            f"unknown learning-rate schedule {name!r}; choose one of {sorted(SCHEDULES)}."
        )
    factory = SCHEDULES[name]
    accepted = [param for param in inspect.signature(factory).parameters if param != "lr"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = [param for param in accepted if param != "total_steps"]
        raise TypeError(
            f"schedule {name!r} got unexpected options {unknown}; it accepts {allowed}."
        )
    if "total_steps" in accepted:
        if total_steps is None:
            raise ValueError(
                f"schedule {name!r} needs total_steps (the number of optimizer steps of the run), "
                "got None."
            )
        options = {**options, "total_steps": total_steps}
    return factory(learning_rate, **options)


def as_schedule(learning_rate: float | Schedule) -> Schedule:
    """A schedule from a float (constant rate) or a schedule itself."""
    if callable(learning_rate):
        return learning_rate
    return constant(learning_rate)
