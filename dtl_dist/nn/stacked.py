"""Train the k fold models of one trial at once: one forward pass for all folds (section 2.3.1).

A :class:`FoldStack` holds every parameter and buffer of k identical :class:`~dtl_dist.nn.builder.CNN`
models as one tensor with a leading fold axis, and makes each fold model's parameters views of it. Its
forward pass runs the folds together: batched matrix products for the fully-connected layers, batch
norm over ``k * channels`` channels (statistics stay per fold) and per-fold dropout masks drawn from each
fold model's own generator; convolutions run one call per fold (on CPU faster than ``groups=k``).
Gradients land in the stacked tensors; the trainer hands each fold its slice, so a per-fold optimiser
steps exactly as it would for a fold trained alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dtl_dist.nn.builder import CNN, SeededDropout, dropout_mask


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return model.get_submodule(path), attr


class FoldStack:
    """k fold models of the same architecture sharing stacked storage.

    Parameters
    ----------
    models : list of CNN
        Fold models built from the same config; after construction their parameters and buffers are
        views of :attr:`params` / :attr:`buffers` (build the optimiser afterwards).

    Attributes
    ----------
    params : dict of str to Tensor
        Stacked parameters ``(k, *shape)``, leaves whose ``grad`` a forward/backward fills.
    buffers : dict of str to Tensor
        Stacked batch-norm buffers ``(k, *shape)``.
    """

    def __init__(self, models: list[CNN]):
        self.models = models
        reference = models[0]
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        for name, p0 in reference.named_parameters():
            stacked = torch.stack([m.get_parameter(name).detach() for m in models]).requires_grad_(p0.requires_grad)
            self.params[name] = stacked
            for f, model in enumerate(models):
                module, attr = _owner(model, name)
                module._parameters[attr] = nn.Parameter(stacked.data[f], requires_grad=p0.requires_grad)
        for name, _ in reference.named_buffers():
            stacked = torch.stack([m.get_buffer(name) for m in models])
            self.buffers[name] = stacked
            for f, model in enumerate(models):
                module, attr = _owner(model, name)
                module._buffers[attr] = stacked[f]

    def forward(self, x: torch.Tensor, folds: list[int]) -> torch.Tensor:
        """Predictions ``(len(folds), batch)`` for inputs ``(len(folds), batch, 1, n_bands)``.

        Fold ``folds[g]`` sees ``x[g]``; every layer runs in the train/eval mode of the fold models.
        """
        n_folds = len(self.models)
        everyone = list(folds) == list(range(n_folds))
        index = torch.as_tensor(folds, device=x.device)

        def param(name):
            stacked = self.params[name]
            return stacked if everyone else stacked[index]

        groups, batch = x.shape[0], x.shape[1]
        reference = self.models[folds[0]]
        h = x.reshape(groups, batch, -1)
        if reference.scaled:  # each fold model's own input scaling (builder.set_scaling)
            h = (h - self._buffer("x_mean", index)[:, None]) / self._buffer("x_scale", index)[:, None]
        h = h.transpose(0, 1)  # (batch, folds * channels, length)
        flat = False  # after Flatten: (folds, batch, features)
        for b, block in enumerate(reference.blocks):
            for i, layer in enumerate(block):
                name = f"blocks.{b}.{i}"
                if isinstance(layer, nn.Conv1d):  # one call per fold: faster on CPU than groups=k
                    w, bias, c = param(name + ".weight"), param(name + ".bias"), layer.in_channels
                    parts = [h[:, g * c : (g + 1) * c] for g in range(groups)]
                    h = torch.cat([F.conv1d(p, w[g], bias[g], stride=layer.stride) for g, p in enumerate(parts)], dim=1)
                elif isinstance(layer, nn.Linear):
                    h = torch.baddbmm(param(name + ".bias").unsqueeze(1), h, param(name + ".weight").transpose(1, 2))
                elif isinstance(layer, nn.BatchNorm1d):
                    h = self._batch_norm(layer, name, h, index, param, flat)
                elif isinstance(layer, SeededDropout):
                    if layer.training:
                        h = h * self._dropout_masks(b, i, layer.p, h, folds, flat)
                elif isinstance(layer, nn.Flatten):
                    h = h.reshape(batch, groups, -1).transpose(0, 1)
                    flat = True
                elif isinstance(layer, nn.ConstantPad1d):
                    h = F.pad(h, layer.padding, value=layer.value)
                else:  # activations and pooling act per channel
                    h = layer(h)
        h = h.squeeze(-1)
        if reference.scaled:
            h = h * self._buffer("y_scale", index)[:, None] + self._buffer("y_mean", index)[:, None]
        return h

    def _buffer(self, name: str, index: torch.Tensor) -> torch.Tensor:
        return self.buffers[name][index]

    def _batch_norm(self, layer, name, h, index, param, flat):
        running_mean = self.buffers[name + ".running_mean"][index]
        running_var = self.buffers[name + ".running_var"][index]
        shape = h.shape
        if flat:
            h = h.transpose(0, 1).reshape(shape[1], -1)
        out = F.batch_norm(
            h,
            running_mean.reshape(-1),
            running_var.reshape(-1),
            param(name + ".weight").reshape(-1),
            param(name + ".bias").reshape(-1),
            layer.training,
            layer.momentum,
            layer.eps,
        )
        if layer.training:
            with torch.no_grad():
                self.buffers[name + ".running_mean"][index] = running_mean
                self.buffers[name + ".running_var"][index] = running_var
                self.buffers[name + ".num_batches_tracked"][index] += 1
        if flat:
            out = out.reshape(shape[1], shape[0], shape[2]).transpose(0, 1)
        return out

    def _dropout_masks(self, b, i, p, h, folds, flat):
        def generator(f):
            return self.models[f].blocks[b][i].generator

        if flat:
            return torch.stack([dropout_mask(h.shape[1:], p, generator(f), h.device) for f in folds]).to(h.dtype)
        per_fold = (h.shape[0], h.shape[1] // len(folds), h.shape[2])
        return torch.cat([dropout_mask(per_fold, p, generator(f), h.device) for f in folds], dim=1).to(h.dtype)
