"""`embed`: one bundle target as files a firmware build consumes.

Rules:
1. The input is a target folder of a bundle (`BUNDLE/TARGET`, with `runtime.json`, and `manifest.json`
   one level up), read by the one bundle reader (bundle.read_bundle: the artifact runtime.json names must
   lie inside the folder). Its artifact files and its `runtime.json` must match the manifest's sha256, and
   the manifest its own `artifact_sha256`: a firmware build never embeds a damaged artifact or settings
   other than those verified (run `edgekit verify` for the full check). Length buckets and the rest of
   what the artifact ran with come from its `RuntimeRecord`, and the buckets from its runtime.
2. `c`: `<prefix>.h` and `<prefix>.c`. The artifact is a `const unsigned char` array aligned to `align`
   bytes (GCC/Clang `__attribute__((aligned))`, MSVC `__declspec(align)`, else unaligned: C99 has no
   alignment syntax), with its length and sha256; an OpenVINO IR is two arrays (`model`: the .xml,
   `weights`: the .bin). `#define`s describe each input and output (name, dtype, shape) and, for an
   input quantised as it enters the graph (a QDQ ONNX `QuantizeLinear` fed by the input) or an output
   dequantised as it leaves, the scale and zero point; otherwise `_QUANTIZED 0` says the interface is float.
   The runtime is named with the version the artifact was built and verified with, the minimum tested.
   The output compiles with `gcc -std=c99 -Wall -Wextra -pedantic` without a warning.
3. `bin`: the target's files, byte for byte, plus `manifest.json`, for firmware that mounts a file system; with
   them the tokenizer, image processor and generation config the bundle holds beside the artifact (a device app
   of a language model needs its tokenizer), each checked against the manifest like the artifact.
4. The output folder is written whole or not at all (a temporary folder, then a rename). An existing
   folder is replaced only when an earlier `embed` wrote it (it has `embed.json`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .bundle import RUNTIME_RECORD, digest_edited, read_bundle, replace_folder, write_json
from .errors import UsageError
from .runtimes import RuntimeRecord
from .source import sha256_file

FORMATS = ("c", "bin")
MARKER = "embed.json"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Port:
    """One input or output of the artifact as firmware sees it."""

    name: str
    dtype: str
    shape: list[int]  # -1 for a free dimension
    scale: float | None = None  # set when the port is quantised at the graph's edge
    zero_point: int | None = None
    quantized_dtype: str | None = None


@dataclass
class TargetFiles:
    folder: Path
    bundle: Path
    record: RuntimeRecord
    files: list[Path]  # the artifact's files: model.onnx, or model.xml and model.bin
    beside: list[Path]  # the preprocessor files beside it (tokenizer, image processor, generation config): rule 3


def _open_target(path: str | Path) -> TargetFiles:
    folder = Path(path)
    if not (folder / RUNTIME_RECORD).is_file():
        raise UsageError(f"{folder}: not a bundle target folder (no runtime.json); give BUNDLE/TARGET, e.g. out/minilm/cpu")
    root = folder.resolve().parent
    if not (root / "manifest.json").is_file():
        raise UsageError(f"{folder}: its parent {root} is not an edgekit bundle (no manifest.json)")
    bundle = read_bundle(root)
    target = bundle.target(folder.resolve().name)
    files = target.files()
    listed = {e.get("path"): e.get("sha256") for e in bundle.manifest["files"] if isinstance(e, dict)}
    if digest_edited(bundle.manifest):
        raise UsageError(f"{root}/manifest.json: artifact_sha256 does not match its own file list (edited after the "
                         f"build); run `edgekit verify {root}` and recompile")
    from .stages.export import PREPROCESSOR_FILES

    beside = [target.folder / n for n in PREPROCESSOR_FILES if (target.folder / n).is_file()]
    for f in [*files, target.folder / RUNTIME_RECORD, *beside]:  # every file embed reads or copies (rule 1)
        rel = f"{target.name}/{f.name}"
        if not f.is_file():
            raise UsageError(f"{folder}: no {f.name} (the bundle is incomplete)")
        if listed.get(rel) != sha256_file(f):
            raise UsageError(f"{rel}: its sha256 does not match manifest.json; run `edgekit verify {root}` and recompile")
        if f.stat().st_size == 0:
            raise UsageError(f"{rel}: empty file; nothing to embed")
    return TargetFiles(folder, root, target.record, files, beside)


def _onnx_ports(path: Path) -> tuple[list[Port], list[Port]]:
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in g.node if n.op_type == "Constant" and n.attribute
              and n.attribute[0].name == "value"}

    def scalar(name: str):
        t = inits.get(name) or consts.get(name)
        if t is None:
            return None
        a = numpy_helper.to_array(t)
        return a if a.size == 1 else None

    def port(vi, node) -> Port:
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        p = Port(vi.name, str(helper.tensor_dtype_to_np_dtype(tt.elem_type)), shape)
        if node is not None and len(node.input) >= 2:
            scale = scalar(node.input[1])
            zp = scalar(node.input[2]) if len(node.input) >= 3 and node.input[2] else None
            if scale is not None:
                p.scale = float(scale.reshape(()))
                p.zero_point = int(zp.reshape(())) if zp is not None else 0
                p.quantized_dtype = str(zp.dtype) if zp is not None else "uint8"
        return p

    inputs = []
    for vi in g.input:
        if vi.name in inits:
            continue
        consumers = [n for n in g.node if vi.name in n.input]
        q = consumers[0] if len(consumers) == 1 and consumers[0].op_type == "QuantizeLinear" else None
        inputs.append(port(vi, q))
    outputs = []
    for vi in g.output:
        producer = next((n for n in g.node if vi.name in n.output), None)
        outputs.append(port(vi, producer if producer is not None and producer.op_type == "DequantizeLinear" else None))
    return inputs, outputs


def _ir_ports(path: Path) -> tuple[list[Port], list[Port]]:
    import openvino as ov

    model = ov.Core().read_model(str(path))

    def port(p, i: int) -> Port:
        names = sorted(p.get_names())
        shape = [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()]
        return Port(names[0] if names else f"port_{i}", str(p.get_element_type().to_dtype()), shape)

    return [port(p, i) for i, p in enumerate(model.inputs)], [port(p, i) for i, p in enumerate(model.outputs)]


_C_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-:/+()=,")


def _c_string(text: str) -> str:
    """A C string literal of `text`'s UTF-8 bytes: plain ASCII as is, every other byte an octal escape."""
    return '"' + "".join(chr(b) if b in _C_PLAIN else f"\\{b:03o}" for b in text.encode("utf-8")) + '"'


def _array(name: str, data: bytes, guard: str) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16)]
    body = ",\n  ".join(rows)
    return f"const unsigned char {name}[{len(data)}] {guard}_ALIGNED = {{\n  {body}\n}};\nconst size_t {name}_len = {len(data)};\n"


def _header(prefix: str, t: TargetFiles, arrays: list[tuple[str, Path]], inputs: list[Port], outputs: list[Port],
            align: int) -> str:
    up = prefix.upper()
    settings = t.record.settings()  # as run, or, for a target whose device was absent, as verified
    lines = [f"/* Generated by edgekit {__version__} from bundle target {t.folder.resolve().name} "
             f"({', '.join(f.name for f in t.files)}). Do not edit. */",
             f"#ifndef {up}_H", f"#define {up}_H", "", "#include <stddef.h>", "",
             f"#define {up}_RUNTIME {_c_string(t.record.runtime)}",
             "/* The version it was built and verified with: the minimum tested. */",
             f"#define {up}_RUNTIME_MIN_VERSION {_c_string(str(settings.get('version', 'unknown')).split('-')[0])}",
             f"#define {up}_DEVICE {_c_string(str(t.record.device or 'CPU'))}",
             f"#define {up}_ALIGNMENT {align}", ""]
    buckets, padded = t.record.length_buckets()
    if buckets:
        lines += [f"/* Verified and timed in length buckets: pad {', '.join(padded)} with zeros on the right to the smallest",
                  " * bucket that holds the input (reshape the model to it), and cut the outputs back to the true length. */",
                  f"#define {up}_NUM_LENGTH_BUCKETS {len(buckets)}",
                  f"#define {up}_LENGTH_BUCKETS {{ {', '.join(str(int(b)) for b in buckets)} }}", ""]
    config = settings.get("session_config") or {}
    if config:
        lines += ["/* ONNX Runtime session config entries it was verified and timed with: pass each pair to",
                  " * AddSessionConfigEntry (C API) / SessionOptions::AddConfigEntry (C++) before creating the session. */",
                  f"#define {up}_NUM_SESSION_CONFIG {len(config)}",
                  f"#define {up}_SESSION_CONFIG {{ {', '.join(f'{{ {_c_string(k)}, {_c_string(str(v))} }}' for k, v in config.items())} }}",
                  ""]
    for array, path in arrays:
        au = array.upper()
        lines += [f"/* {path.name} */", f"#define {up}_{au}_LEN {path.stat().st_size}u",
                  f"#define {up}_{au}_SHA256 {_c_string(sha256_file(path))}",
                  f"extern const unsigned char {prefix}_{array}[{path.stat().st_size}];",
                  f"extern const size_t {prefix}_{array}_len;", ""]
    for kind, ports in (("INPUT", inputs), ("OUTPUT", outputs)):
        lines.append(f"#define {up}_NUM_{kind}S {len(ports)}")
        for i, p in enumerate(ports):
            key = f"{up}_{kind}{i}"
            lines += [f"#define {key}_NAME {_c_string(p.name)}", f"#define {key}_DTYPE {_c_string(p.dtype)}",
                      f"#define {key}_RANK {len(p.shape)}",
                      f"#define {key}_SHAPE {{ {', '.join(str(d) for d in p.shape) or '0'} }}  /* -1: free dimension */"]
            if p.scale is not None:
                rule = ("quantised as it enters: q = round(x / scale) + zero_point" if kind == "INPUT"
                        else "dequantised as it leaves: x = (q - zero_point) * scale")
                lines += [f"/* a {p.dtype} interface, {rule} ({p.quantized_dtype}) */",
                          f"#define {key}_QUANTIZED 1", f"#define {key}_SCALE {p.scale!r}f",
                          f"#define {key}_ZERO_POINT {p.zero_point}", f"#define {key}_QUANTIZED_DTYPE {_c_string(p.quantized_dtype or '')}"]
            else:
                lines.append(f"#define {key}_QUANTIZED 0  /* a {p.dtype} interface */")
        lines.append("")
    lines += [f"#endif /* {up}_H */", ""]
    return "\n".join(lines)


def _source(prefix: str, arrays: list[tuple[str, Path]], align: int) -> str:
    up = prefix.upper()
    parts = [f'#include "{prefix}.h"', "",
             "/* C99 has no alignment syntax: the compiler's own, else unaligned (copy it to aligned memory then). */",
             "#if defined(__GNUC__)", f"#define {up}_ALIGNED __attribute__((aligned({align})))",
             "#else", f"#define {up}_ALIGNED", "#endif", ""]
    for array, path in arrays:
        parts.append(_array(f"{prefix}_{array}", path.read_bytes(), up))
    return "\n".join(parts)


def embed(target: str | Path, fmt: str, output: str | Path, align: int = 64, name: str | None = None) -> Path:
    """Write `target`'s artifact as C (`fmt="c"`) or raw files (`"bin"`) into the folder `output`; return it."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: unknown (known: {', '.join(FORMATS)})")
    if align < 1 or align > 4096 or align & (align - 1):
        raise UsageError(f"--align {align}: must be a power of two from 1 to 4096, e.g. 64")
    t = _open_target(target)
    prefix = name or "edgekit_" + re.sub(r"[^A-Za-z0-9_]", "_", t.folder.resolve().name)
    if not _IDENTIFIER.fullmatch(prefix):
        raise UsageError(f"--name {prefix}: not a C identifier (letters, digits and _, not starting with a digit)")
    out = Path(output).resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(f"-o {out}: exists and was not written by edgekit embed; choose another folder or remove it")
    if out == t.bundle or t.bundle in out.parents:
        raise UsageError(f"-o {out}: inside the bundle; choose a folder outside it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        if fmt == "c":
            arrays = [("model", t.files[0])] + ([("weights", t.files[1])] if len(t.files) > 1 else [])
            ports = _onnx_ports(t.files[0]) if t.files[0].suffix == ".onnx" else _ir_ports(t.files[0])
            (tmp / f"{prefix}.h").write_text(_header(prefix, t, arrays, *ports, align))
            (tmp / f"{prefix}.c").write_text(_source(prefix, arrays, align))
            written = [f"{prefix}.h", f"{prefix}.c"]
        else:
            for f in [*t.files, t.folder / RUNTIME_RECORD, *t.beside]:
                shutil.copyfile(f, tmp / f.name)
            shutil.copyfile(t.bundle / "manifest.json", tmp / "manifest.json")
            written = [f.name for f in t.files] + ["runtime.json", "manifest.json"] + [f.name for f in t.beside]
        write_json(tmp / MARKER, {"edgekit": __version__, "format": fmt, "target": t.folder.resolve().name,
                                  "files": {f.name: sha256_file(f) for f in t.files}, "written": written,
                                  **({"align": align, "name": prefix} if fmt == "c" else {})})
        os.chmod(tmp, 0o755)
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
