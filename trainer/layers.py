"""Parameter-free input transforms that act in training mode only.

They sit in `TrainerModel.inputs`, so they run on the device, per mini-batch, inside the
model's forward pass, and `model.eval()` turns them off: evaluation sees the clean inputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class GaussianNoise(nn.Module):
    """x + N(0, std²) elementwise in training mode ("jitter"); the identity in eval mode."""

    def __init__(self, std: float) -> None:
        super().__init__()
        if std < 0:
            raise ValueError(f"input_noise: must be >= 0, got {std}")
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0:
            return x
        return x + self.std * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"std={self.std:g}"


def shift_pixels(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move images (n, c, h, w) by whole pixels, `shift` (n, 2) = (dx, dy) integers, exactly:
    out[..., y, x] = in[..., y - dy, x - dx], zeros where that falls outside the image."""
    n, c, h, w = x.shape
    m = int(shift.abs().max()) if shift.numel() else 0
    padded = F.pad(x, (m, m, m, m))
    dx, dy = shift[:, 0].long(), shift[:, 1].long()
    rows = torch.arange(h, device=x.device)[None, :] + m - dy[:, None]  # (n, h)
    cols = torch.arange(w, device=x.device)[None, :] + m - dx[:, None]  # (n, w)
    return padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def affine_warp(x: torch.Tensor, shift: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Move images (n, c, h, w) by `shift` pixels (n, 2: dx, dy) and rotate them by `angle`
    radians (n,) about their centre (a positive angle turns counter-clockwise as displayed,
    rows growing downwards); bilinear sampling, zeros outside the image.

    Linear in x, so its gradient w.r.t. x is exact (tests check it with trainer.gradcheck).
    With angle 0 and integer shifts each output pixel is exactly one input pixel.
    """
    n, _, h, w = x.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid maps output coordinates in [-1, 1] to input coordinates: input = A·out + t.
    # A shift of s pixels to the right samples the input s pixels to the left: t = -2s/size.
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * h / w
    theta[:, 1, 0] = sin * w / h
    theta[:, 1, 1] = cos
    theta[:, 0, 2] = -2.0 * shift[:, 0] / w
    theta[:, 1, 2] = -2.0 * shift[:, 1] / h
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomShiftRotate(nn.Module):
    """Data augmentation for images (n, c, h, w) or (n, h, w), training mode only.

    Each image moves by a whole number of pixels drawn uniformly from [-max_shift, max_shift]
    along each axis and, when max_degrees > 0, turns by an angle drawn uniformly from
    [-max_degrees, max_degrees]. Uncovered pixels become 0, which is the training mean after
    standardization. The identity in eval mode.
    """

    def __init__(self, max_shift: int, max_degrees: float = 0.0) -> None:
        super().__init__()
        self.max_shift = int(max_shift)
        self.max_degrees = float(max_degrees)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        squeeze = x.ndim == 3
        images = x.unsqueeze(1) if squeeze else x
        if images.ndim != 4:
            raise ValueError(f"augment: needs images (n, c, h, w) or (n, h, w), got {x.shape}")
        n = images.shape[0]
        shift = torch.randint(-self.max_shift, self.max_shift + 1, (n, 2), device=x.device).to(
            x.dtype
        )
        degrees = (torch.rand(n, device=x.device, dtype=x.dtype) * 2 - 1) * self.max_degrees
        angle = degrees * (math.pi / 180)
        if self.max_degrees == 0:
            out = shift_pixels(images, shift)
        else:
            out = affine_warp(images, shift, angle)
        return out.squeeze(1) if squeeze else out

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}, max_degrees={self.max_degrees:g}"


# augment name -> (max shift in pixels, max rotation in degrees)
AUGMENT_SETTINGS: dict[str, tuple[int, float]] = {
    "shift": (2, 0.0),
    "shift_rotate": (2, 15.0),
}


def build_augment(name: str, image_size: int) -> nn.Module | None:
    """The augmentation module for `name`; shifts are 2 pixels, or 1 on images under 16 px."""
    if name == "none":
        return None
    if name not in AUGMENT_SETTINGS:
        raise ValueError(f"augment: unknown {name!r}; known: {['none', *AUGMENT_SETTINGS]}")
    shift, degrees = AUGMENT_SETTINGS[name]
    if image_size < 16:
        shift = 1
    return RandomShiftRotate(shift, degrees)


class BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that accepts a training mini-batch of one row.

    A batch of one has no variance to normalize by (PyTorch raises). When the last
    mini-batch of an epoch holds one row, it is normalized with the running statistics,
    as in evaluation, and leaves them unchanged; every other batch is ordinary batch norm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1 and x.ndim == 2:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)
