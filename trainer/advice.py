"""Which hyperparameter moves help each diagnosis finding (TECHNIQUES.md §5, §8-9).

A move is advice on one hyperparameter of the registry ("raise dropout", "try activation
leaky_relu"), with why it helps and a range worth searching when the parameter is not
searched yet. Rendering a move against a particular study (its space, its fixed values) is
the service's business (service.analysis.remedies); nothing here knows a spec format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from trainer.detectors import EvidenceValue
from trainer.params import ParamValue

Direction = Literal["raise", "lower", "choose"]


@dataclass(frozen=True)
class Range:
    """A numeric range worth searching: [low, high], on a log scale when `log`."""

    kind: Literal["float", "int"]
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choices:
    """Values worth trying for a categorical (or discrete) parameter."""

    values: tuple[ParamValue, ...]


@dataclass(frozen=True)
class Move:
    """Move `param` in `direction` (raise, lower, or choose among `prefer`) because `why`."""

    param: str
    direction: Direction
    why: str
    # What to search when the parameter is not searched yet.
    suggest: Range | Choices
    prefer: tuple[str, ...] = ()  # for "choose": the values to try
    # Only when the trial's config has this key = one of these values (e.g. init_std only
    # matters for init=normal).
    when: tuple[str, tuple[ParamValue, ...]] | None = None


def _f(low: float, high: float, log: bool = False) -> Range:
    return Range("float", low, high, log)


def _i(low: int, high: int, log: bool = False) -> Range:
    return Range("int", low, high, log)


def _c(*choices: ParamValue) -> Choices:
    return Choices(choices)


EARLY_STOPPING = Move(
    "early_stopping_patience",
    "raise",
    "early stopping restores the best epoch",
    _i(3, 10),
)
REGULARIZE = (
    Move("dropout", "raise", "dropout regularizes", _f(0.1, 0.5)),
    Move("weight_decay", "raise", "L2 shrinks weights", _f(1e-5, 1e-2, log=True)),
    Move("l1", "raise", "L1 drives weights to zero", _f(1e-6, 1e-3, log=True)),
    EARLY_STOPPING,
    Move("input_noise", "raise", "input noise regularizes", _f(0.01, 0.3)),
    Move("hidden_units", "lower", "a smaller model has less variance", _i(16, 256, log=True)),
    Move("hidden_layers", "lower", "a smaller model has less variance", _i(1, 3)),
    Move(
        "augment",
        "choose",
        "augmentation adds data (image data only)",
        _c("none", "shift", "shift_rotate"),
        prefer=("shift", "shift_rotate"),
        when=("augment", ("none", "shift", "shift_rotate")),
    ),
)
CAPACITY = (
    Move("hidden_units", "raise", "more capacity", _i(64, 1024, log=True)),
    Move("hidden_layers", "raise", "more capacity", _i(2, 4)),
    Move("weight_decay", "lower", "less regularization", _f(1e-6, 1e-3, log=True)),
    Move("dropout", "lower", "less regularization", _f(0.0, 0.2)),
    Move("l1", "lower", "less regularization", _f(1e-7, 1e-5, log=True)),
    Move("lr", "raise", "a higher learning rate trains faster", _f(1e-3, 1e-1, log=True)),
)
STABILIZE = (
    Move("lr", "lower", "too high a learning rate diverges", _f(1e-4, 1e-1, log=True)),
    Move(
        "grad_clip",
        "choose",
        "clipping bounds each update",
        _c("none", "norm"),
        prefer=("norm",),
    ),
    Move(
        "batch_norm",
        "choose",
        "batch norm keeps activations in range",
        _c("none", "before"),
        prefer=("before", "after"),
    ),
)
INIT_AUTO = Move(
    "init",
    "choose",
    "He init for the ReLU family, Xavier for sigmoid/tanh",
    _c("auto", "he_normal", "xavier_normal"),
    prefer=("auto", "he_normal", "he_uniform", "xavier_normal", "xavier_uniform"),
)

# Per finding kind, the moves to suggest, most promising first.
MOVES: dict[str, tuple[Move, ...]] = {
    "overfit": REGULARIZE,
    "underfit": CAPACITY,
    "diverged": (
        *STABILIZE,
        Move(
            "optimizer",
            "choose",
            "adaptive step sizes tolerate a poorly scaled lr",
            _c("sgd", "momentum", "adam"),
            prefer=("adam", "adamw"),
        ),
    ),
    "exploding_gradients": (
        STABILIZE[1],
        STABILIZE[0],
        INIT_AUTO,
        Move(
            "init_std",
            "lower",
            "a large init scale explodes",
            _f(1e-3, 1e-1, log=True),
            when=("init", ("normal",)),
        ),
        STABILIZE[2],
    ),
    "vanishing_gradients": (
        INIT_AUTO,
        Move(
            "activation",
            "choose",
            "non-saturating activations keep gradients alive",
            _c("relu", "leaky_relu", "elu"),
            prefer=("relu", "leaky_relu", "elu"),
        ),
        STABILIZE[2],
        Move("hidden_layers", "lower", "fewer layers, shorter gradient path", _i(1, 4)),
        Move(
            "init_std",
            "raise",
            "a tiny init scale shrinks gradients layer by layer",
            _f(1e-2, 1.0, log=True),
            when=("init", ("normal",)),
        ),
    ),
    "dead_units": (
        Move(
            "activation",
            "choose",
            "leaky ReLU and ELU have no zero-gradient region",
            _c("relu", "leaky_relu", "elu"),
            prefer=("leaky_relu", "elu"),
        ),
        Move("lr", "lower", "large steps knock units dead", _f(1e-4, 1e-2, log=True)),
        INIT_AUTO,
        STABILIZE[2],
    ),
    "oscillating": (
        Move("lr", "lower", "smaller steps stop the zig-zag", _f(1e-4, 1e-2, log=True)),
        Move("batch_size", "raise", "larger batches average out noise", _c(64, 128, 256)),
    ),
    "still_improving": (
        Move("lr", "raise", "a higher learning rate converges sooner", _f(1e-3, 1e-1, log=True)),
    ),
    "unrepresentative_validation": (),
    "good_fit": (),
    "inconclusive": (),  # by the side it leans to: see moves_for
}
# An inconclusive fit gets the first few moves of the side it leans to: nudges, not a cure.
LEANING_MOVES = 3


def moves_for(kind: str, evidence: Mapping[str, EvidenceValue]) -> tuple[Move, ...]:
    """The moves for one finding, most promising first: MOVES[kind], read with the
    finding's evidence (trainer.fit_verdict). Early stopping leads when, replayed on the
    trial's own curve, it would have stopped before the end (`early_stop_at_epoch`), and is
    left out when the trial already used it (`kept_epoch`); an `inconclusive` fit gets the
    first LEANING_MOVES moves of the side it `leans` to (variance: regularize; bias:
    capacity)."""
    if kind == "inconclusive":
        side = {"variance": REGULARIZE, "bias": CAPACITY}.get(str(evidence.get("leans")), ())
        moves = _early_stopping_first(side, evidence)
        return moves[:LEANING_MOVES]
    moves = MOVES.get(kind, ())
    return _early_stopping_first(moves, evidence) if kind == "overfit" else moves


def _early_stopping_first(
    moves: tuple[Move, ...], evidence: Mapping[str, EvidenceValue]
) -> tuple[Move, ...]:
    if EARLY_STOPPING not in moves:
        return moves
    rest = tuple(m for m in moves if m is not EARLY_STOPPING)
    if "kept_epoch" in evidence:
        return rest  # it already stopped early and kept its best epoch
    if "early_stop_at_epoch" in evidence:
        return (EARLY_STOPPING, *rest)
    return moves
