"""Self-checks of the reference: safetensors io, an independent loop implementation of the
Qwen2 block, PEFT semantics, loss weighting, float64 gradcheck and AdamW.

Run: /usr/bin/python3 tools/reference/qwen2_ref.py selftest [--quick]
"""

import json
import math
import os
import struct
import tempfile

import numpy as np
import torch

import qwen2_ref as q
import safetensors_io as st

F64 = torch.float64
RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append((name, bool(ok), detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}")


def tiny_cfg(C=16, F=24, L=2, H=4, Hkv=2, V=40, tied=True, theta=10000.0):
    return {"model_type": "qwen2", "hidden_size": C, "intermediate_size": F, "num_hidden_layers": L,
            "num_attention_heads": H, "num_key_value_heads": Hkv, "vocab_size": V, "rope_theta": theta,
            "rms_norm_eps": 1e-6, "tie_word_embeddings": tied, "max_position_embeddings": 128}


def tiny_model(seed=0, dtype=F64, **kw):
    cfg = q.Config(tiny_cfg(**kw))
    return q.Model(cfg, q.random_weights(cfg, seed), dtype)


def tiny_adapter(m, targets, r=2, alpha=4.0, rslora=False, b_std=0.3, seed=1, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for key in q.module_keys(m.cfg):
        if key.split(".")[-1] not in targets:
            continue
        o, i = q.Adapter._dims(m.cfg, key)
        tensors[q.PEFT_PREFIX + key + ".lora_A.weight"] = ((torch.rand(r, i, generator=g) * 2 - 1) / math.sqrt(i)).numpy()
        tensors[q.PEFT_PREFIX + key + ".lora_B.weight"] = (torch.randn(o, r, generator=g) * b_std).numpy()
    conf = q.adapter_config_dict(r, alpha, list(targets), rslora)
    return q.Adapter(m.cfg, conf, tensors, dtype), conf, tensors


# ----------------------------------------------------------------------------- independent forward

def naive_forward(m, ids, adapter=None):
    """Loops over tokens and heads; RoPE from the pairwise formula in float64."""
    cfg, w = m.cfg, m.w
    C, H, Hkv, D = cfg.C, cfg.H, cfg.Hkv, cfg.D
    T = len(ids)

    def norm(x, wt):
        return x / math.sqrt(float((x * x).sum()) / C + cfg.eps) * wt

    def lin(x, key, bias=True):
        y = torch.mv(w[key + ".weight"], x)
        if bias:
            y = y + w[key + ".bias"]
        if adapter is not None and key in adapter.mods:
            A, B, s = adapter.mods[key]
            y = y + s * torch.mv(B, torch.mv(A, x))
        return y

    def rope(vec, pos):  # vec [D]; pairs (i, i + D/2)
        out = vec.clone()
        for i in range(D // 2):
            ang = pos * cfg.theta ** (-2.0 * i / D)
            c, s = math.cos(ang), math.sin(ang)
            out[i] = vec[i] * c - vec[i + D // 2] * s
            out[i + D // 2] = vec[i + D // 2] * c + vec[i] * s
        return out

    xs = [w["model.embed_tokens.weight"][t].clone() for t in ids]
    for l in range(cfg.L):
        p = f"model.layers.{l}."
        Q, K, Vv = [], [], []
        for t in range(T):
            h = norm(xs[t], w[p + "input_layernorm.weight"])
            qv = lin(h, p + "self_attn.q_proj").view(H, D)
            kv = lin(h, p + "self_attn.k_proj").view(Hkv, D)
            vv = lin(h, p + "self_attn.v_proj").view(Hkv, D)
            Q.append(torch.stack([rope(qv[hh], t) for hh in range(H)]))
            K.append(torch.stack([rope(kv[hh], t) for hh in range(Hkv)]))
            Vv.append(vv)
        new = []
        for t in range(T):
            heads = []
            for hh in range(H):
                g = hh // (H // Hkv)
                sc = [float(torch.dot(Q[t][hh], K[s][g])) / math.sqrt(D) for s in range(t + 1)]
                mx = max(sc)
                e = [math.exp(v - mx) for v in sc]
                z = sum(e)
                heads.append(sum((e[s] / z) * Vv[s][g] for s in range(t + 1)))
            o = torch.cat(heads)
            x = xs[t] + lin(o, p + "self_attn.o_proj", bias=False)
            h = norm(x, w[p + "post_attention_layernorm.weight"])
            gt = lin(h, p + "mlp.gate_proj", bias=False)
            up = lin(h, p + "mlp.up_proj", bias=False)
            x = x + lin(gt / (1 + torch.exp(-gt)) * up, p + "mlp.down_proj", bias=False)
            new.append(x)
        xs = new
    head = w["model.embed_tokens.weight"] if cfg.tied else w["lm_head.weight"]
    return torch.stack([torch.mv(head, norm(x, w["model.norm.weight"])) for x in xs])


# ----------------------------------------------------------------------------- checks

def check_safetensors(tmp):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    path = os.path.join(tmp, "t.safetensors")
    st.save_file({"a": a, "b": a, "c": a, "i": np.arange(4, dtype=np.int32), "j": np.arange(3, dtype=np.int64)},
                 path, {"format": "pt", "k": "v"}, {"b": "BF16", "c": "F16"})
    t, meta, d = st.load_file(path)
    bf = torch.from_numpy(a).to(torch.bfloat16).float().numpy()
    ok = (np.array_equal(t["a"], a) and np.array_equal(t["b"], bf) and
          np.array_equal(t["c"], a.astype(np.float16)) and d["b"] == "BF16" and d["c"] == "F16" and
          t["i"].dtype == np.int32 and t["j"].dtype == np.int64 and meta == {"format": "pt", "k": "v"})
    check("safetensors round trip F32/BF16 (RNE, = torch)/F16/I32/I64 + metadata", ok)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
    check("safetensors header padded to 8 bytes", (8 + n) % 8 == 0)
    raw = open(path, "rb").read()
    bad = []
    for name, blob in (("trunc", raw[:-4]), ("hlen", struct.pack("<Q", 1 << 40) + raw[8:]),
                       ("json", raw[:8] + b"x" + raw[9:])):
        p = os.path.join(tmp, name + ".safetensors")
        open(p, "wb").write(blob)
        try:
            st.load_file(p)
            bad.append(name)
        except st.SafetensorsError:
            pass
    check("safetensors rejects truncated file / header past end / bad JSON", not bad, str(bad))
    # sharded folder == single file
    args = ["make-model", "--seed", "3", "--hidden-size", "16", "--intermediate-size", "24",
            "--num-attention-heads", "4", "--num-key-value-heads", "2", "--vocab-size", "40"]
    q.main(args + ["--out", os.path.join(tmp, "one")])
    q.main(args + ["--out", os.path.join(tmp, "sh"), "--shards", "3"])
    a1, _ = st.load_folder_weights(os.path.join(tmp, "one"))
    a2, _ = st.load_folder_weights(os.path.join(tmp, "sh"))
    check("sharded model.safetensors.index.json == single file",
          set(a1) == set(a2) and all(np.array_equal(a1[k], a2[k]) for k in a1))


def check_forward():
    torch.manual_seed(0)
    for kw, label in ((dict(), "C16 H4 Hkv2 tied"), (dict(C=24, H=6, Hkv=2, L=3, tied=False), "C24 H6 Hkv2 L3 untied"),
                      (dict(H=4, Hkv=4), "MHA Hkv=H"), (dict(H=4, Hkv=1), "MQA Hkv=1")):
        m = tiny_model(seed=1, **kw)
        ad, _, _ = tiny_adapter(m, q.ALL_LINEAR)
        ids = [3, 17, 0, 39, 5, 22, 8]
        ref = q.forward(m, ids, ad)
        naive = naive_forward(m, ids, ad)
        err = float((ref - naive).abs().max())
        check(f"vectorised forward == loop forward (GQA h//(H/Hkv), rotate_half, RMSNorm, SwiGLU), {label}",
              err < 1e-5, f"max abs {err:.2e} (RoPE tables are fp32 by contract)")
    # RoPE tables: fp32 inv_freq = theta^(-2i/d)
    m = tiny_model(theta=1e6)
    cos, sin = m.rope(50)
    D = m.cfg.D
    exact = torch.tensor([[p * 1e6 ** (-2.0 * (i % (D // 2)) / D) for i in range(D)] for p in range(50)], dtype=F64)
    err = max(float((cos - exact.cos()).abs().max()), float((sin - exact.sin()).abs().max()))
    check("RoPE cos/sin tables (theta=1e6, fp32) vs float64 formula", err < 1e-5, f"max abs {err:.2e}")
    # causal: prefix logits independent of later tokens
    m = tiny_model(seed=2)
    a = q.forward(m, [1, 2, 3, 4, 5])
    b = q.forward(m, [1, 2, 3, 9, 11, 13])
    check("causal: logits of a prefix do not depend on later tokens", float((a[:3] - b[:3]).abs().max()) < 1e-12)
    # tied lm_head == untied with lm_head = embed
    cfg = q.Config(tiny_cfg(tied=True))
    w = q.random_weights(cfg, 5)
    mt = q.Model(cfg, w, F64)
    cfg2 = q.Config(tiny_cfg(tied=False))
    w2 = dict(w, **{"lm_head.weight": w["model.embed_tokens.weight"]})
    mu = q.Model(cfg2, w2, F64)
    check("tied lm_head == untied lm_head equal to embed_tokens",
          float((q.forward(mt, [1, 2, 3]) - q.forward(mu, [1, 2, 3])).abs().max()) < 1e-12)
    # fp32 vs fp64
    m32 = q.Model(cfg, w, torch.float32)
    err = float((q.forward(m32, list(range(20))).double() - q.forward(mt, list(range(20)))).abs().max())
    check("fp32 forward vs fp64 forward", err < 1e-4, f"max abs {err:.2e}")


def check_peft():
    m = tiny_model(seed=3)
    ids = [4, 8, 15, 16, 23, 42 % 40]
    for rslora in (False, True):
        ad, conf, tensors = tiny_adapter(m, q.ALL_LINEAR, r=4, alpha=8.0, rslora=rslora)
        merged = q.Model(m.cfg, {k: v.numpy() for k, v in m.w.items()}, F64)
        for key, (A, B, s) in ad.mods.items():
            merged.w[key + ".weight"] = merged.w[key + ".weight"] + s * (B @ A)
        want = 8.0 / (2.0 if rslora else 4.0)
        scales_ok = all(abs(s - want) < 1e-15 for _, _, s in ad.mods.values())
        err = float((q.forward(m, ids, ad) - q.forward(merged, ids)).abs().max())
        check(f"LoRA y = Wx + b + s*B*A*x equals merged W + s*B@A ({'rsLoRA alpha/sqrt(r)' if rslora else 'alpha/r'})",
              scales_ok and err < 1e-10, f"max abs {err:.2e}")
    # zero B -> base model
    ad, conf, tensors = tiny_adapter(m, ["q_proj", "v_proj"], b_std=0.0)
    check("B = 0 gives the base model exactly", torch.equal(q.forward(m, ids, ad), q.forward(m, ids)))
    # target_modules forms
    _, conf, tensors = tiny_adapter(m, q.ALL_LINEAR)
    for form in ("all-linear", q.ALL_LINEAR, r".*\.(q|k|v|o|gate|up|down)_proj"):
        c = dict(conf, target_modules=form)
        ok = len(q.Adapter(m.cfg, c, tensors, F64).mods) == 7 * m.cfg.L
        check(f"target_modules {form!r} selects all 7 projections per layer", ok)
    _, conf, tensors = tiny_adapter(m, ["q_proj", "v_proj"])
    refused = []
    for name, c, t in (("use_dora", dict(conf, use_dora=True), tensors),
                       ("bias=all", dict(conf, bias="all"), tensors),
                       ("missing tensor", conf, {k: v for k, v in list(tensors.items())[1:]}),
                       ("extra tensor", dict(conf, target_modules=["q_proj"]), tensors),
                       ("wrong r", dict(conf, r=3), tensors)):
        try:
            q.Adapter(m.cfg, c, t, F64)
        except q.RefError:
            refused.append(name)
    check("adapter reader refuses DoRA, bias, missing/extra tensors, wrong r", len(refused) == 5, str(refused))


def check_loss():
    m = tiny_model(seed=4)
    seqs = [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11, 12, 13, 14]]
    labels = [[-100, -100, 3, 4, 5], [6, 7, 8], [-100, 10, -100, 12, 13, 14]]
    loss, count = q.batch_loss(m, seqs, labels)
    nll, n = 0.0, 0
    for s, l in zip(seqs, labels):
        lg = q.forward(m, s)
        for t in range(len(s) - 1):
            if l[t + 1] != -100:
                z = lg[t]
                nll += float(torch.logsumexp(z, 0) - z[l[t + 1]])
                n += 1
    per_seq = []
    for s, l in zip(seqs, labels):
        per_seq.append(float(q.batch_loss(m, [s], [l])[0]))
    check("loss = sum of -log p(label[t+1] | logits[t]) over labelled tokens / labelled count",
          count == n == 9 and abs(float(loss) - nll / n) < 1e-12, f"count {count}")
    check("batch loss is token-weighted (differs from mean of per-sequence means)",
          abs(float(loss) - sum(per_seq) / 3) > 1e-6)


def check_gradcheck(quick):
    torch.manual_seed(0)
    m = tiny_model(seed=5, C=16, H=4, Hkv=2, L=2, F=24, V=40, theta=1e6)
    seqs = [[1, 5, 9, 33, 2], [7, 3, 21], [11, 12, 13, 14, 39, 0]]
    labels = [[-100, -100, 9, 33, 2], [7, 3, 21], [-100, 12, -100, 14, 39, 0]]
    cases = [(q.ALL_LINEAR, False, "all-linear r=2"), (["q_proj", "v_proj"], True, "q,v r=2 rsLoRA")]
    if quick:
        cases = cases[1:]
    for targets, rslora, label in cases:
        ad, _, _ = tiny_adapter(m, targets, r=2, rslora=rslora, b_std=0.3)
        named = ad.named_params()
        params = [p.clone().requires_grad_(True) for _, p in named]

        def f(*ps):
            ad.set_params(ps)
            return q.batch_loss(m, seqs, labels, ad)[0]

        ok = torch.autograd.gradcheck(f, tuple(params), eps=1e-6, atol=1e-8, rtol=1e-6, raise_exception=False)
        # explicit central differences, report the worst relative error per tensor
        loss = f(*params)
        grads = torch.autograd.grad(loss, params)
        worst = 0.0
        with torch.no_grad():
            for p, g in zip(params, grads):
                fd = torch.zeros_like(p)
                flat, fdf = p.view(-1), fd.view(-1)
                for i in range(flat.numel()):
                    old = float(flat[i])
                    flat[i] = old + 1e-6
                    lp = float(f(*params))
                    flat[i] = old - 1e-6
                    lm = float(f(*params))
                    flat[i] = old
                    fdf[i] = (lp - lm) / 2e-6
                rel = float((fd - g).norm() / max(float(g.norm()), 1e-30))
                worst = max(worst, rel)
        n = sum(p.numel() for p in params)
        check(f"gradcheck float64, {label}, {len(params)} tensors / {n} values, labels with -100, 3 seqs",
              ok and worst < 1e-6, f"torch.autograd.gradcheck={ok}; worst per-tensor rel L2 err of central FD {worst:.2e}")


def check_adamw():
    torch.manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2)]
    p0 = [torch.randn(s, dtype=F64) for s in shapes]
    targets = [torch.randn(s, dtype=F64) for s in shapes]
    lr0, wd, b1, b2, eps, maxn, T, warm = 1e-2, 0.01, 0.9, 0.999, 1e-8, 1.0, 7, 2
    lam = q.hf_linear_lambda(T, warm)
    check("HF linear schedule with warmup", [lam(t) for t in range(T + 1)] ==
          [0.0, 0.5, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    # torch
    ps = [torch.nn.Parameter(p.clone()) for p in p0]
    opt = torch.optim.AdamW(ps, lr=lr0, betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    for _ in range(T):
        opt.zero_grad()
        loss = sum(((p * 3 - t) ** 2).sum() for p, t in zip(ps, targets))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ps, maxn)
        opt.step()
        sch.step()
    # manual, from DESIGN.md §3
    xs = [p.clone() for p in p0]
    m = [torch.zeros_like(p) for p in p0]
    v = [torch.zeros_like(p) for p in p0]
    for step in range(1, T + 1):
        lr = lr0 * lam(step - 1)
        gs = [2 * (x * 3 - t) * 3 for x, t in zip(xs, targets)]
        norm = math.sqrt(sum(float((g * g).sum()) for g in gs))
        coef = min(1.0, maxn / (norm + 1e-6))
        gs = [g * coef for g in gs]
        for i, g in enumerate(gs):
            xs[i] = xs[i] * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            denom = (v[i].sqrt() / math.sqrt(1 - b2 ** step)) + eps
            xs[i] = xs[i] - (lr / (1 - b1 ** step)) * m[i] / denom
    err = max(float((a - b).abs().max()) for a, b in zip(ps, xs))
    check("torch AdamW + clip_grad_norm_ (coef = max/(norm+1e-6)) + schedule == formula", err < 1e-12,
          f"max abs {err:.2e}")


def check_autocast():
    """--precision bf16-autocast: the projections, lm_head and attention matmuls run in bf16
    (forward and backward); norms, softmax and the loss stay float32; gradients are float32;
    the result is close to, but not equal to, float32; the float32 path is not disturbed."""
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
    except ImportError:
        TorchDispatchMode = None
    F32, BF16 = torch.float32, torch.bfloat16
    m = tiny_model(seed=6, dtype=F32)
    ad, _, _ = tiny_adapter(m, q.ALL_LINEAR, r=2, b_std=0.3, dtype=F32)
    seqs, labels = [[1, 5, 9, 33, 2, 17], [7, 3, 21]], [[-100, 5, 9, 33, 2, 17], [7, 3, 21]]
    params = [p for _, p in ad.named_params()]
    for p in params:
        p.requires_grad_(True)

    def loss_grads(pname):
        with q.compute_context(pname):
            loss, _ = q.batch_loss(m, seqs, labels, ad)
        return loss, torch.autograd.grad(loss, params)

    l32, g32 = loss_grads("fp32")
    with q.compute_context("bf16-autocast"):
        h = q.rms_norm(m.w["model.embed_tokens.weight"][[1, 2]], m.w["model.layers.0.input_layernorm.weight"], 1e-6)
        y = q.linear(m, ad, h, "model.layers.0.self_attn.q_proj")
    check("bf16-autocast: q_proj (bias + LoRA) output is bfloat16, RMSNorm output float32",
          y.dtype == BF16 and h.dtype == F32, f"{y.dtype}, {h.dtype}")

    ops = []
    if TorchDispatchMode is not None:
        class Log(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                ops.append((func.__name__.split(".")[0],
                            {a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()}))
                return func(*args, **(kwargs or {}))
        with Log():
            lbf, gbf = loss_grads("bf16-autocast")
    else:
        lbf, gbf = loss_grads("bf16-autocast")
    if ops:
        mat = [(n, d) for n, d in ops if n in ("mm", "addmm", "bmm")]
        f32_ops = [(n, d) for n, d in ops if n in ("_softmax", "_log_softmax", "rsqrt", "mean")]
        L, T = m.cfg.L, len(seqs)
        check("bf16-autocast: every mm/addmm/bmm (forward and backward) has bf16 inputs; softmax, "
              "log_softmax, RMSNorm run in float32",
              all(d == {BF16} for _, d in mat) and bool(f32_ops) and all(d == {F32} for _, d in f32_ops),
              f"{len(mat)} matmuls, {len(f32_ops)} float32 reductions")
        n_add = sum(1 for n, _ in mat if n == "addmm")
        check("bf16-autocast: q/k/v with bias are one addmm each (bias added in bf16 as nn.Linear)",
              n_add == 3 * L * T, f"addmm {n_add}, expected {3 * L * T}")
    rel_loss = abs(float(lbf) - float(l32)) / abs(float(l32))
    num = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(gbf, g32)))
    rel_g = num / math.sqrt(sum(float((b ** 2).sum()) for b in g32))
    check("bf16-autocast: loss float32, gradients float32, close to float32 but not equal",
          lbf.dtype == F32 and all(g.dtype == F32 for g in gbf) and 0 < rel_loss < 1e-2 and 1e-4 < rel_g < 0.1,
          f"loss rel diff {rel_loss:.2e}, grad rel L2 {rel_g:.2e}")
    l32b, g32b = loss_grads("fp32")
    check("float32 path unchanged after an autocast run (bit for bit)",
          float(l32b) == float(l32) and all(torch.equal(a, b) for a, b in zip(g32b, g32)))


def run(quick=False):
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        check_safetensors(tmp)
    check_forward()
    check_peft()
    check_loss()
    check_adamw()
    check_autocast()
    check_gradcheck(quick)
    bad = [r for r in RESULTS if not r[1]]
    print(f"\n{len(RESULTS) - len(bad)}/{len(RESULTS)} checks passed")
    return 1 if bad else 0
