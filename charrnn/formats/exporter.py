"""Export a checkpoint for use outside charrnn: an ONNX graph any ONNX runtime can run, or the weights
as safetensors.

ONNX: the standard LSTM/GRU/RNN operators, one per layer, with PyTorch's gate blocks reordered to
ONNX's (LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h with linear_before_reset=1, which is PyTorch's
GRU), the input as OneHot (or the embedding as Gather), the decoder as MatMul + Add, and the recurrent
state as graph inputs and outputs so a caller can feed text piece by piece. The vocabulary (characters
in id order) is in the model's metadata_props as JSON: the ids only mean something with it
(ml5-library#338: the same weights gave garbage under another character order).

safetensors: the weights under their PyTorch state_dict names (`rnn.weight_ih_l0`, `decoder.weight`,
...), loadable into torch.nn.LSTM/GRU/RNN + Linear (+ Embedding) with load_state_dict, and the
checkpoint's meta JSON and vocabulary in the file's metadata.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..checkpoints import npz as checkpoint, store
from ..errors import CharrnnError, UsageError
from ..engine.params import GATES
from ..userfiles import refuse_input

FORMATS = ("onnx", "safetensors")
SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors"}
OPSET = 17  # LSTM/GRU/RNN-14, OneHot-11, Squeeze-13: what runtimes from 2022 on all run
IR_VERSION = 8  # the IR version of opset 17; a newer one would be refused by older runtimes
# ONNX gate block j is PyTorch's block GATE_ORDER[cell][j].
GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}
OPERATOR = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
_PACKAGES = {"onnx": ("onnx",), "safetensors": ("safetensors",)}


def _need(fmt: str, module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        # exit 2 like plot and sweep without their extra: the command cannot run as installed
        raise UsageError(f"charrnn export --format {fmt} needs the {module.split('.')[0]} package",
                         "pip install 'charrnn[export]'") from None


def _reorder(w: np.ndarray, cell: str) -> np.ndarray:
    """Stacked gate blocks (rows) from PyTorch's order to ONNX's."""
    blocks = np.split(w, GATES[cell], axis=0)
    return np.concatenate([blocks[j] for j in GATE_ORDER[cell]], axis=0)


def start_id(vocab) -> int:
    """The id charrnn feeds first when sampling without a prime ('\\n', else id 0; see generate.py)."""
    return vocab.chars.index("\n") if "\n" in vocab.chars else 0


def onnx_model(loaded: store.Loaded):
    """The ONNX ModelProto of a checkpoint. Inputs: input_ids int64 (batch, seq), h0 (and c0 for an
    LSTM) float (layers, batch, hidden). Outputs: logits (batch, seq, vocab), hn (and cn)."""
    onnx = _need("onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    s, P = loaded.model.shape, loaded.model.params
    cell, H, L, V = s.cell, s.hidden_size, s.num_layers, s.vocab_size
    inits, nodes = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{len(nodes)}", **attrs))

    node("Transpose", ["input_ids"], ["ids_tb"], perm=[1, 0])  # the operators run time-major
    if s.embedding_size:
        node("Gather", [const("encoder.weight", P["encoder.weight"]), "ids_tb"], ["x_l0"])
    else:  # one-hot input: the LSTM's own input GEMM then picks the column of W_ih, exactly
        node("OneHot", ["ids_tb", const("vocab_size", np.array([V], np.int64)),
                        const("one_hot_values", np.array([0, 1], np.float32))], ["x_l0"], axis=-1)
    squeeze_axes = const("squeeze_axes", np.array([1], np.int64))
    states = ["h", "c"] if cell == "lstm" else ["h"]
    for k in range(L):
        w = const(f"W_l{k}", _reorder(P[f"rnn.weight_ih_l{k}"], cell)[None])
        r = const(f"R_l{k}", _reorder(P[f"rnn.weight_hh_l{k}"], cell)[None])
        b = const(f"B_l{k}", np.concatenate([_reorder(P[f"rnn.bias_ih_l{k}"], cell),
                                             _reorder(P[f"rnn.bias_hh_l{k}"], cell)])[None])
        layer = [const(f"layer_{k}_start", np.array([k], np.int64)), const(f"layer_{k}_end", np.array([k + 1], np.int64))]
        for st in states:
            node("Slice", [f"{st}0", *layer], [f"{st}0_l{k}"])
        extra = {"linear_before_reset": 1} if cell == "gru" else {}
        node(OPERATOR[cell], [f"x_l{k}", w, r, b, "", *[f"{st}0_l{k}" for st in states]],
             [f"y_l{k}", *[f"{st}n_l{k}" for st in states]], hidden_size=H, **extra)
        node("Squeeze", [f"y_l{k}", squeeze_axes], [f"x_l{k + 1}"])  # (seq, 1, batch, H) -> (seq, batch, H)
    for st in states:
        node("Concat", [f"{st}n_l{k}" for k in range(L)], [f"{st}n"], axis=0)
    node("MatMul", [f"x_l{L}", const("decoder.weight_t", P["decoder.weight"].T)], ["decoded"])
    node("Add", ["decoded", const("decoder.bias", P["decoder.bias"])], ["logits_tb"])
    node("Transpose", ["logits_tb"], ["logits"], perm=[1, 0, 2])

    state_shape = [L, "batch", H]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    inputs += [helper.make_tensor_value_info(f"{st}0", TensorProto.FLOAT, state_shape) for st in states]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", V])]
    outputs += [helper.make_tensor_value_info(f"{st}n", TensorProto.FLOAT, state_shape) for st in states]
    doc = (f"charrnn {cell.upper()} {L}x{H} character model. input_ids: character ids (batch, seq) in the "
           f"order of metadata 'vocab'; {' and '.join(f'{st}0' for st in states)}: the state (layers, batch, "
           "hidden), zeros to start; logits: next-character scores (batch, seq, vocab); "
           f"{' and '.join(f'{st}n' for st in states)}: the state after the last character.")
    graph = helper.make_graph(nodes, "charrnn", inputs, outputs, initializer=inits, doc_string=doc)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="charrnn",
                              producer_version=__version__, ir_version=IR_VERSION, doc_string=doc)
    info = {"cell": cell, "num_layers": L, "hidden_size": H, "vocab_size": V, "embedding_size": s.embedding_size,
            "start_id": start_id(loaded.vocab), "step": loaded.meta.get("progress", {}).get("step"),
            "source": str(loaded.path)}
    helper.set_model_props(model, {"vocab": _json(list(loaded.vocab.chars)),
                                   "charrnn": _json(info)})
    onnx.checker.check_model(model)
    return model


def _json(value) -> str:
    """JSON for a metadata string, which must be valid UTF-8: characters as they are, unless the
    vocabulary holds a lone surrogate, which only a \\u escape can carry (json.loads reads either back)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def safetensors_bytes(loaded: store.Loaded) -> bytes:
    """The weights (float32, PyTorch names) and metadata {meta, vocab, format} as a safetensors file."""
    st = _need("safetensors", "safetensors.numpy")
    tensors = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in store.model_arrays(loaded.model).items()}
    metadata = {"format": "pt", "meta": _json(loaded.meta),
                "vocab": _json(list(loaded.vocab.chars))}
    return st.save(tensors, metadata=metadata)


def export(ckpt: str | os.PathLike, out: str | os.PathLike | None = None, fmt: str | None = None,
           force: bool = False) -> Path:
    """Write CHECKPOINT as `fmt` (onnx | safetensors; default: from out's suffix) to `out` (default: the
    checkpoint's path with the format's suffix), atomically. An existing file is replaced only with
    force, and never the checkpoint itself."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", "use onnx or safetensors")
    if fmt is None:
        fmt = SUFFIXES.get(Path(out).suffix.lower()) if out is not None else None
        if fmt is None:
            what = f"from the file name {os.fspath(out)!r}" if out is not None else "without --format or -o"
            raise UsageError(f"cannot tell the export format {what}", "pass --format onnx or --format safetensors")
    for pkg in _PACKAGES[fmt]:  # before the (slow) load, so a missing extra fails at once
        _need(fmt, pkg)
    loaded = store.load(ckpt)
    target = Path(out) if out is not None else loaded.path.with_suffix("." + fmt)
    if target.is_dir():
        raise UsageError(f"{target} is a directory", "pass a file name with -o, e.g. model.onnx")
    refuse_input(target, {"the checkpoint being exported": loaded.path})
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", "add --force to replace it, or choose another -o file")
    data = onnx_model(loaded).SerializeToString() if fmt == "onnx" else safetensors_bytes(loaded)
    try:
        checkpoint.atomic_write(target, lambda f: f.write(data))
    except OSError as e:
        raise UsageError(f"cannot write {target}: {e.strerror or e}", "choose a writable -o path") from None
    return target
