"""Weight-only compression of a generative decoder: the memory-bound part of generation.

Rules:
1. Generation reads every weight once per token: weights are compressed (INT4 group-wise or INT8), activations
   stay in float. Asymmetric by default; symmetric with the profile's `symmetric`. An NPU target always gets
   symmetric, channel-wise INT4 (what OpenVINO's NPU LLM pipeline runs).
2. The group size is the profile's; where a weight's input channels do not divide by it, the largest power of
   two below it that divides every weight's is used, and the notes say so. Group size -1 is channel-wise.
3. The LM head (and, in OpenVINO, the embedding table) takes the profile's `head` precision: "int8" keeps them
   at 8 bits (their error reaches every token's distribution directly), "int4" compresses them like the rest.
   ONNX Runtime's embedding lookup has a 4-bit form only (GatherBlockQuantized, opset 21: decoders are exported
   at 21): with "int8" its table stays FP32, with "int4" it is INT4. Tiny Llama of the tests: the INT4 table cuts
   the artifact from 590 to 363 KB and next-token agreement from 96.6% to 95.7%, KL 0.0004 -> 0.0011, identical
   continuations 78% -> 66%; Qwen2.5-0.5B's FP32 table is 544 MB of the 879 MB `cpu` artifact.
4. ONNX Runtime: `MatMulNBits` (onnxruntime's MatMulNBitsQuantizer), accuracy level 4 (INT8 compute of the
   activations on CPUs with VNNI). OpenVINO: a stateful IR (the KV cache held in the infer request) compressed by
   NNCF `compress_weights`.
5. The OpenVINO IR of a Hugging Face model is converted from PyTorch by optimum-intel's exporter: its attention
   becomes OpenVINO's ScaledDotProductAttention, which the CPU plugin fuses with the KV-cache state (tiny Llama:
   time per output token 0.8 -> 0.5 ms against the IR converted from ONNX, where attention stays MatMul + Softmax
   and the cache is concatenated each step). An ONNX decoder is converted and made stateful (rule 4).
6. With the profile's `data_aware` (OpenVINO INT4), NNCF's AWQ and scale estimation run on the calibration texts
   (held out from evaluation), each a prefill of the stateful model; ONNX Runtime's artifact is round-to-nearest.
7. An encoder-decoder (runtimes/generation.py rule 4): every graph is compressed alike, the encoder's weights too
   (no head of its own). ONNX Runtime takes the merged decoder (`If` branches included) and the encoder; OpenVINO
   the encoder and the decoder's two halves (its first step, and with past as the artifact), converted from the
   ONNX graphs with their caches explicit, channel-wise. Data-aware compression is not run on them. A static-shape
   target (an NPU) is refused: its decoder steps would need static shapes edgekit does not build yet.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .. import graph
from ..errors import InternalError, UsageError, first_line
from ..runtimes.generation import ENCODER, FIRST_STEP, PAST_STEP, encoder_of
from .base import StepInput, StepResult, step

HEAD_PRECISIONS = ("int8", "int4")


def matmul_weights(model) -> list[int]:
    """The input channel count of every MatMul's constant weight (those in a merged decoder's If branches too)."""
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    return [inits[node.input[1]][0] for node in graph.all_nodes(model.graph)
            if node.op_type == "MatMul" and len(node.input) == 2 and len(inits.get(node.input[1], ())) == 2]


def fitting_group(channels: list[int], wanted: int) -> tuple[int, str]:
    """Rule 2: (group size, a note when it is not the one asked for)."""
    if wanted <= 0 or not channels or all(c % wanted == 0 for c in channels):
        return wanted, ""
    size = 1 << int(math.log2(wanted))
    while size > 1 and any(c % size for c in channels):
        size //= 2
    return size, (f"group size {size}, not {wanted}: the weights' input channels ({', '.join(map(str, sorted(set(channels))))}) "
                  f"do not all divide by {wanted}")


def head_node(model) -> str | None:
    """The MatMul that computes `logits` (the LM head)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    name = "logits"
    for _ in range(4):  # through a Cast or Reshape or two
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "MatMul":
            return node.name
        name = node.input[0]
    return None


def _settings(b, bits: int, group: int, head: str) -> dict[str, Any]:
    gen = b.profile
    return {"weights": f"int{bits}", "group_size": group, "symmetric": _symmetric(b), "head": head,
            "activations": "float (weight-only)", "ratio": 1.0, "max_prompt_len": gen.generation_max_prompt_len}


def _symmetric(b) -> bool:
    return b.profile.generation_symmetric or b.target.device == "NPU"


@step("compress weights (MatMulNBits)")
def compress_onnx(inp: StepInput) -> StepResult:
    """Rule 4, ONNX Runtime."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    b = inp.build
    bits = 4 if b.precision == "int4" else 8
    model = onnx.load(str(inp.path))
    weights = matmul_weights(model)
    head = head_node(model)
    wanted = b.profile.generation_group_size if b.profile.generation_group_size > 0 else 128
    group, note = fitting_group(weights, wanted)
    notes = [note] if note else []
    if b.profile.generation_group_size <= 0:
        notes.append("ONNX Runtime's MatMulNBits has no channel-wise INT4: blocks of "
                     f"{group} input channels are used instead")
    keep_head = b.profile.generation_head == "int8" and head is not None and bits == 4
    lookup = b.profile.generation_head == "int4" and graph.opset(model) >= 21  # rule 3: a 4-bit lookup, asked for

    def packed(model, bits: int, **which):  # one pass of ONNX Runtime's quantiser over the nodes `which` selects
        quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=max(group, 16), is_symmetric=_symmetric(b),
                                         accuracy_level=4, **which)
        quantizer.process()
        return quantizer.model.model

    encoder = encoder_of(inp.path)
    try:
        if encoder is not None:  # rule 7
            onnx.save(packed(onnx.load(str(encoder)), bits), str(b.artifact.with_name(encoder.name)))
            notes.append(f"the encoder's weight MatMuls INT{bits} too (MatMulNBits)")
        model = packed(model, bits, nodes_to_exclude=[head] if keep_head else [])
        if keep_head:
            model = packed(model, 8, nodes_to_include=[head])
        if lookup:
            model = packed(model, 4, op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),))
    except Exception as exc:
        raise InternalError(f"ONNX Runtime weight compression failed: {first_line(exc)}") from exc
    onnx.save(model, str(b.artifact))
    matmuls = graph.count_ops(model.graph, "MatMulNBits")
    tables = graph.count_ops(model.graph, "GatherBlockQuantized")
    notes.append(f"{matmuls} of {len(weights)} weight MatMuls as MatMulNBits (INT{bits}"
                 + (", the LM head INT8)" if keep_head else ")")
                 + ("; the embedding table INT4 (GatherBlockQuantized)" if tables else
                    "; the embedding table stays FP32 (ONNX Runtime's lookup has no 8-bit form; head = \"int4\" makes it INT4)"))
    return StepResult(b.artifact, {**_settings(b, bits, group, "int8" if keep_head else f"int{bits}"),
                                   "format": "MatMulNBits (com.microsoft)", "accuracy_level": 4}, notes)


def _from_pytorch(b) -> Any:
    """Rule 5: the Hugging Face model converted by optimum-intel's exporter (stateful, FP32: edgekit compresses)."""
    import openvino as ov
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    out = b.workdir / "openvino-export"
    main_export(str(b.source_dir), out, task="text-generation-with-past", stateful=True, ov_config=OVConfig(dtype="fp32"),
                convert_tokenizer=False, library_name="transformers", trust_remote_code=b.trust_remote_code)
    model = ov.Core().read_model(str(out / "openvino_model.xml"))
    if not model.get_sinks():
        raise InternalError("optimum-intel's export of the decoder is not stateful (no KV-cache state)")
    return model


def _stateful(model_path: Path, config: dict | None):
    """The ONNX decoder as an OpenVINO model with its KV cache made state (rule 4)."""
    import openvino as ov
    from optimum.exporters.openvino.stateful import patch_stateful

    model = ov.convert_model(str(model_path))
    patch_stateful(SimpleNamespace(model_type=(config or {}).get("model_type", ""), is_encoder_decoder=False), model)
    if not model.get_sinks():
        raise InternalError(f"{model_path.name}: the KV cache could not be made OpenVINO state (no past_key_values / present pairs)")
    return model


def _data_aware(nncf, model, b) -> dict[str, Any]:
    """Rule 6: NNCF's AWQ and scale estimation, on the calibration texts run as the stateful model takes them."""
    import numpy as np

    from ..runtimes.generation import step_feed

    wanted = b.profile.generation_data_aware
    if not wanted or not b.calibration:
        return {}
    names = {n for i in model.inputs for n in i.get_names()}

    def prefill(feed):  # the whole text from an empty cache, as the generation loop's first step feeds it
        inputs = step_feed(np.asarray(feed["input_ids"], dtype=np.int64), 0, names)
        return {k: v for k, v in inputs.items() if k in names}

    return {"dataset": nncf.Dataset(b.calibration, prefill), "awq": "awq" in wanted,
            "scale_estimation": "scale_estimation" in wanted, "subset_size": len(b.calibration)}


def _nncf_mode(nncf, b) -> Any:
    """The NNCF mode for the build's precision and symmetry (rule 1)."""
    return {("int4", False): nncf.CompressWeightsMode.INT4_ASYM, ("int4", True): nncf.CompressWeightsMode.INT4_SYM,
            ("int8", False): nncf.CompressWeightsMode.INT8_ASYM,
            ("int8", True): nncf.CompressWeightsMode.INT8_SYM}[(b.precision, _symmetric(b))]


def _compress_seq2seq(nncf, inp: StepInput) -> StepResult:
    """Rule 7, OpenVINO: the encoder and the decoder's two halves converted from ONNX and compressed alike."""
    import openvino as ov

    b = inp.build
    if b.target.static_shapes:
        raise UsageError(f"target {b.target.name}: an encoder-decoder (T5, BART, Whisper) needs static shapes for every "
                         "decoder step on this device, which edgekit does not build yet; use intel-cpu or intel-gpu")
    folder = inp.path.parent
    graphs = {b.artifact: folder / f"{PAST_STEP}.onnx", b.artifact.with_name(ENCODER + ".xml"): folder / f"{ENCODER}.onnx",
              b.artifact.with_name(FIRST_STEP + ".xml"): folder / f"{FIRST_STEP}.onnx"}
    settings: dict[str, Any] = {}
    mode = None
    for out, onnx_file in graphs.items():
        if not onnx_file.is_file():
            raise InternalError(f"the encoder-decoder export has no {onnx_file.name}")
        model = ov.convert_model(str(onnx_file))
        if b.precision in ("int4", "int8"):
            mode = _nncf_mode(nncf, b)
            try:  # channel-wise: the decoders' halves are small; group-wise INT4 needs every width to divide
                model = nncf.compress_weights(model, mode=mode, **({"group_size": -1, "ratio": 1.0} if b.precision == "int4" else {}))
            except Exception as exc:
                raise InternalError(f"NNCF weight compression of {onnx_file.name} failed: {first_line(exc)}") from exc
        ov.save_model(model, str(out))
    if mode is not None:
        settings = {**_settings(b, 4 if b.precision == "int4" else 8, -1, b.precision), "format": f"NNCF {mode.value}"}
    return StepResult(b.artifact, settings, [
        "converted from the ONNX graphs with their caches explicit: the encoder, the decoder's first step and the decoder "
        "with past (OpenVINO's CPU plugin cannot run the merged decoder's If)"
        + (f"; every weight {mode.value}, channel-wise" if mode is not None else "")])


@step("convert to OpenVINO and compress weights (NNCF)")
def compress_openvino(inp: StepInput) -> StepResult:
    """Rule 4, OpenVINO: INT4 or INT8 weights; FP32 (`precision` fp32) is the stateful IR uncompressed."""
    import onnx
    import openvino as ov

    from .quantize_ov import import_nncf

    nncf = import_nncf()
    b = inp.build
    if encoder_of(inp.path) is not None:  # rule 7
        return _compress_seq2seq(nncf, inp)
    if b.source_dir is not None:
        model = _from_pytorch(b)
        notes = ["converted from the PyTorch model by optimum-intel's exporter (attention as OpenVINO's ScaledDotProductAttention, "
                 "the KV cache as state: what OpenVINO GenAI runs)"]
    else:
        model = _stateful(inp.path, b.model_config)
        notes = ["converted from the ONNX decoder, its KV cache made OpenVINO state (stateful IR, beam_idx input)"]
    settings: dict[str, Any] = {}
    if b.precision in ("int4", "int8"):
        graph = onnx.load(str(inp.path), load_external_data=False)
        wanted = -1 if b.target.device == "NPU" else b.profile.generation_group_size
        group, note = fitting_group(matmul_weights(graph), wanted) if b.precision == "int4" else (-1, "")
        notes += [note] if note else []
        mode = _nncf_mode(nncf, b)
        kwargs = {"group_size": group, "ratio": 1.0, "all_layers": b.profile.generation_head == "int4"} if b.precision == "int4" else {}
        refinements = _data_aware(nncf, model, b) if b.precision == "int4" else {}
        kwargs.update(refinements)
        try:
            model = nncf.compress_weights(model, mode=mode, **kwargs)
        except Exception as exc:
            raise InternalError(f"NNCF weight compression failed: {first_line(exc)}") from exc
        head = "int4" if b.precision == "int4" and b.profile.generation_head == "int4" else "int8"
        settings = {**_settings(b, 4 if b.precision == "int4" else 8, group, head), "format": f"NNCF {mode.value}",
                    **({"data_aware": [k for k in ("awq", "scale_estimation") if refinements.get(k)],
                        "calibration": f"{refinements['subset_size']} texts"} if refinements else {})}
        if refinements:
            notes.append(f"data-aware: {', '.join(settings['data_aware'])} on {refinements['subset_size']} calibration texts")
        notes.append(f"weights {mode.value}" + ((f", group size {group}" if group > 0 else ", channel-wise") if b.precision == "int4" else ", per channel")
                     + (f"; embedding and LM head {head}" if b.precision == "int4" else ""))
    ov.save_model(model, str(b.artifact))
    return StepResult(b.artifact, settings, notes)
