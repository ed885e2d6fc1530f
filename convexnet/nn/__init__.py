"""convexnet for ``torch.nn`` models: pruning in place (Net-Trim, or a sparsity target with a certified
exact refit), and the layer adapters it uses.

``import convexnet.nn`` loads torch (``import convexnet`` alone does not), never ``transformers``.
The entry points are :func:`trim` and :func:`refit`, which return a :class:`TrimReport` (one
:class:`LayerReport` per layer). The modules:

:mod:`convexnet.nn.layers`
    the layer adapters: a module's ``[W; b]`` matrix, read and written back, its groups, and its
    activations as sample rows (``Linear``, ``Conv1d``, ``Conv2d``, ``Conv3d``, ``transformers``'
    ``Conv1D``); used by trim, the writer and :mod:`convexnet.training`.
:mod:`convexnet.nn.attention`
    ``nn.MultiheadAttention`` as two layers: the packed ``in_proj_weight`` and ``out_proj``.
:mod:`convexnet.nn.trimming`
    :func:`trim` and :func:`refit`; Net-Trim is the model's side of the network loop
    (:mod:`convexnet.programs.cascade`).
:mod:`convexnet.nn.pruning`
    targets and refits: layer after layer on streamed Gram statistics, written all or nothing.
:mod:`convexnet.nn.targets`
    ``sparsity=`` / ``pattern=`` targets and the convex (reweighted l1) choice of a support.
:mod:`convexnet.nn.least_squares`
    the exact refit on a fixed support, batched from ``H = X^T X``, and its certificate.
:mod:`convexnet.nn.blocks`
    Gram statistics from whole-model passes or one repeated block at a time.
:mod:`convexnet.nn.report`
    :class:`TrimReport` and :class:`LayerReport`.
:mod:`convexnet.nn.capture`
    which layers, which have a ReLU, and their activations, captured with forward hooks.
:mod:`convexnet.nn.write`
    refit weights written in place, zeros registered with ``torch.nn.utils.prune``, all or nothing.
:mod:`convexnet.nn.checks`
    the checks ``trim`` runs before any work.
:mod:`convexnet.nn.io`
    the files of the ``convexnet prune`` command.
:mod:`convexnet.nn.structure`
    units (features, channels, heads) and the layers that produce, carry and consume them.
:mod:`convexnet.nn.shrink`
    :func:`shrink`: a pruned model rebuilt physically smaller
    (:mod:`convexnet.nn.pruned_attention` for attention with heads removed).
:mod:`convexnet.nn.structured`, :mod:`convexnet.nn.group_lasso`
    ``trim(neurons=)``: units chosen by the group-l1 path, consumers refit and certified.
:mod:`convexnet.nn.exporting`
    :func:`export` and :func:`load`: pruned (or shrunk) weights in a safetensors file.
:mod:`convexnet.nn.training_support`
    what :mod:`convexnet.training` needs: argument checks and all-or-nothing optimizer steps.

Examples
--------
>>> import torch
>>> import convexnet.nn as cnn
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> report = cnn.trim(model, torch.randn(64, 4), rel_epsilon=0.05)  # doctest: +SKIP
>>> sorted(cnn.__all__)
['LayerReport', 'TrimReport', 'export', 'load', 'refit', 'shrink', 'trim']
"""

from .exporting import export, load
from .report import LayerReport, TrimReport
from .shrink import shrink
from .trimming import refit, trim

__all__ = ["trim", "refit", "shrink", "export", "load", "TrimReport", "LayerReport"]
