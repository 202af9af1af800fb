"""The lying-sketch attack: mask one update, sketch another.

Under secure filtering (``--secure`` with a distance rule) every client commits a masked input
``y_i`` and then an encrypted sketch ``s_i = P x_i`` of it; the server filters on the sketch
distances and verifies ``P·Σ_A x_i = Σ_A s_i`` before it releases the sum. A lying client
masks a malicious update (the rows of a base attack, e.g. ``scaling``) but sketches a
benign-looking one, hoping the filter judges the benign sketch and the sum takes the malicious
input. The verification catches it: the round fails and is never applied (a denial of service,
never poisoning).

:meth:`LyingSketchAttack.craft` returns the masked rows (the base attack's); the benign rows
the same clients sketch are in :attr:`LyingSketchAttack.last_sketched` afterwards. The runner
passes them to :func:`protocol.run_round` as ``sketched=``. The attack only exists under
secure filtering; elsewhere there is no sketch to lie about and the runner refuses it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import (
    AttackConfigError,
    AttackContext,
    ModelPoisoningAttack,
    View,
    check_choice,
    output_dtype,
    validate_context,
)

__all__ = ["SKETCH_CHOICES", "LyingSketchAttack"]

#: What a lying client sketches: the mean of the updates it sees (the honest ones when
#: omniscient, its group's own when limited), or its own honestly trained update.
SKETCH_CHOICES = ("honest_mean", "own")


class LyingSketchAttack(ModelPoisoningAttack):
    """Mask the ``base`` attack's rows, sketch a benign vector (module docstring).

    Args:
        base: registry name of the model-poisoning attack whose rows are masked
            (default ``"scaling"``).
        sketch: ``"honest_mean"`` or ``"own"`` (:data:`SKETCH_CHOICES`).
        base_params: constructor parameters of the base attack.
    """

    name: ClassVar[str] = "lying_sketch"
    #: Only meaningful where clients commit sketches: secure mode with a filtering rule.
    needs_secure_filtering: ClassVar[bool] = True

    def __init__(
        self,
        base: str = "scaling",
        sketch: str = "honest_mean",
        base_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from . import ATTACKS, make_attack  # the registry lives in the package __init__

        cls = ATTACKS.get(base) if isinstance(base, str) else None
        if (
            cls is None
            or not issubclass(cls, ModelPoisoningAttack)
            or getattr(cls, "needs_secure_filtering", False)
        ):
            valid = sorted(
                n
                for n, c in ATTACKS.items()
                if issubclass(c, ModelPoisoningAttack)
                and not getattr(c, "needs_secure_filtering", False)
            )
            raise AttackConfigError(
                f"attack 'lying_sketch': parameter 'base' must be a model-poisoning attack, "
                f"one of {valid}; got {base!r}"
            )
        self.base = base
        self.sketch = check_choice(self.name, "sketch", sketch, SKETCH_CHOICES)
        self.base_params = dict(base_params or {})
        self._base = make_attack(base, **self.base_params)
        #: The ``(f, d)`` rows the Byzantine clients sketched in the last :meth:`craft`.
        self.last_sketched: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {"base": self.base, "sketch": self.sketch, "base_params": self.base_params}

    def craft(self, ctx: AttackContext) -> np.ndarray:
        """The base attack's rows (what the Byzantine clients mask); sets
        :attr:`last_sketched` to the benign rows they sketch."""
        validate_context(ctx, self.name)
        rows = self._base.craft(ctx)
        dtype = output_dtype(ctx)
        if self.sketch == "own":
            sketched = np.array(ctx.byzantine_updates, dtype=dtype)
        else:
            limited = ctx.knowledge == "limited"
            view = View(ctx.byzantine_updates if limited else ctx.honest_updates)
            sketched = np.repeat(view.mean[None, :].astype(dtype), ctx.n_byzantine, axis=0)
        self.last_sketched = sketched
        self.last_info = {
            "base": self.base,
            "base_info": dict(self._base.last_info),
            "sketch": self.sketch,
        }
        return rows
