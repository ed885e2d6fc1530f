"""Calibration statistics, streamed through the whole model or one repeated block at a time.

A pruning pass needs, for each layer in turn, the Gram matrix ``H = [X, 1]^T [X, 1]`` (float64) of
its input rows in the model whose earlier layers are already pruned (the cascade). Two sources give
the same matrices:

* :class:`ModelStream` runs the whole (working copy of the) model on every calibration batch;
* :class:`BlockStream`, for a model made of repeated blocks (a ``transformers`` GPT-2 or LLaMA-style
  model, an ``nn.TransformerEncoder``: :func:`find_blocks`), records the first block's inputs once
  (positional and keyword arguments, per batch: the hidden states, the attention mask, the position
  embeddings), then runs block ``b`` alone on them; :meth:`BlockStream.advance` replaces them by
  block ``b``'s (pruned) outputs, the inputs of block ``b + 1``. Memory: one block's activations for
  the calibration set, plus one Gram matrix.

Both accumulate ``H`` in forward hooks (:meth:`~convexnet.nn.layers.LayerAdapter.call_inputs`), on
the model's device, so no sample matrix is ever held.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError
from . import capture
from .layers import LayerAdapter

__all__ = ["find_blocks", "ModelStream", "BlockStream", "layer_order"]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the first block's inputs are recorded."""


def find_blocks(model: torch.nn.Module, names: list[str]) -> tuple[str, list[str]] | None:
    """The repeated blocks of ``model``: ``(prefix, [block names])``, or None.

    The ``nn.ModuleList`` of at least two children of one class that holds the most of the layers
    ``names`` (GPT-2's ``transformer.h``, LLaMA's ``model.layers``, ``TransformerEncoder.layers``).
    """
    best, best_count = None, 0
    for prefix, module in model.named_modules():
        children = list(module.children())
        if not isinstance(module, torch.nn.ModuleList) or len(children) < 2 \
                or len({type(child) for child in children}) != 1:
            continue
        blocks = [f"{prefix}.{index}" if prefix else str(index) for index in range(len(children))]
        count = sum(any(name.startswith(block + ".") for block in blocks) for name in names)
        if count > best_count:
            best, best_count = (prefix, blocks), count
    return best


def block_of(name: str, blocks: list[str]) -> int | None:
    """The index of the block holding layer ``name``, or None."""
    for index, block in enumerate(blocks):
        if name.startswith(block + "."):
            return index
    return None


def _accumulator(adapter: LayerAdapter, bias: bool, store: dict):
    """A forward hook adding one call's ``[X, 1]^T [X, 1]`` (float64) to ``store["H"]``."""
    def hook(module, args, kwargs, output):
        X = adapter.call_inputs(args, kwargs).to(torch.float64)
        if bias:
            X = torch.cat([X, torch.ones((X.shape[0], 1), dtype=X.dtype, device=X.device)], 1)
        store["H"] = X.T @ X if store.get("H") is None else store["H"] + X.T @ X
        store["rows"] = store.get("rows", 0) + X.shape[0]
    return hook


def layer_order(model, names: list[str], run) -> list[str]:
    """``names`` in the order a forward pass ``run(hooks)`` first calls them."""
    adapters = capture.layer_adapters(model, names)
    order = []

    def make_hook(name):
        def hook(module, args, kwargs, output):
            if name not in order:
                order.append(name)
        return hook

    run([(adapters[name].hooked, make_hook(name)) for name in names])
    missing = [name for name in names if name not in order]
    if missing:
        raise InvalidInputError(
            f"layers {missing} were not called when the model ran on the calibration inputs; "
            "prune only layers that the forward pass uses (layers=[...]).")
    return order


class ModelStream:
    """Statistics from whole-model passes over the working copy.

    Parameters
    ----------
    working : torch.nn.Module
    batches : list of Tensor
    """

    def __init__(self, working, batches: list):
        self.working, self.batches = working, batches

    def run(self, hooks: list) -> None:
        capture.run_model(self.working, self.batches, hooks)

    def gram(self, name: str, adapter: LayerAdapter, bias: bool) -> tuple[torch.Tensor, int]:
        """``(H, rows)`` of layer ``name`` in the working copy as it is now."""
        store: dict = {}
        self.run([(adapter.hooked, _accumulator(adapter, bias, store))])
        return store["H"], store["rows"]

    def reach(self, name: str) -> int | None:
        """Get ready to take statistics of layer ``name``; its block's index (None: whole model)."""
        return None


class BlockStream(ModelStream):
    """Statistics from one block at a time (module docstring).

    Parameters
    ----------
    working : torch.nn.Module
    batches : list of Tensor
    blocks : list of str
        The blocks' module names, in order.
    """

    def __init__(self, working, batches: list, blocks: list[str]):
        super().__init__(working, batches)
        self.names = list(blocks)
        self.blocks = [working.get_submodule(name) for name in blocks]
        self.index = 0
        self.inputs = self._first_inputs()

    def _first_inputs(self) -> list[tuple[tuple, dict]]:
        """Each batch's call of the first block; on the first batch, check the chain of blocks.

        The first batch runs through the whole model with every block's call recorded, and each
        block's output must be the next block's input (else block-by-block calibration would
        compute something else than the model: :class:`InvalidInputError`).
        """
        recorded, chain = [], []

        def first(module, args, kwargs):
            recorded.append((args, kwargs))
            raise _Stop

        def every(module, args, kwargs):
            chain.append((args, kwargs))

        handles = [block.register_forward_pre_hook(every, with_kwargs=True) for block in self.blocks]
        try:
            capture.run_model(self.working, self.batches[:1], [])
        finally:
            for handle in handles:
                handle.remove()
        handle = self.blocks[0].register_forward_pre_hook(first, with_kwargs=True)
        try:
            for batch in self.batches[1:]:
                try:
                    capture.run_model(self.working, [batch], [])
                except _Stop:
                    pass
        finally:
            handle.remove()
        if len(chain) != len(self.blocks) or len(recorded) != len(self.batches) - 1:
            raise InvalidInputError(
                "the model's repeated blocks were not each called once per calibration batch; "
                "calibrate block by block only a model that runs its blocks in sequence "
                "(blockwise=False runs the whole model).")
        self._check_chain(chain)
        return [chain[0], *recorded]

    def _check_chain(self, chain: list) -> None:
        with torch.no_grad(), capture.no_fastpath():
            for index in range(len(self.blocks) - 1):
                args, kwargs = chain[index]
                produced = _replace_hidden(args, kwargs, self.blocks[index](*args, **kwargs))
                expected = _hidden(*chain[index + 1])
                hidden = _hidden(*produced)
                if hidden.shape == expected.shape and torch.allclose(hidden, expected, rtol=1e-4,
                                                                     atol=1e-5):
                    continue
                raise InvalidInputError(
                    f"block {index + 1}'s input is not block {index}'s output in this model "
                    "(something runs between the repeated blocks); block-by-block calibration "
                    "would not reproduce the model: pass blockwise=False.")

    def run(self, hooks: list) -> None:
        """Run the current block on its recorded inputs, with ``hooks`` attached."""
        block = self.blocks[self.index]
        handles = [module.register_forward_hook(hook, with_kwargs=True) for module, hook in hooks]
        try:
            with torch.no_grad(), capture.no_fastpath():
                for args, kwargs in self.inputs:
                    block(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    def reach(self, name: str) -> int | None:
        """Advance to the block holding layer ``name`` (the layers come in forward order); its index."""
        block = block_of(name, self.names)
        while block is not None and self.index < block:
            self.advance()
        return block

    def advance(self) -> None:
        """Replace the recorded inputs by the current block's outputs; move to the next block."""
        block = self.blocks[self.index]
        with torch.no_grad(), capture.no_fastpath():
            self.inputs = [_replace_hidden(args, kwargs, block(*args, **kwargs))
                           for args, kwargs in self.inputs]
        self.index += 1


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs[next(key for key in ("hidden_states", "src", "x", "input") if key in kwargs)]


def _replace_hidden(args: tuple, kwargs: dict, output) -> tuple[tuple, dict]:
    """The next block's call: the hidden states replaced by ``output`` (or its first element)."""
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    if args:
        return (hidden, *args[1:]), kwargs
    key = next(key for key in ("hidden_states", "src", "x", "input") if key in kwargs)
    return args, {**kwargs, key: hidden}
