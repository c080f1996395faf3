#!/usr/bin/env python3
"""Logits of a model directory with a PEFT LoRA adapter attached, by transformers + peft (the
independent reference for koff's PEFT export)."""
import argparse

import numpy as np
import torch
import transformers
from peft import PeftModel


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, a.adapter)
    model.eval()
    ids = torch.tensor([[int(x) for x in a.ids.split(",")]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float().numpy()
    np.save(a.out, logits)


if __name__ == "__main__":
    main()
