#!/usr/bin/env python3
"""Hugging Face transformers as the reference for config.json and tensor names/shapes (engine/io).

    transformers_reference.py DIR

For every DIR/configs/<name>/config.json (written by koff's save_config), loads it with AutoConfig,
builds the model transformers makes of it, and writes
    DIR/configs/<name>/reference.json   {"tensors": {name: shape}, "head_dim": .., "rope": {..}}
(the persistent state dict on the meta device; tied lm_head left out, as save_pretrained leaves it out)
and saves a small randomly initialised model with save_pretrained to DIR/saved/<name>/ (sharded when
the config's name ends in "_sharded"), for koff to read back: transformers' own config.json and
safetensors layout.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402


def rope_of(cfg):
    # transformers 5 keeps theta and scaling in rope_parameters; 4.x in rope_theta / rope_scaling.
    params = getattr(cfg, "rope_parameters", None)
    if params is None:
        params = dict(getattr(cfg, "rope_scaling", None) or {})
        params["rope_theta"] = cfg.rope_theta
    out = {"rope_theta": float(params["rope_theta"]),
           "rope_type": params.get("rope_type", params.get("type", "default"))}
    for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
        if key in params and params[key] is not None:
            out[key] = float(params[key])
    return out


def main():
    root = sys.argv[1]
    for name in sorted(os.listdir(os.path.join(root, "configs"))):
        folder = os.path.join(root, "configs", name)
        cfg = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
        tensors = {k: list(v.shape) for k, v in model.state_dict().items()}
        if cfg.tie_word_embeddings:
            tensors.pop("lm_head.weight", None)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        with open(os.path.join(folder, "reference.json"), "w") as f:
            json.dump({"tensors": tensors, "head_dim": head_dim, "rope": rope_of(cfg),
                       "architecture": type(model).__name__}, f, indent=1)

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg)
        shard = "8KB" if name.endswith("_sharded") else "5GB"
        model.save_pretrained(os.path.join(root, "saved", name), max_shard_size=shard)
    print(f"transformers wrote reference shapes and models under {root}")


if __name__ == "__main__":
    main()
