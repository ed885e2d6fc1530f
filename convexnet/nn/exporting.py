"""Pruned models written as real weights: :func:`export` to a safetensors file, :func:`load` back.

The file holds the model's ``state_dict`` with every ``torch.nn.utils.prune`` mask folded in
(``weight = weight_orig * weight_mask``: the keys of the plain architecture), and, in the
safetensors header's metadata under ``"convexnet"``, a small JSON of what was pruned:

.. code-block:: json

    {"format": "convexnet-export", "version": 1, "sparse": null,
     "removed": {"0": [1, 4]},                       (units cut out, per group, with shrink=True)
     "pruned": {"2": {"tensor": "weight", "shape": [10, 6], "nonzeros": 24}},
     "layouts": {}}                                  (tensors stored sparse, with sparse=)

Options:

* ``shrink=True`` writes :func:`convexnet.nn.shrink`'s smaller model; ``"removed"`` records the
  units cut, so that :func:`load` rebuilds the same smaller architecture from the original one;
* ``sparse="csr"`` stores each pruned weight as the compressed sparse rows of its ``(out, -1)``
  matrix (``<key>.crow_indices``, ``<key>.col_indices``, ``<key>.values``);
* ``sparse="2:4"`` stores each pruned weight in the semi-structured layout of PyTorch's
  ``to_sparse_semi_structured``: per row, per group of 4 consecutive inputs, the 2 kept values
  (``<key>.values``, ``(out, in / 2)``) and their positions in the group (``<key>.positions``,
  uint8). A weight with more than 2 non-zeros in a group is refused (prune with
  ``pattern="2:4"`` first).

:func:`load` reads the tensors back dense, so the loaded model computes what the exported one did
(on a CUDA device, ``torch.sparse.to_sparse_semi_structured`` turns a 2:4 weight into the fast
kernel's format). The file is written atomically (:mod:`convexnet._atomic`).
"""

from __future__ import annotations

import json
import math
import warnings

import torch

from .._atomic import atomic_write
from ..errors import InvalidInputError
from . import capture, checks
from .io import make_permanent
from .shrink import apply_removal, removed_units
from .structure import unit_groups

__all__ = ["export", "load", "FORMAT"]

FORMAT = "convexnet-export"
_SPARSE = (None, "csr", "2:4")


def _pruned(model: torch.nn.Module) -> dict:
    """``{module: {"tensor", "shape", "nonzeros"}}`` for every tensor with a pruning mask."""
    found = {}
    for name, module in model.named_modules():
        for key in list(module._buffers):
            if key.endswith("_mask") and hasattr(module, key[:-5] + "_orig"):
                mask = module._buffers[key]
                found[f"{name}.{key[:-5]}" if name else key[:-5]] = {
                    "module": name, "tensor": key[:-5], "shape": list(mask.shape),
                    "nonzeros": int(mask.count_nonzero())}
    return found


def _pack_24(key: str, weight: torch.Tensor) -> dict:
    matrix = weight.reshape(weight.shape[0], -1)
    if matrix.shape[1] % 4:
        raise InvalidInputError(f"sparse='2:4' needs inputs in groups of 4; {key} has "
                                f"{matrix.shape[1]} inputs per output.")
    groups = matrix.reshape(matrix.shape[0], -1, 4)
    if int((groups != 0).sum(2).max()) > 2:
        raise InvalidInputError(f"{key} has more than 2 non-zeros in a group of 4 inputs; prune "
                                "it with cnn.trim(..., pattern='2:4') before exporting with "
                                "sparse='2:4', or export it with sparse=None or 'csr'.")
    # The two largest magnitudes of each group, in input order (zeros fill short groups).
    positions = torch.topk(groups.abs(), 2, dim=2, sorted=False).indices.sort(dim=2).values
    values = torch.gather(groups, 2, positions)
    return {f"{key}.values": values.reshape(matrix.shape[0], -1).contiguous(),
            f"{key}.positions": positions.to(torch.uint8).reshape(matrix.shape[0], -1).contiguous()}


def _unpack_24(tensors: dict, key: str, shape: list) -> torch.Tensor:
    values, positions = tensors.pop(f"{key}.values"), tensors.pop(f"{key}.positions").long()
    rows = values.shape[0]
    dense = torch.zeros((rows, values.shape[1] // 2, 4), dtype=values.dtype)
    dense.scatter_(2, positions.reshape(rows, -1, 2), values.reshape(rows, -1, 2))
    return dense.reshape(shape)


def _pack(tensors: dict, keys: list, sparse: str | None) -> dict:
    layouts = {}
    for key in keys:
        weight = tensors.pop(key)
        layouts[key] = {"layout": sparse, "shape": list(weight.shape),
                        "dtype": str(weight.dtype).replace("torch.", "")}
        if sparse == "csr":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)       # "CSR support is in beta"
                csr = weight.reshape(weight.shape[0], -1).to_sparse_csr()
            tensors.update({f"{key}.crow_indices": csr.crow_indices(),
                            f"{key}.col_indices": csr.col_indices(),
                            f"{key}.values": csr.values()})
        else:
            tensors.update(_pack_24(key, weight))
    return layouts


def _unpack(tensors: dict, layouts: dict) -> dict:
    for key, layout in layouts.items():
        if layout["layout"] == "csr":
            shape = layout["shape"]
            # A file is untrusted: check the indices (a bad one would read out of bounds).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                try:
                    matrix = torch.sparse_csr_tensor(
                        tensors.pop(f"{key}.crow_indices"), tensors.pop(f"{key}.col_indices"),
                        tensors.pop(f"{key}.values"), size=(shape[0], math.prod(shape[1:])),
                        check_invariants=True)
                except (RuntimeError, KeyError) as exc:
                    raise InvalidInputError(f"the CSR tensors of {key} are damaged ({exc}).") \
                        from None
            tensors[key] = matrix.to_dense().reshape(shape)
        else:
            tensors[key] = _unpack_24(tensors, key, layout["shape"])
    return tensors


def export(model: torch.nn.Module, path, format: str = "safetensors", *, shrink: bool = False,
           sparse: str | None = None) -> dict:
    """Write ``model``'s pruned weights and a JSON of what was pruned (module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Pruned (``torch.nn.utils.prune`` masks, e.g. from :func:`convexnet.nn.trim`), or not. Not
        changed.
    path : str or os.PathLike
        The file to write (replaced atomically; its folder must exist).
    format : {"safetensors"}
    shrink : bool, default False
        Cut removed units out first (:func:`convexnet.nn.shrink`).
    sparse : {None, "csr", "2:4"}
        How pruned weights are stored.

    Returns
    -------
    dict
        The JSON written into the file's metadata.

    Examples
    --------
    >>> import tempfile, pathlib, torch, convexnet.nn as cnn
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> with torch.no_grad():
    ...     model[2].weight[:, :3] = 0
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "small.safetensors"
    >>> cnn.export(model, path, shrink=True)["removed"]
    {'0': [0, 1, 2]}
    >>> small = cnn.load(path, torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                                            torch.nn.Linear(8, 2)))
    >>> small[0].out_features
    5
    """
    checks.check_model(model)
    if format != "safetensors":
        raise InvalidInputError(f"format must be 'safetensors'; got {format!r}.")
    if sparse not in _SPARSE:
        raise InvalidInputError(f"sparse must be None, 'csr' or '2:4'; got {sparse!r}.")
    if not isinstance(shrink, bool):
        raise InvalidInputError(f"shrink must be True or False; got {shrink!r}.")
    try:
        from safetensors.torch import save
    except ImportError:
        raise InvalidInputError("export writes safetensors files; pip install safetensors.") from None
    groups = unit_groups(model) if shrink else []
    removed = removed_units(model, groups) if shrink else {}
    pruned = _pruned(model)
    copy = capture.working_copy(model).cpu()
    make_permanent(copy)
    if removed:
        copy = apply_removal(copy, groups, removed)
    # safetensors refuses tensors that share memory (tied weights): independent copies.
    tensors = {key: value.detach().clone().contiguous() for key, value in copy.state_dict().items()}
    keys = [key for key in pruned if key in tensors and tensors[key].dim() >= 2]
    layouts = _pack(tensors, keys, sparse) if sparse else {}
    info = {"format": FORMAT, "version": 1, "sparse": sparse, "removed": removed,
            "pruned": pruned,
            "layouts": layouts}
    try:
        with atomic_write(path) as handle:
            handle.write(save(tensors, metadata={"convexnet": json.dumps(info)}))
    except OSError as exc:
        raise InvalidInputError(f"cannot write {str(path)!r} ({exc}).") from None
    return info


def load(path, model: torch.nn.Module) -> torch.nn.Module:
    """The model :func:`export` wrote to ``path``, built on the architecture ``model``.

    Parameters
    ----------
    path : str or os.PathLike
    model : torch.nn.Module
        The original architecture (as before pruning and shrinking; its weights are not used).
        Not changed.

    Returns
    -------
    torch.nn.Module
        A new module: ``model``'s architecture with the recorded units cut out
        (:func:`convexnet.nn.shrink`) and the file's weights, plain (no pruning masks), in
        evaluation mode.
    """
    checks.check_model(model)
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise InvalidInputError("load reads safetensors files; pip install safetensors.") from None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:
        raise InvalidInputError(f"cannot read {str(path)!r} as safetensors ({exc}).") from None
    try:
        info = json.loads(metadata["convexnet"])
        if info.get("format") != FORMAT:
            raise ValueError(info.get("format"))
    except (KeyError, ValueError, TypeError):
        raise InvalidInputError(f"{str(path)!r} was not written by convexnet.nn.export (no "
                                "'convexnet' metadata); load it with safetensors.torch.load_file."
                                ) from None
    copy = capture.working_copy(model).cpu()
    make_permanent(copy)
    if info["removed"]:
        groups = unit_groups(copy)
        names = {group.name for group in groups}
        unknown = [name for name in info["removed"] if name not in names]
        if unknown:
            raise InvalidInputError(f"{str(path)!r} removed units of {unknown}, which this "
                                    "architecture does not have; pass the model it was exported "
                                    "from.")
        copy = apply_removal(copy, groups, info["removed"])
    tensors = _unpack(tensors, info["layouts"])
    try:
        copy.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise InvalidInputError(f"the weights in {str(path)!r} do not fit the architecture given "
                                f"({str(exc).splitlines()[0]} ...); pass the model they were "
                                "exported from.") from None
    return copy.eval()
