"""Real/synthetic mixes: the `<N>r<M>s` notation, parsed in exactly one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from synthmix.errors import UserError

_MIX_PATTERN = re.compile(r"^(\d+)r(\d+)s$")


@dataclass(frozen=True, order=True)
class Mix:
    """`real` real and `synthetic` generated training images per class, e.g. 30r15s."""

    real: int
    synthetic: int

    @classmethod
    def parse(cls, text: str) -> Mix:
        match = _MIX_PATTERN.match(str(text).strip())
        if not match:
            raise UserError(
                f"Mix '{text}' is malformed. Write a mix as <N>r<M>s, N real and M synthetic training "
                "images per class, e.g. 30r15s or 0r30s."
            )
        mix = cls(int(match.group(1)), int(match.group(2)))
        if mix.real + mix.synthetic == 0:
            raise UserError(f"Mix '{text}' has no training images; use at least one real or synthetic image.")
        return mix

    @property
    def name(self) -> str:
        return f"{self.real}r{self.synthetic}s"

    def __str__(self) -> str:
        return self.name

    def check_feasible(self, train_per_class: int, synthetic_per_class: int) -> None:
        """Fail before any work when the mix asks for more images than a class has."""
        if self.real > train_per_class:
            raise UserError(
                f"Mix {self.name} asks for {self.real} real training images per class, but the split has "
                f"only {train_per_class} (data.train_per_class in params.yaml). Lower the mix's real "
                f"count to at most {train_per_class} or raise data.train_per_class."
            )
        if self.synthetic > synthetic_per_class:
            raise UserError(
                f"Mix {self.name} asks for {self.synthetic} synthetic images per class, but generation makes "
                f"only {synthetic_per_class} (generate.images_per_class in params.yaml). Lower the mix's "
                f"synthetic count or raise generate.images_per_class."
            )
