"""Transfer learning: every trial of a study starts from a finished trial's weights.

`init_from: {trial_id, layers: k, freeze}` copies `blocks[:k]` of that trial's stored model
into each new model (through `fit(prepare_model=...)`), keeps the new, freshly initialized
head, and with `freeze` stops the reused blocks from training: their parameters get no
gradient (so the optimizer never sees them) and their batch-norm layers stay in evaluation
mode, normalizing with the source's running statistics and never updating them.

A plug-in family's model (any `nn.Module`) has no blocks: it reuses every parameter and
buffer of the stored model whose name and shape match its own (`trainer.modules.
transfer_matching`): the same family with more depth keeps the stored layers and
initializes the new ones; a head for another number of classes is left as initialized.
`layers` does not apply to it (422 at `init_from.layers`); `freeze` freezes exactly the
parameters transferred.
"""

from __future__ import annotations

import types

import torch
from sqlalchemy.orm import Session
from torch import nn

from service.core.db.engine import session_scope
from service.core.errors import ModelNotAvailable
from service.studies.spec import CategoricalDist, InitFromSpec, IntDist, StudySpec
from service.trials.artifacts import load_trial_model, missing_reason, model_meta
from trainer.checkpoint import load_checkpoint
from trainer.loop import PrepareModel
from trainer.model import FAMILIES, TrainerModel
from trainer.modules import TransferMismatch, transfer_matching
from trainer.params import PARAMS

# The parameters whose sum is the number of hidden blocks, per model family.
DEPTH_PARAMS = {"mlp": ("hidden_layers",), "cnn": ("conv_blocks", "hidden_layers")}


class TransferError(ValueError):
    """The stored weights do not fit the model being trained."""


def init_from_errors(session: Session, spec: StudySpec) -> list[tuple[str, str]]:
    """(field, reason) for each problem with `spec.init_from`; checked when a study is
    submitted."""
    init = spec.init_from
    if init is None:
        return []
    meta = model_meta(session, init.trial_id)
    if meta is None:
        return [("trial_id", missing_reason(session, init.trial_id))]
    if meta["family"] != spec.model.family:
        return [
            (
                "trial_id",
                f"trial {init.trial_id} trained a {meta['family']} model; this study's "
                f"model.family is {spec.model.family}",
            )
        ]
    if spec.model.family not in FAMILIES:
        if init.layers is not None:
            why = (
                f"{spec.model.family} is a plug-in family: its model reuses every parameter "
                "whose name and shape match the stored model's; layers counts mlp/cnn blocks "
                "only (leave it out)"
            )
            return [("layers", why)]
        return []
    n_blocks = int(meta["n_blocks"])
    if n_blocks == 0:
        return [("trial_id", f"trial {init.trial_id}'s model has no hidden blocks to reuse")]
    k = n_blocks if init.layers is None else init.layers
    if k > n_blocks:
        return [("layers", f"{k} > {n_blocks}, the number of blocks of trial {init.trial_id}")]
    params = DEPTH_PARAMS.get(spec.model.family, ())
    depth = sum(_smallest(spec, p) for p in params)
    if params and depth < k:
        blocks = " + ".join(params)
        return [("layers", f"reuses {k} blocks, but this study's {blocks} can be {depth}")]
    return []


def _smallest(spec: StudySpec, param: str) -> int:
    """The smallest value an int parameter can take in this study."""
    dist = spec.space.get(param)
    if isinstance(dist, IntDist):
        return dist.low
    if isinstance(dist, CategoricalDist):
        return min(int(c) for c in dist.choices)
    return int(spec.fixed.get(param, PARAMS[param].default))


def prepare_from(url: str, init: InitFromSpec) -> PrepareModel:
    """A `prepare_model` callback that loads the source trial's first k blocks."""
    try:
        with session_scope(url) as session:
            stored = load_trial_model(session, init.trial_id)
        ckpt = load_checkpoint(stored.data)
    except ModelNotAvailable as e:
        raise TransferError(f"init_from: {e}") from e
    if ckpt.family not in FAMILIES:
        return _prepare_by_name(ckpt.state_dict, init)
    k = ckpt.n_blocks if init.layers is None else init.layers
    source = init.trial_id

    def prepare(model: nn.Module) -> None:
        if not isinstance(model, TrainerModel):
            raise TransferError(f"init_from: trial {source} holds blocks; this model has none")
        if len(model.blocks) < k:
            raise TransferError(
                f"init_from: this model has {len(model.blocks)} blocks, fewer than the {k} "
                f"to reuse from trial {source}"
            )
        for i in range(k):
            weights = ckpt.block_state(i)
            block = model.blocks[i]
            target = block.state_dict()
            if weights.keys() != target.keys():
                raise TransferError(
                    f"init_from: block {i} of trial {source} holds {sorted(weights)}, "
                    f"this model's holds {sorted(target)}"
                )
            for name, tensor in weights.items():
                if tensor.shape != target[name].shape:
                    raise TransferError(
                        f"init_from: shape mismatch at blocks.{i}.{name}: "
                        f"{tuple(tensor.shape)} in trial {source}, "
                        f"{tuple(target[name].shape)} here"
                    )
            block.load_state_dict(weights)
            if init.freeze:
                freeze(block)

    return prepare


def _prepare_by_name(state: dict[str, torch.Tensor], init: InitFromSpec) -> PrepareModel:
    """Reuse every stored entry whose name and shape match (a plug-in family's model)."""

    def prepare(model: nn.Module) -> None:
        try:
            copied = set(transfer_matching(model, state))
        except TransferMismatch as e:
            raise TransferError(f"init_from: trial {init.trial_id}: {e}") from e
        if not init.freeze:
            return
        params = dict(model.named_parameters())
        if all(name in copied for name in params):
            raise TransferError(
                f"init_from.freeze: every parameter of this model comes from trial "
                f"{init.trial_id}; frozen, nothing would train"
            )
        for name, p in params.items():
            if name in copied:
                p.requires_grad_(False)
        for path, m in model.named_modules():
            own = [f"{path}.{n}" if path else n for n, _ in m.named_parameters(recurse=False)]
            if own and all(n in copied for n in own):
                freeze_norm(m)

    return prepare


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze(block: nn.Module) -> None:
    """No gradients for the block's parameters; its batch norms keep their statistics."""
    for p in block.parameters():
        p.requires_grad_(False)
    for m in block.modules():
        freeze_norm(m)


def freeze_norm(m: nn.Module) -> None:
    """A batch norm stays in evaluation mode (keeps its running statistics); other modules
    are left alone."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.train = types.MethodType(_stay_in_eval, m)  # type: ignore[method-assign]
        m.eval()
