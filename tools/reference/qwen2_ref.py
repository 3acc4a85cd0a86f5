#!/usr/bin/python3
"""Small PyTorch reference for loratune: Qwen2 forward, PEFT LoRA, causal-LM loss,
LoRA gradients and AdamW steps, written from the numerics contract (DESIGN.md §3).

Verbs (see README.md for details):
  logits        full-sequence forward of each sequence, writes logits.i / ids.i
  grads         loss and every LoRA gradient under PEFT names
  token-nll     logits and per-labelled-token -log p of the grads forward (no backward)
  adamw         N AdamW steps (clipping + linear schedule) on one fixed batch
  make-model    write a random Hugging Face Qwen2 folder (for tests without the C++ binary)
  init-adapter  write a PEFT LoRA adapter folder with a non-zero B
  selftest      gradcheck in float64 and semantic checks (selftest.py)
"""

import argparse
import contextlib
import json
import math
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402

PROJ = {  # module type -> sub-block
    "q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp",
}
ALL_LINEAR = list(PROJ)
PEFT_PREFIX = "base_model.model."


class RefError(Exception):
    pass


# ----------------------------------------------------------------------------- config / model

class Config:
    FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size")

    def __init__(self, d, where="config.json"):
        self.model_type = d.get("model_type")
        if self.model_type not in ("qwen2", "qwen3", "llama", "mistral"):
            raise RefError(f"{where}: model_type {self.model_type!r} is not qwen2, qwen3, llama or mistral")
        for k in self.FIELDS:
            if not isinstance(d.get(k), int) or d[k] <= 0:
                raise RefError(f"{where}: {k} missing or not a positive integer")
        self.C = d["hidden_size"]
        self.F = d["intermediate_size"]
        self.L = d["num_hidden_layers"]
        self.H = d["num_attention_heads"]
        self.Hkv = d.get("num_key_value_heads", self.H)
        self.V = d["vocab_size"]
        self.theta = float(d.get("rope_theta", 10000.0))
        self.eps = float(d.get("rms_norm_eps", 1e-6))
        self.tied = bool(d.get("tie_word_embeddings", False))
        self.max_pos = int(d.get("max_position_embeddings", 32768))
        # Biases: Qwen2 on q/k/v; Llama and Mistral on q/k/v/o (attention_bias) and on
        # gate/up/down (mlp_bias), as transformers' modeling files.
        if self.model_type == "qwen2":
            self.qkv_bias, self.o_bias, self.mlp_bias = True, False, False
        else:
            self.qkv_bias = self.o_bias = bool(d.get("attention_bias", False))
            self.mlp_bias = self.model_type != "qwen3" and bool(d.get("mlp_bias", False))
        # Qwen3: RMSNorm (eps rms_norm_eps) of each q and k head before RoPE.
        self.qk_norm = self.model_type == "qwen3"
        if self.H % self.Hkv:
            raise RefError(f"{where}: heads % kv_heads is not zero")
        self.D = d.get("head_dim") or (self.C // self.H)
        if not d.get("head_dim") and self.C % self.H:
            raise RefError(f"{where}: hidden_size % heads is not zero")
        if self.D % 2:
            raise RefError(f"{where}: head_dim {self.D} is odd")
        self.rope_scaling = d.get("rope_scaling") or None
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("linear", "llama3"):
                raise RefError(f"{where}: rope_scaling {kind!r} is not supported by the reference")
        if d.get("use_sliding_window"):
            raise RefError(f"{where}: use_sliding_window is not supported by the reference")
        # Mistral: a query at position i sees keys i-window+1..i (transformers' sliding-window
        # mask: key j is masked where j <= i - window).
        self.window = int(d.get("sliding_window") or 0) if self.model_type == "mistral" else 0


def weight_shapes(cfg):
    C, F, D, H, Hkv = cfg.C, cfg.F, cfg.D, cfg.H, cfg.Hkv
    s = {"model.embed_tokens.weight": (cfg.V, C), "model.norm.weight": (C,)}
    for i in range(cfg.L):
        p = f"model.layers.{i}."

        def linear(name, out, inp, bias):
            s[p + name + ".weight"] = (out, inp)
            if bias:
                s[p + name + ".bias"] = (out,)
        s[p + "input_layernorm.weight"] = (C,)
        linear("self_attn.q_proj", H * D, C, cfg.qkv_bias)
        linear("self_attn.k_proj", Hkv * D, C, cfg.qkv_bias)
        linear("self_attn.v_proj", Hkv * D, C, cfg.qkv_bias)
        if cfg.qk_norm:
            s[p + "self_attn.q_norm.weight"] = (D,)
            s[p + "self_attn.k_norm.weight"] = (D,)
        linear("self_attn.o_proj", C, H * D, cfg.o_bias)
        s[p + "post_attention_layernorm.weight"] = (C,)
        linear("mlp.gate_proj", F, C, cfg.mlp_bias)
        linear("mlp.up_proj", F, C, cfg.mlp_bias)
        linear("mlp.down_proj", C, F, cfg.mlp_bias)
    if not cfg.tied:
        s["lm_head.weight"] = (cfg.V, C)
    return s


class Model:
    """Frozen Qwen2 weights in one compute dtype (float32 or float64)."""

    def __init__(self, cfg, tensors, dtype):
        self.cfg, self.dtype = cfg, dtype
        self.w = {}
        for name, shape in weight_shapes(cfg).items():
            if name not in tensors:
                raise RefError(f"model: tensor {name} is missing")
            t = torch.from_numpy(np.asarray(tensors[name], dtype=np.float32)).to(dtype)
            if tuple(t.shape) != shape:
                raise RefError(f"model: tensor {name} has shape {tuple(t.shape)}, config says {shape}")
            self.w[name] = t
        self.lm_head = self.w["model.embed_tokens.weight"] if cfg.tied else self.w["lm_head.weight"]

    @staticmethod
    def load(folder, dtype=torch.float32):
        path = os.path.join(folder, "config.json")
        if not os.path.exists(path):
            raise RefError(f"{folder}: no config.json")
        with open(path) as f:
            cfg = Config(json.load(f), path)
        tensors, _ = st.load_folder_weights(folder)
        return Model(cfg, tensors, dtype)

    def rope(self, T):
        """cos/sin [T, D], HF layout (frequencies repeated for the two halves), made in fp32
        exactly as transformers does, then cast to the compute dtype."""
        D = self.cfg.D
        inv_freq = 1.0 / (self.cfg.theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
        inv_freq = scale_rope(inv_freq, self.cfg.rope_scaling)
        pos = torch.arange(T, dtype=torch.int64).float()
        freqs = torch.outer(pos, inv_freq)  # [T, D/2] fp32
        emb = torch.cat([freqs, freqs], dim=-1)  # [T, D]
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)


def scale_rope(inv_freq, scaling):
    """rope_scaling as transformers' _compute_linear_scaling_rope_parameters and
    _compute_llama3_parameters compute it, in fp32."""
    if scaling is None:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_len = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rms_norm(x, weight, eps):
    # x: [T, C]. Computed in at least fp32.
    xf = x if x.dtype == torch.float64 else x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


# ----------------------------------------------------------------------------- LoRA (PEFT)

def module_keys(cfg):
    return [f"model.layers.{i}.{PROJ[m]}.{m}" for i in range(cfg.L) for m in ALL_LINEAR]


def _pattern_key(patterns, key):
    for p in patterns:
        if re.match(rf"(.*\.)?({p})$", key):
            return p
    return None


class Adapter:
    """LoRA matrices keyed by module name ("model.layers.0.self_attn.q_proj"):
    A [r, in], B [out, r], scale s; y = W x + b + s * B (A x)."""

    def __init__(self, cfg, config, tensors, dtype, where="adapter"):
        self.config = config
        if config.get("peft_type", "LORA") != "LORA":
            raise RefError(f"{where}: peft_type {config.get('peft_type')!r} is not LORA")
        for key, bad, why in (("use_dora", True, "DoRA"), ("fan_in_fan_out", True, "fan_in_fan_out"),
                              ("lora_bias", True, "LoRA bias")):
            if config.get(key) == bad:
                raise RefError(f"{where}: {why} is not supported by the reference")
        if config.get("bias", "none") != "none":
            raise RefError(f"{where}: bias={config.get('bias')!r} is not supported (only 'none')")
        if config.get("modules_to_save"):
            raise RefError(f"{where}: modules_to_save is not supported")
        r0 = int(config["r"])
        alpha0 = float(config.get("lora_alpha", 8))
        rslora = bool(config.get("use_rslora", False))
        rank_pattern = config.get("rank_pattern") or {}
        alpha_pattern = config.get("alpha_pattern") or {}
        targets = config.get("target_modules")
        layers = config.get("layers_to_transform")
        if isinstance(layers, int):
            layers = [layers]
        exclude = config.get("exclude_modules")

        def targeted(key):
            leaf = key.split(".")[-1]
            if targets == "all-linear" or (isinstance(targets, str) and targets.lower() == "all-linear"):
                hit = leaf in ALL_LINEAR
            elif isinstance(targets, str):
                hit = re.fullmatch(targets, key) is not None
            elif isinstance(targets, (list, tuple)):
                hit = any(key == t or key.endswith("." + t) for t in targets)
            else:
                raise RefError(f"{where}: target_modules {targets!r} not understood")
            if hit and layers is not None and isinstance(targets, (list, tuple, str)):
                hit = int(key.split(".")[2]) in layers
            if hit and exclude:
                if isinstance(exclude, str):
                    hit = re.fullmatch(exclude, key) is None
                else:
                    hit = not any(key == t or key.endswith("." + t) for t in exclude)
            return hit

        self.mods = {}
        used = set()
        for key in module_keys(cfg):
            if not targeted(key):
                continue
            na, nb = PEFT_PREFIX + key + ".lora_A.weight", PEFT_PREFIX + key + ".lora_B.weight"
            for n in (na, nb):
                if n not in tensors:
                    raise RefError(f"{where}: {key} is targeted but tensor {n} is missing")
            A = torch.from_numpy(np.asarray(tensors[na], dtype=np.float32)).to(dtype)
            B = torch.from_numpy(np.asarray(tensors[nb], dtype=np.float32)).to(dtype)
            pk = _pattern_key(rank_pattern, key)
            r = int(rank_pattern[pk]) if pk else r0
            pk = _pattern_key(alpha_pattern, key)
            alpha = float(alpha_pattern[pk]) if pk else alpha0
            out_f, in_f = self._dims(cfg, key)
            if tuple(A.shape) != (r, in_f) or tuple(B.shape) != (out_f, r):
                raise RefError(f"{where}: {key}: lora_A {tuple(A.shape)} / lora_B {tuple(B.shape)} do not match "
                               f"r={r}, module [{out_f}, {in_f}]")
            scale = alpha / math.sqrt(r) if rslora else alpha / r
            self.mods[key] = [A, B, scale]
            used.update((na, nb))
        extra = sorted(set(tensors) - used)
        if extra:
            raise RefError(f"{where}: tensors not matched by target_modules: {extra[:4]}")
        if not self.mods:
            raise RefError(f"{where}: no module is targeted")

    @staticmethod
    def _dims(cfg, key):
        leaf = key.split(".")[-1]
        C, F, HD, KD = cfg.C, cfg.F, cfg.H * cfg.D, cfg.Hkv * cfg.D
        return {"q_proj": (HD, C), "k_proj": (KD, C), "v_proj": (KD, C), "o_proj": (C, HD),
                "gate_proj": (F, C), "up_proj": (F, C), "down_proj": (C, F)}[leaf]

    @staticmethod
    def load(folder, cfg, dtype=torch.float32):
        cpath = os.path.join(folder, "adapter_config.json")
        if not os.path.exists(cpath):
            raise RefError(f"{folder}: no adapter_config.json")
        with open(cpath) as f:
            config = json.load(f)
        wpath = os.path.join(folder, "adapter_model.safetensors")
        if not os.path.exists(wpath):
            raise RefError(f"{folder}: no adapter_model.safetensors")
        tensors, _, _ = st.load_file(wpath)
        return Adapter(cfg, config, tensors, dtype, where=folder)

    def named_params(self):
        """(PEFT name, tensor) in a fixed order: layer, module (q,k,v,o,gate,up,down), A then B."""
        out = []
        for key, (A, B, _) in self.mods.items():
            out.append((PEFT_PREFIX + key + ".lora_A.weight", A))
            out.append((PEFT_PREFIX + key + ".lora_B.weight", B))
        return out

    def set_params(self, tensors):
        """Replace A/B by the given tensors (same order as named_params)."""
        it = iter(tensors)
        for key in self.mods:
            self.mods[key][0] = next(it)
            self.mods[key][1] = next(it)


# ----------------------------------------------------------------------------- forward / loss

def linear(m, adapter, x, key):
    """x · Wᵀ (+ the bias where the model has one) (+ the LoRA branch)."""
    bias = key + ".bias" in m.w
    if torch.is_autocast_cpu_enabled():
        return _linear_autocast(m, adapter, x, key, bias)
    y = x @ m.w[key + ".weight"].T
    if bias:
        y = y + m.w[key + ".bias"]
    if adapter is not None and key in adapter.mods:
        A, B, s = adapter.mods[key]
        y = y + s * ((x @ A.T) @ B.T)
    return y


def _linear_autocast(m, adapter, x, key, bias):
    """linear() under torch.autocast("cpu"): the nn.Linear / PEFT form, so that the bias is
    added inside the (low-precision) addmm as in Hugging Face, and the LoRA term is
    lora_B(lora_A(x)) * scaling as PEFT writes it. The output must be in the autocast dtype."""
    F = torch.nn.functional
    y = F.linear(x, m.w[key + ".weight"], m.w[key + ".bias"] if bias else None)
    if adapter is not None and key in adapter.mods:
        A, B, s = adapter.mods[key]
        y = y + F.linear(F.linear(x, A), B) * s
    if y.dtype != torch.get_autocast_cpu_dtype():
        raise RefError(f"autocast: {key} ran in {y.dtype}, not {torch.get_autocast_cpu_dtype()}")
    return y


def forward(m, ids, adapter=None):
    """ids: list of token ids of ONE sequence (positions 0..T-1). Returns logits [T, V]."""
    cfg = m.cfg
    T = len(ids)
    ids_t = torch.tensor(ids, dtype=torch.int64)
    if T == 0:
        raise RefError("empty sequence")
    if int(ids_t.min()) < 0 or int(ids_t.max()) >= cfg.V:
        raise RefError(f"token id out of range [0, {cfg.V})")
    x = m.w["model.embed_tokens.weight"][ids_t]  # [T, C]
    cos, sin = m.rope(T)  # [T, D]
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = masked
    if cfg.window > 0:
        causal |= torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-cfg.window)
    H, Hkv, D = cfg.H, cfg.Hkv, cfg.D
    soft_dtype = torch.float64 if m.dtype == torch.float64 else torch.float32
    for i in range(cfg.L):
        p = f"model.layers.{i}."
        h = rms_norm(x, m.w[p + "input_layernorm.weight"], cfg.eps)
        q = linear(m, adapter, h, p + "self_attn.q_proj").view(T, H, D)
        k = linear(m, adapter, h, p + "self_attn.k_proj").view(T, Hkv, D)
        if cfg.qk_norm:
            q = rms_norm(q, m.w[p + "self_attn.q_norm.weight"], cfg.eps)
            k = rms_norm(k, m.w[p + "self_attn.k_norm.weight"], cfg.eps)
        q, k = q.transpose(0, 1), k.transpose(0, 1)  # [H, T, D], [Hkv, T, D]
        v = linear(m, adapter, h, p + "self_attn.v_proj").view(T, Hkv, D).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=0)  # query head h -> kv head h // (H/Hkv)
        v = v.repeat_interleave(H // Hkv, dim=0)
        s = (q @ k.transpose(1, 2)) / math.sqrt(D)  # [H, T, T]
        s = s.masked_fill(causal, float("-inf"))
        a = torch.softmax(s.to(soft_dtype), dim=-1).to(m.dtype)
        o = (a @ v).transpose(0, 1).reshape(T, H * D)  # head-major features
        x = x + linear(m, adapter, o, p + "self_attn.o_proj")
        h = rms_norm(x, m.w[p + "post_attention_layernorm.weight"], cfg.eps)
        g = linear(m, adapter, h, p + "mlp.gate_proj")
        u = linear(m, adapter, h, p + "mlp.up_proj")
        x = x + linear(m, adapter, torch.nn.functional.silu(g) * u, p + "mlp.down_proj")
    x = rms_norm(x, m.w["model.norm.weight"], cfg.eps)
    return x @ m.lm_head.T  # [T, V]


def sequence_nll(m, ids, lab, adapter=None):
    """One sequence on its own: (logits [T, V] as float32, positions t with labels[t+1] != -100
    [n] int64, -log p(labels[t+1]) at those positions [n], log_softmax in float32)."""
    if len(lab) != len(ids):
        raise RefError(f"labels length {len(lab)} != ids length {len(ids)}")
    logits = forward(m, ids, adapter)
    if torch.is_autocast_cpu_enabled() and logits.dtype != torch.get_autocast_cpu_dtype():
        raise RefError(f"autocast: lm_head ran in {logits.dtype}")
    if logits.dtype in (torch.bfloat16, torch.float16):
        # autocast: lm_head ran in bf16; the loss is taken in float32 as HF does
        # (CPU autocast in torch 1.13 would leave log_softmax in bf16)
        logits = logits.float()
    tgt = torch.tensor(lab[1:], dtype=torch.int64)
    keep = tgt != -100
    if bool(((tgt[keep] < 0) | (tgt[keep] >= m.cfg.V)).any()):
        raise RefError("label out of range")
    lp = torch.log_softmax(logits[:-1][keep], dim=-1)
    return logits, torch.nonzero(keep)[:, 0], -lp.gather(1, tgt[keep][:, None])[:, 0]


def batch_loss(m, seqs, labels, adapter=None):
    """Causal-LM cross entropy: logits at t predict labels[t+1]; -100 ignored; mean over all
    labelled tokens of all sequences together. Returns (loss, labelled count)."""
    total, count = None, 0
    for ids, lab in zip(seqs, labels):
        _, positions, nll = sequence_nll(m, ids, lab, adapter)
        if len(positions) == 0:
            continue
        total = nll.sum() if total is None else total + nll.sum()
        count += len(positions)
    if count == 0:
        raise RefError("no labelled token in the batch")
    return total / count, count


def token_nll(m, seqs, labels, adapter=None):
    """Forward-only companion of batch_loss: sequence_nll of each sequence."""
    return [sequence_nll(m, ids, lab, adapter) for ids, lab in zip(seqs, labels)]


# ----------------------------------------------------------------------------- CLI helpers

def parse_seqs(text):
    seqs = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            raise RefError(f"empty sequence in {text!r}")
        seqs.append([int(t) for t in part.split(",")])
    return seqs


def precision(args, default):
    """(dtype of weights, LoRA parameters and plain compute, precision name).
    bf16-autocast: float32 tensors, forward under torch.autocast("cpu", bfloat16)."""
    p = args.precision or default
    return {"fp32": torch.float32, "fp64": torch.float64, "bf16-autocast": torch.float32}[p], p


def compute_context(pname):
    """The context the forward (and the loss) runs in: torch.autocast for bf16-autocast,
    else nothing. backward() is called outside it, as HF Trainer does."""
    if pname == "bf16-autocast":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def write_ids(out, meta, seqs, labels=None, args=None):
    if args is not None:
        meta["model"] = args.model
        if args.adapter:
            meta["adapter"] = args.adapter
    for i, s in enumerate(seqs):
        out[f"ids.{i}"] = np.asarray(s, dtype=np.int32)
    meta["ids"] = ";".join(",".join(map(str, s)) for s in seqs)
    if labels is not None:
        for i, s in enumerate(labels):
            out[f"labels.{i}"] = np.asarray(s, dtype=np.int32)
        meta["labels"] = ";".join(",".join(map(str, s)) for s in labels)


def cmd_logits(args):
    dtype, pname = precision(args, "fp32")
    m = Model.load(args.model, dtype)
    adapter = Adapter.load(args.adapter, m.cfg, dtype) if args.adapter else None
    seqs = parse_seqs(args.ids)
    out, meta = {}, {"format": "pt", "precision": pname}
    with torch.no_grad():
        for i, s in enumerate(seqs):
            out[f"logits.{i}"] = forward(m, s, adapter).float().numpy()
    write_ids(out, meta, seqs, args=args)
    st.save_file(out, args.out, meta)


def _batch(args):
    seqs = parse_seqs(args.ids)
    labels = parse_seqs(args.labels) if args.labels else [list(s) for s in seqs]
    if len(labels) != len(seqs):
        raise RefError(f"{len(labels)} label sequences for {len(seqs)} id sequences")
    return seqs, labels


def cmd_grads(args):
    dtype, pname = precision(args, "fp64")
    m = Model.load(args.model, dtype)
    adapter = Adapter.load(args.adapter, m.cfg, dtype)
    seqs, labels = _batch(args)
    params = adapter.named_params()
    for _, p in params:
        p.requires_grad_(True)
    with compute_context(pname):
        loss, count = batch_loss(m, seqs, labels, adapter)
    loss.backward()
    out = {"loss": np.asarray([loss.item()], dtype=np.float32),
           "num_labelled": np.asarray([count], dtype=np.int32)}
    for name, p in params:
        if p.grad.dtype != dtype:
            raise RefError(f"{name}: gradient is {p.grad.dtype}, parameter is {dtype}")
        out[name] = p.grad.float().numpy()
    meta = {"format": "pt", "precision": pname, "loss_f64": repr(loss.item())}
    write_ids(out, meta, seqs, labels, args)
    st.save_file(out, args.out, meta)


def cmd_token_nll(args):
    """The forward of `grads` without the backward: same precision handling, LoRA parameters
    requiring grad, forward (and loss) inside compute_context. Writes logits.i [T_i, V] f32,
    positions.i [n_i] I32 (t with labels[t+1] != -100), nll.i [n_i] f32, loss [1] (sum of the
    nll / count, as batch_loss) and num_labelled [1]."""
    dtype, pname = precision(args, "fp64")
    m = Model.load(args.model, dtype)
    adapter = Adapter.load(args.adapter, m.cfg, dtype) if args.adapter else None
    seqs, labels = _batch(args)
    if adapter is not None:
        for _, p in adapter.named_params():
            p.requires_grad_(True)
    with compute_context(pname):
        res = token_nll(m, seqs, labels, adapter)
    total, count = None, 0
    out = {}
    for i, (logits, pos, nll) in enumerate(res):
        out[f"logits.{i}"] = logits.detach().float().numpy()
        out[f"positions.{i}"] = pos.numpy().astype(np.int32)
        out[f"nll.{i}"] = nll.detach().float().numpy()
        if len(nll):
            total = nll.sum() if total is None else total + nll.sum()
            count += len(nll)
    if count == 0:
        raise RefError("no labelled token in the batch")
    loss = (total / count).item()
    out["loss"] = np.asarray([loss], dtype=np.float32)
    out["num_labelled"] = np.asarray([count], dtype=np.int32)
    meta = {"format": "pt", "precision": pname, "loss_f64": repr(loss)}
    write_ids(out, meta, seqs, labels, args)
    st.save_file(out, args.out, meta)


def hf_linear_lambda(total, warmup):
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def cmd_adamw(args):
    dtype, pname = precision(args, "fp64")
    m = Model.load(args.model, dtype)
    adapter = Adapter.load(args.adapter, m.cfg, dtype)
    seqs, labels = _batch(args)
    named = adapter.named_params()
    params = [torch.nn.Parameter(p.clone()) for _, p in named]
    adapter.set_params(params)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps,
                            weight_decay=args.weight_decay, foreach=False)
    total = args.total_steps or args.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, hf_linear_lambda(total, args.warmup_steps))
    losses, norms, lrs = [], [], []
    for _ in range(args.steps):
        opt.zero_grad(set_to_none=True)
        with compute_context(pname):
            loss, _ = batch_loss(m, seqs, labels, adapter)
        loss.backward()
        if args.max_grad_norm and args.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        else:
            norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))
        losses.append(loss.item())
        norms.append(float(norm))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out = {"losses": np.asarray(losses, dtype=np.float32),
           "grad_norms": np.asarray(norms, dtype=np.float32),
           "lrs": np.asarray(lrs, dtype=np.float32)}
    for (name, _), p in zip(named, params):
        out[name] = p.detach().float().numpy()
    meta = {"format": "pt", "precision": pname, "steps": str(args.steps), "lr": repr(args.lr),
            "weight_decay": repr(args.weight_decay), "max_grad_norm": repr(args.max_grad_norm),
            "warmup_steps": str(args.warmup_steps), "total_steps": str(total),
            "betas": f"{args.beta1},{args.beta2}", "eps": repr(args.eps),
            "losses_f64": ",".join(repr(x) for x in losses),
            "grad_norms_f64": ",".join(repr(x) for x in norms)}
    write_ids(out, meta, seqs, labels, args)
    st.save_file(out, args.out, meta)
    if args.out_adapter:
        write_adapter(args.out_adapter, adapter.config, {n: p.detach() for (n, _), p in zip(named, params)})


def cmd_compare(args):
    """Per-tensor max abs / relative L2 differences between two safetensors files. A single
    "logits" tensor (loratune debug logits on a batch) is compared to logits.0, logits.1, …
    concatenated."""
    a, _, _ = st.load_file(args.a)
    b, _, _ = st.load_file(args.b)
    for x, y in ((a, b), (b, a)):
        if "logits" in x and "logits" not in y and "logits.0" in y:
            n = len([k for k in y if re.fullmatch(r"logits\.\d+", k)])
            y["logits"] = np.concatenate([y[f"logits.{i}"] for i in range(n)])
    worst = 0.0
    for name in sorted(set(a) & set(b)):
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        if x.shape != y.shape and np.squeeze(x).shape == np.squeeze(y).shape:
            x, y = np.squeeze(x), np.squeeze(y)  # scalar [] vs [1]
        if x.shape != y.shape:
            print(f"{name}: shape {x.shape} vs {y.shape}")
            worst = float("inf")
            continue
        absd = float(np.abs(x - y).max()) if x.size else 0.0
        rel = float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))
        worst = max(worst, rel if args.relative else absd)
        print(f"{name:70s} max abs {absd:.3e}  rel L2 {rel:.3e}")
    only = sorted(set(a) ^ set(b))
    if only:
        print("only in one file:", ", ".join(only[:10]))
    print(f"worst {'rel L2' if args.relative else 'max abs'}: {worst:.3e}")
    return 1 if args.tol is not None and worst > args.tol else 0


# ----------------------------------------------------------------------------- writers

def write_config(folder, cfg_dict):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2)
        f.write("\n")


def make_model_dict(args):
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": args.hidden_size, "intermediate_size": args.intermediate_size,
        "num_hidden_layers": args.num_hidden_layers, "num_attention_heads": args.num_attention_heads,
        "num_key_value_heads": args.num_key_value_heads, "vocab_size": args.vocab_size,
        "rope_theta": args.rope_theta, "rms_norm_eps": args.rms_norm_eps,
        "tie_word_embeddings": not args.untied, "max_position_embeddings": 4096,
        "hidden_act": "silu", "attention_dropout": 0.0, "use_sliding_window": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": {"f32": "float32", "bf16": "bfloat16",
                                                              "f16": "float16"}[args.dtype],
    }


def random_weights(cfg, seed):
    g = np.random.default_rng(seed)
    w = {}
    for name, shape in weight_shapes(cfg).items():
        if name.endswith("norm.weight"):
            w[name] = (1.0 + 0.1 * g.standard_normal(shape)).astype(np.float32)
        elif name.endswith(".bias"):
            w[name] = (0.02 * g.standard_normal(shape)).astype(np.float32)
        elif "embed" in name or "lm_head" in name:
            w[name] = (0.5 * g.standard_normal(shape)).astype(np.float32)
        else:
            w[name] = (g.standard_normal(shape) / math.sqrt(shape[1])).astype(np.float32)
    return w


def cmd_make_model(args):
    d = make_model_dict(args)
    cfg = Config(d)
    w = random_weights(cfg, args.seed)
    dt = {"f32": "F32", "bf16": "BF16", "f16": "F16"}[args.dtype]
    write_config(args.out, d)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}, f, indent=2)
    names = list(w)
    if args.shards > 1:
        per = math.ceil(len(names) / args.shards)
        weight_map = {}
        for k in range(args.shards):
            fname = f"model-{k + 1:05d}-of-{args.shards:05d}.safetensors"
            part = names[k * per:(k + 1) * per]
            st.save_file({n: w[n] for n in part}, os.path.join(args.out, fname), {"format": "pt"},
                         {n: dt for n in part})
            weight_map.update({n: fname for n in part})
        with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    else:
        st.save_file(w, os.path.join(args.out, "model.safetensors"), {"format": "pt"}, {n: dt for n in w})


def write_adapter(folder, config, tensors):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    st.save_file({n: t for n, t in tensors.items()}, os.path.join(folder, "adapter_model.safetensors"),
                 {"format": "pt"})


def adapter_config_dict(r, alpha, targets, rslora=False, dropout=0.0, base="model"):
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
            "lora_dropout": dropout, "target_modules": targets, "bias": "none",
            "use_rslora": rslora, "fan_in_fan_out": False, "init_lora_weights": True,
            "base_model_name_or_path": base, "inference_mode": True, "modules_to_save": None,
            "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False}


def cmd_init_adapter(args):
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = Config(json.load(f))
    targets = ALL_LINEAR if args.target_modules == "all-linear" else args.target_modules.split(",")
    g = torch.Generator().manual_seed(args.seed)
    tensors = {}
    for key in module_keys(cfg):
        if key.split(".")[-1] not in targets:
            continue
        out_f, in_f = Adapter._dims(cfg, key)
        bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform(a=sqrt(5)) on [r, in]
        tensors[PEFT_PREFIX + key + ".lora_A.weight"] = (torch.rand(args.lora_r, in_f, generator=g) * 2 - 1) * bound
        tensors[PEFT_PREFIX + key + ".lora_B.weight"] = torch.randn(out_f, args.lora_r, generator=g) * args.b_std
    cfgd = adapter_config_dict(args.lora_r, args.lora_alpha if args.lora_alpha is not None else 2 * args.lora_r,
                               sorted(targets), args.use_rslora, base=os.path.basename(os.path.normpath(args.model)))
    write_adapter(args.out, cfgd, tensors)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(prog="qwen2_ref.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)

    def common(p, adapter_required, autocast=False):
        p.add_argument("--model", required=True)
        p.add_argument("--adapter", required=adapter_required)
        p.add_argument("--ids", required=True, help='sequences "1,2,3;4,5"')
        p.add_argument("--out", required=True)
        p.add_argument("--precision", choices=["fp32", "fp64"] + (["bf16-autocast"] if autocast else []),
                       help="bf16-autocast: float32 weights and LoRA parameters, forward under "
                            'torch.autocast("cpu", bfloat16), loss in float32' if autocast else None)
        p.add_argument("--double", dest="precision", action="store_const", const="fp64")
        p.add_argument("--float32", dest="precision", action="store_const", const="fp32")

    p = sub.add_parser("logits", help="logits of each sequence")
    common(p, False)
    p.set_defaults(fn=cmd_logits)

    p = sub.add_parser("grads", help="loss and LoRA gradients")
    common(p, True, autocast=True)
    p.add_argument("--labels", help='same shape as --ids; -100 = ignored (default: labels = ids)')
    p.set_defaults(fn=cmd_grads)

    p = sub.add_parser("token-nll", help="logits and per-token NLL of the grads forward (no backward)")
    common(p, False, autocast=True)
    p.add_argument("--labels", help='same shape as --ids; -100 = ignored (default: labels = ids)')
    p.set_defaults(fn=cmd_token_nll)

    p = sub.add_parser("adamw", help="AdamW steps on one batch")
    common(p, True, autocast=True)
    p.add_argument("--labels")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--total-steps", type=int, default=0, help="schedule length T (default: --steps)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--out-adapter", help="also write the trained adapter folder here")
    p.set_defaults(fn=cmd_adamw)

    p = sub.add_parser("make-model", help="random Qwen2 folder (Python writer)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--intermediate-size", type=int, default=128)
    p.add_argument("--num-hidden-layers", type=int, default=2)
    p.add_argument("--num-attention-heads", type=int, default=4)
    p.add_argument("--num-key-value-heads", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--rope-theta", type=float, default=1000000.0)
    p.add_argument("--rms-norm-eps", type=float, default=1e-6)
    p.add_argument("--untied", action="store_true")
    p.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    p.add_argument("--shards", type=int, default=1)
    p.set_defaults(fn=cmd_make_model)

    p = sub.add_parser("init-adapter", help="PEFT adapter with a non-zero B")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--lora-r", type=int, default=4)
    p.add_argument("--lora-alpha", type=float)
    p.add_argument("--target-modules", default="q_proj,v_proj")
    p.add_argument("--use-rslora", action="store_true")
    p.add_argument("--b-std", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_init_adapter)

    p = sub.add_parser("compare", help="per-tensor differences between two safetensors files")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--relative", action="store_true", help="judge by relative L2 error instead of max abs")
    p.add_argument("--tol", type=float, help="exit 1 when the worst difference exceeds this")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("selftest", help="gradcheck and semantic checks")
    p.add_argument("--quick", action="store_true")
    p.set_defaults(fn=lambda a: __import__("selftest").run(quick=a.quick))

    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 2, -1, -1):  # "--labels -100,5" would read as an option
        if argv[i] in ("--ids", "--labels"):
            argv[i:i + 2] = [argv[i] + "=" + argv[i + 1]]
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        return args.fn(args) or 0
    except (RefError, st.SafetensorsError) as e:
        print(f"qwen2_ref: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
