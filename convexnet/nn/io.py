"""Files of the ``convexnet prune`` command: the model, the calibration data, the pruned model.

MODEL
    * a state dict, with ``--arch module:callable`` naming a function that builds the
      architecture: a torch file (``torch.save(model.state_dict())``, loaded with
      ``weights_only=True``) or a ``.safetensors`` file. A state dict of a pruned model
      (``weight_orig``/``weight_mask`` keys) is loaded by re-creating the pruning first;
    * or, only with ``trust_pickle`` (``--trust-pickle``), a whole module saved with
      ``torch.save(model)`` (any suffix but ``.safetensors``), loaded with
      ``torch.load(..., weights_only=False)``: unpickling runs code from the file, so this is an
      explicit opt-in for files you trust, and the module's class must be importable.

    Modules are imported from ``sys.path`` as it is: never from the current folder unless the user
    put it there (``PYTHONPATH``), so that a stray ``numpy.py`` or ``tqdm.py`` there is not run.
DATA
    One tensor of calibration inputs: ``.npy`` (``numpy.save``), ``.safetensors`` (a single tensor,
    or the one named ``inputs``) or a torch file (``torch.save(tensor)``, or a dict with key
    ``inputs``), loaded with ``weights_only=True``; or a text file (``.txt``, ``.py``, ``.md``)
    for a byte-level language model: its bytes as token ids, in windows of ``--context``
    (:func:`load_text_calibration`).
OUT
    MODEL's format: a whole module, a torch state dict, or safetensors. Pruning is made permanent
    first (``torch.nn.utils.prune.remove`` on every pruned tensor) so that OUT loads into the plain
    architecture, unless ``keep_masks`` (then ``weight_orig``/``weight_mask`` are saved, and the
    masks keep the zeros through further training). OUT is replaced atomically
    (:func:`convexnet._atomic.atomic_write`): it is the old file or the complete new one, even when
    OUT is MODEL and the run is killed mid-write.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import prune

from .._atomic import atomic_write
from ..errors import InvalidInputError

__all__ = ["LoadedModel", "check_paths", "load_model", "load_calibration", "save_model",
           "build_architecture", "load_text_calibration", "TEXT_SUFFIXES"]

#: Calibration files read as text (byte-level token ids, for language models).
TEXT_SUFFIXES = (".txt", ".py", ".md", ".text")

_SAFETENSORS = ".safetensors"


@dataclass
class LoadedModel:
    """A model and the format it came in: "module", "state_dict" or "safetensors"."""

    model: torch.nn.Module
    format: str


def check_paths(model_path, data_path, out_path) -> None:
    """The checks on file names that can be made before reading anything."""
    for label, path in (("MODEL", model_path), ("--calibration", data_path)):
        if not Path(path).is_file():
            raise InvalidInputError(f"{label} {str(path)!r} is not a file.")
    out = Path(out_path)
    if not out.parent.is_dir():
        raise InvalidInputError(f"--out {str(out_path)!r}: the folder {str(out.parent)!r} does not exist.")
    safetensors_in = Path(model_path).suffix == _SAFETENSORS
    if safetensors_in != (out.suffix == _SAFETENSORS):
        kind, suffix = ("safetensors", ".safetensors") if safetensors_in else ("a torch file", ".pt")
        raise InvalidInputError(f"--out {str(out_path)!r} is written in MODEL's format ({kind}); "
                                f"give it the suffix {suffix}.")


_PYTHONPATH_HINT = ("modules are imported from the installed packages and PYTHONPATH only, never "
                    "from the current folder: to use a local file, run with "
                    "PYTHONPATH=/folder/of/the/module")


def build_architecture(spec: str) -> torch.nn.Module:
    """Call ``module:callable`` (imported from ``sys.path`` as it is) with no arguments."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidInputError(f"--arch must be 'module:callable' (e.g. 'mynets:build'); got {spec!r}.")
    try:
        target = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"--arch {spec!r} cannot be imported ({exc}); "
                                f"{_PYTHONPATH_HINT}.") from None
    if not callable(target):
        raise InvalidInputError(f"--arch {spec!r} is not callable.")
    model = target()
    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(f"--arch {spec!r} returned a {type(model).__name__}, not a "
                                "torch.nn.Module.")
    return model


def _read_safetensors(path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise InvalidInputError(f"{path} is a safetensors file but the safetensors package is "
                                "not installed; pip install safetensors.") from None
    try:
        return load_file(str(path))
    except Exception as exc:
        raise InvalidInputError(f"cannot read {path} as safetensors ({exc}).") from None


def _torch_load(path, *, weights_only: bool):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=weights_only)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("; a whole pickled module needs --trust-pickle instead of --arch" if weights_only
                else "; a whole module's class must be importable (" + _PYTHONPATH_HINT
                + "), or save a state dict and pass --arch")
        raise InvalidInputError(f"cannot read {path} as a torch file ({first}){hint}.") from None


def _load_state(model: torch.nn.Module, state: dict, path) -> None:
    # A state dict of a pruned model holds <name>_orig and <name>_mask: re-create the pruning so
    # that the keys match, then load.
    for key in state:
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            owner, _, name = key[:-5].rpartition(".")
            try:
                prune.identity(model.get_submodule(owner), name)
            except (AttributeError, KeyError):
                continue        # not in the architecture: load_state_dict names the mismatch
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidInputError(f"the state dict in {path} does not fit --arch "
                                f"({str(exc).splitlines()[0]} ...).") from None


def load_model(path, arch: str | None, *, trust_pickle: bool = False) -> LoadedModel:
    """Read MODEL (module docstring): ``arch`` for a state dict, ``trust_pickle`` for a whole module.

    Raises
    ------
    InvalidInputError
        When neither is given for a torch file (nothing is unpickled then), when both are given,
        or when the file does not hold what they announce.
    """
    if arch is not None and trust_pickle:
        raise InvalidInputError("--arch (a state dict) and --trust-pickle (a whole pickled module) "
                                "exclude each other; give one.")
    if Path(path).suffix == _SAFETENSORS:
        if arch is None:
            raise InvalidInputError(f"{path} is a safetensors state dict: give --arch "
                                    "module:callable to build the architecture.")
        model = build_architecture(arch)
        _load_state(model, _read_safetensors(path), path)
        return LoadedModel(model, "safetensors")
    if arch is not None:
        state = _torch_load(path, weights_only=True)
        if not isinstance(state, dict):
            raise InvalidInputError(f"{path} holds a {type(state).__name__}, not a state dict; "
                                    "for a whole saved module pass --trust-pickle instead of "
                                    "--arch.")
        model = build_architecture(arch)
        _load_state(model, state, path)
        return LoadedModel(model, "state_dict")
    if not trust_pickle:
        raise InvalidInputError(
            f"{path}: give --arch module:callable when it is a state dict (torch.save("
            "model.state_dict()) or .safetensors), or --trust-pickle to unpickle a whole module "
            "saved with torch.save(model); unpickling runs code from the file, so pass "
            "--trust-pickle for files you trust only.")
    loaded = _torch_load(path, weights_only=False)
    if isinstance(loaded, dict):
        raise InvalidInputError(f"{path} holds a state dict: give --arch module:callable to build "
                                "the architecture it belongs to.")
    if not isinstance(loaded, torch.nn.Module):
        raise InvalidInputError(f"{path} holds a {type(loaded).__name__}, not a torch.nn.Module.")
    return LoadedModel(loaded, "module")


def load_calibration(path) -> torch.Tensor:
    """Read DATA (module docstring) as a CPU tensor."""
    suffix = Path(path).suffix
    if suffix == ".npy":
        try:
            return torch.as_tensor(np.load(str(path), allow_pickle=False))
        except Exception as exc:
            raise InvalidInputError(f"cannot read {path} as a .npy array ({exc}).") from None
    content = _read_safetensors(path) if suffix == _SAFETENSORS else _torch_load(path, weights_only=True)
    if isinstance(content, dict):
        if "inputs" in content:
            content = content["inputs"]
        elif len(content) == 1:
            content = next(iter(content.values()))
        else:
            raise InvalidInputError(f"{path} holds several tensors ({sorted(content)[:5]}); name "
                                    "the calibration inputs 'inputs'.")
    if not isinstance(content, torch.Tensor):
        raise InvalidInputError(f"{path} holds a {type(content).__name__}; --calibration needs one "
                                "tensor of inputs.")
    return content


def load_text_calibration(path, *, context: int, sequences: int | None) -> torch.Tensor:
    """A text file as byte-level token ids: consecutive windows of ``context`` bytes.

    Returns
    -------
    LongTensor, shape (B, context)
        The file's first ``B * context`` bytes, ``B = min(len // context, sequences)``.
    """
    if context < 1:
        raise InvalidInputError(f"--context must be >= 1; got {context}.")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read --calibration {str(path)!r} ({exc}).") from None
    count = len(data) // context if sequences is None else min(len(data) // context, sequences)
    if count == 0:
        raise InvalidInputError(f"{path} has {len(data)} bytes, fewer than one sequence of "
                                f"--context {context}; give a longer text or a shorter context.")
    ids = np.frombuffer(data[:count * context], dtype=np.uint8).astype(np.int64)
    return torch.from_numpy(ids.reshape(count, context).copy())


def make_permanent(model: torch.nn.Module) -> None:
    """``prune.remove`` every pruned tensor of ``model``."""
    for module in model.modules():
        names = [hook._tensor_name for hook in list(module._forward_pre_hooks.values())
                 if isinstance(hook, prune.BasePruningMethod)]
        for name in names:
            prune.remove(module, name)


def save_model(loaded: LoadedModel, path, *, keep_masks: bool) -> None:
    """Write the pruned model to OUT in the format it was read in (module docstring)."""
    model = loaded.model.cpu()
    if not keep_masks:
        make_permanent(model)
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    try:
        with atomic_write(path) as handle:
            if loaded.format == "module":
                torch.save(model, handle)
            elif loaded.format == "state_dict":
                torch.save(state, handle)
            else:
                from safetensors.torch import save

                # safetensors refuses tensors that share memory (tied weights): independent copies.
                handle.write(save({key: value.clone() for key, value in state.items()}))
    except OSError as exc:
        raise InvalidInputError(f"cannot write --out {str(path)!r} ({exc}).") from None
