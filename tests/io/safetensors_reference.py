#!/usr/bin/env python3
"""Independent reference for engine/io: the `safetensors` package (its Rust reader and writer) and numpy.

    safetensors_reference.py write DIR   writes files with the reference writer, for our reader to read
    safetensors_reference.py check DIR   reads the files our writer wrote (test_io_reference.cpp) and
                                         checks every value, the layout and the metadata

Both sides compute the tensors from the same formulas (values(), below, and reference_values() in
test_io_reference.cpp), so neither side trusts the other's numbers. Exit status 0 means all checks
passed; any mismatch raises with a message naming the file and tensor.
"""
import io
import json
import os
import sys

import numpy as np
from safetensors import TensorSpec, deserialize, safe_open, serialize_file

# name, safetensors dtype, shape. The order is the reference writer's own (descending dtype, then
# name), so that a file our writer makes from this list in this order must be byte-identical.
TENSORS = [
    ("i64", "I64", [4, 2]),
    ("f64", "F64", [3, 5]),
    ("empty_f32", "F32", [0, 3]),
    ("f32", "F32", [2, 3, 4]),
    ("scalar_f32", "F32", []),
    ("i32", "I32", [9]),
    ("bf16", "BF16", [5, 3]),
    ("f16", "F16", [7]),
]
# Dtypes koff reads in headers but cannot represent: only the reference writes these.
UNREPRESENTABLE = [("u8", "U8", [5]), ("flags", "BOOL", [3])]

SPEC_DTYPE = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "U8": "uint8", "BOOL": "bool"}


def values(dtype, n):
    """The raw little-endian array of tensor element values 0..n-1 (bf16 as its uint16 bits)."""
    i = np.arange(n, dtype=np.uint64)
    if dtype in ("F64", "F32", "F16", "BF16"):
        # Multiples of 1/8 in [-6.25, 6.25]: exact in every float dtype, bf16 included.
        v = ((i * np.uint64(37)) % np.uint64(101)).astype(np.float64) / 8.0 - 6.25
        if dtype == "F64":
            return v.astype("<f8")
        if dtype == "F32":
            return v.astype("<f4")
        if dtype == "F16":
            return v.astype("<f2")
        return (v.astype("<f4").view("<u4") >> np.uint32(16)).astype("<u2")
    if dtype == "I64":
        with np.errstate(over="ignore"):
            return (i * np.uint64(0x9E3779B97F4A7C15)).view("<i8")
    if dtype == "I32":
        with np.errstate(over="ignore"):
            return ((i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)).astype("<u4").view("<i4")
    if dtype == "U8":
        return (i * np.uint64(7) % np.uint64(256)).astype(np.uint8)
    if dtype == "BOOL":
        return (i % np.uint64(2) == 0).astype(np.uint8)
    raise ValueError(dtype)


def numel(shape):
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def write_reference(path, entries, metadata):
    arrays = {name: np.ascontiguousarray(values(dt, numel(shape))) for name, dt, shape in entries}
    specs = {name: TensorSpec(dtype=SPEC_DTYPE[dt], shape=shape, data_ptr=arrays[name].ctypes.data,
                              data_len=arrays[name].nbytes)
             for name, dt, shape in entries}
    serialize_file(specs, path, metadata=metadata)


def write(out):
    os.makedirs(out, exist_ok=True)
    write_reference(os.path.join(out, "all_dtypes.safetensors"), TENSORS + UNREPRESENTABLE,
                    {"format": "pt", "source": "safetensors reference"})

    # Every bf16 and every f16 bit pattern, and numpy's own f16 -> f32 conversion of the latter.
    bits = np.arange(65536, dtype="<u2")
    f16_as_f32 = bits.view("<f2").astype("<f4")
    specs = {"bf16_all": TensorSpec(dtype="bfloat16", shape=[65536], data_ptr=bits.ctypes.data, data_len=bits.nbytes),
             "f16_all": TensorSpec(dtype="float16", shape=[65536], data_ptr=bits.ctypes.data, data_len=bits.nbytes),
             "f16_all_as_f32": TensorSpec(dtype="float32", shape=[65536], data_ptr=f16_as_f32.ctypes.data,
                                          data_len=f16_as_f32.nbytes)}
    serialize_file(specs, os.path.join(out, "all_bits.safetensors"))

    # A sharded checkpoint as transformers writes it: shards plus the index.
    sharded = os.path.join(out, "sharded")
    os.makedirs(sharded, exist_ok=True)
    groups = [TENSORS[:3], TENSORS[3:6], TENSORS[6:]]
    weight_map, total = {}, 0
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        write_reference(os.path.join(sharded, name), group, {"format": "pt"})
        for tname, dt, shape in group:
            weight_map[tname] = name
            total += values(dt, numel(shape)).nbytes
    with open(os.path.join(sharded, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)

    np.save(os.path.join(out, "reference_f32.npy"), values("F32", 24).reshape(2, 3, 4))
    np.save(os.path.join(out, "reference_i64.npy"), values("I64", 6))
    print(f"wrote reference files to {out}")


def check_tensor(file, name, got, dtype, shape):
    assert got["dtype"] == dtype, f"{file}: {name}: dtype {got['dtype']}, expected {dtype}"
    assert list(got["shape"]) == list(shape), f"{file}: {name}: shape {got['shape']}, expected {shape}"
    want = values(dtype, numel(shape)).tobytes()
    assert bytes(got["data"]) == want, f"{file}: {name}: data differs from the formula"


def read_all(path):
    with open(path, "rb") as f:
        return dict(deserialize(f.read()))  # the reference reader validates the whole layout


def check(out):
    # 1. Every dtype, in the reference's own order: values, and byte-identical to the reference writer.
    ours = os.path.join(out, "ours_all.safetensors")
    got = read_all(ours)
    assert sorted(got) == sorted(n for n, _, _ in TENSORS), f"{ours}: tensors {sorted(got)}"
    for name, dt, shape in TENSORS:
        check_tensor(ours, name, got[name], dt, shape)
    again = os.path.join(out, "reference_again.safetensors")
    write_reference(again, TENSORS, {"format": "pt"})
    with open(ours, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read(), f"{ours}: not byte-identical to the reference writer's file {again}"

    # 2. Metadata with several keys and non-ASCII text.
    meta = os.path.join(out, "ours_meta.safetensors")
    with safe_open(meta, framework="numpy") as f:
        md = f.metadata()
        assert md == {"format": "pt", "note": "grüße, 世界", "empty": ""}, f"{meta}: metadata {md}"
        assert list(f.keys()) == ["x"], f"{meta}: keys {list(f.keys())}"
        x = f.get_tensor("x")
        assert x.dtype == np.float32 and (x == values("F32", 6).reshape(2, 3)).all(), f"{meta}: x = {x}"

    # 3. A sharded directory: the index as transformers reads it, and every shard.
    sharded = os.path.join(out, "ours_sharded")
    with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
        index = json.load(f)
    want_total = sum(values(dt, numel(shape)).nbytes for _, dt, shape in TENSORS)
    assert index["metadata"]["total_size"] == want_total, f"{sharded}: total_size {index['metadata']}"
    assert sorted(index["weight_map"]) == sorted(n for n, _, _ in TENSORS), f"{sharded}: weight_map keys"
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards == sorted(os.listdir(sharded))[:-1], f"{sharded}: shards {shards}"
    for shard in shards:
        path = os.path.join(sharded, shard)
        with safe_open(path, framework="numpy") as f:
            assert f.metadata() == {"format": "pt"}, f"{path}: metadata {f.metadata()}"
        content = read_all(path)
        for name, dt, shape in TENSORS:
            if index["weight_map"][name] == shard:
                check_tensor(path, name, content[name], dt, shape)
        assert all(index["weight_map"][n] == shard for n in content), f"{path}: holds tensors of another shard"

    # 4. .npy: numpy.load gives the values, and numpy.save writes the very same bytes.
    for name, dt, shape in [("f32", "F32", [2, 3, 4]), ("f64", "F64", [3, 5]), ("i32", "I32", [9]),
                            ("i64", "I64", [4, 2]), ("f16", "F16", [7]), ("scalar_f32", "F32", []),
                            ("empty_f32", "F32", [0, 3])]:
        path = os.path.join(out, f"ours_{name}.npy")
        want = values(dt, numel(shape)).reshape(shape)
        arr = np.load(path)
        assert arr.dtype == want.dtype and arr.shape == want.shape, f"{path}: {arr.dtype} {arr.shape}"
        assert arr.tobytes() == want.tobytes(), f"{path}: values differ"
        buf = io.BytesIO()
        np.save(buf, want)
        with open(path, "rb") as f:
            assert f.read() == buf.getvalue(), f"{path}: bytes differ from numpy.save's"
    print(f"checked the files in {out}: all match the reference")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    (write if sys.argv[1] == "write" else check)(sys.argv[2])


if __name__ == "__main__":
    main()
