"""Minimal safetensors reader/writer (json + struct + numpy), no safetensors package.

File layout: 8-byte little-endian u64 header length N, N bytes of JSON header
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}),
then the data block; offsets are relative to the start of the data block.

Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
Sharded checkpoints: model.safetensors.index.json with {"weight_map": {name: file}}.
"""

import json
import os
import struct

import numpy as np

_NP = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; converted to float32 on read
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class SafetensorsError(ValueError):
    pass


def bf16_bits_to_f32(bits):
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """Round-to-nearest-even float32 -> bf16 bits (NaN kept as a quiet NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounding = ((u >> 16) & 1) + 0x7FFF
    out = ((u + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def read_header(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: file shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise SafetensorsError(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: header is not valid JSON: {e}")
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    data_start = 8 + n
    data_len = size - data_start
    meta = header.pop("__metadata__", {}) or {}
    spans = []
    for name, info in header.items():
        try:
            dtype, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r}: malformed entry {info!r}")
        if dtype not in _NP:
            raise SafetensorsError(f"{path}: tensor {name!r}: unsupported dtype {dtype}")
        if any((not isinstance(d, int)) or d < 0 for d in shape):
            raise SafetensorsError(f"{path}: tensor {name!r}: bad shape {shape}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * _NP[dtype].itemsize
        if not (0 <= b <= e <= data_len) or e - b != nbytes:
            raise SafetensorsError(
                f"{path}: tensor {name!r}: byte range [{b},{e}) does not fit shape {shape} x {dtype} "
                f"or the data block of {data_len} bytes")
        spans.append((b, e, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise SafetensorsError(f"{path}: tensors {n0!r} and {n1!r} overlap")
    return header, meta, data_start


def load_file(path, keep_bf16_bits=False):
    """Returns (dict name -> numpy array, metadata dict, dict name -> dtype string).
    BF16 tensors come back as float32 unless keep_bf16_bits."""
    header, meta, data_start = read_header(path)
    out, dtypes = {}, {}
    with open(path, "rb") as f:
        for name, info in header.items():
            b, e = info["data_offsets"]
            f.seek(data_start + b)
            buf = f.read(e - b)
            arr = np.frombuffer(buf, dtype=_NP[info["dtype"]]).reshape(info["shape"]).copy()
            if info["dtype"] == "BF16" and not keep_bf16_bits:
                arr = bf16_bits_to_f32(arr)
            out[name] = arr
            dtypes[name] = info["dtype"]
    return out, meta, dtypes


def load_folder_weights(folder):
    """Weights of a Hugging Face folder: model.safetensors or a sharded index."""
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        tensors, dtypes = {}, {}
        for shard in sorted(set(weight_map.values())):
            t, _, d = load_file(os.path.join(folder, shard))
            for name in t:
                if weight_map.get(name) != shard:
                    raise SafetensorsError(f"{folder}/{shard}: tensor {name!r} not listed for this shard in the index")
            tensors.update(t)
            dtypes.update(d)
        missing = set(weight_map) - set(tensors)
        if missing:
            raise SafetensorsError(f"{folder}: index lists tensors missing from the shards: {sorted(missing)[:5]}")
        return tensors, dtypes
    if os.path.exists(single):
        t, _, d = load_file(single)
        return t, d
    raise SafetensorsError(f"{folder}: neither model.safetensors nor model.safetensors.index.json")


def _to_numpy(x):
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.dtype == torch.bfloat16:
                x = x.float()
            return x.numpy()
    except ImportError:
        pass
    return np.asarray(x)


def save_file(tensors, path, metadata=None, dtypes=None):
    """tensors: ordered dict name -> array/tensor. dtypes: optional name -> "F32"/"BF16"/"F16"/...
    (default: F32 for floating arrays, I64/I32 kept for integer arrays). Written atomically."""
    dtypes = dtypes or {}
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        arr = _to_numpy(value)
        want = dtypes.get(name)
        if want is None:
            if arr.dtype.kind == "f":
                want = "F32"
            elif arr.dtype == np.int32:
                want = "I32"
            elif arr.dtype.kind in "iu":
                want = "I64"
            elif arr.dtype == np.bool_:
                want = "BOOL"
            else:
                raise SafetensorsError(f"{name}: cannot store dtype {arr.dtype}")
        if want == "BF16":
            data = f32_to_bf16_bits(arr)
        else:
            data = np.ascontiguousarray(arr, dtype=_NP[want])
        raw = data.tobytes()
        header[name] = {"dtype": want, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    full = {"__metadata__": dict(metadata or {"format": "pt"})}
    full.update(header)
    hjson = json.dumps(full, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
