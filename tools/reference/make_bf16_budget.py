#!/usr/bin/python3
"""The "bf16 budget": how far PyTorch's CPU autocast bf16 (what HF TrainingArguments(bf16=True)
does on CPU) moves the loss, the LoRA gradients and 10 AdamW steps away from the same
computation in float32, on golden cases of tests/golden/. Writes tests/golden/bf16_budget.json.

For each case it runs `qwen2_ref.py grads` (or `adamw`) twice, `--precision fp32` and
`--precision bf16-autocast`, with the ids / labels stored in the existing golden file and the
same model and adapter, into a temporary folder, and compares the two results. For the grads
cases it also runs `qwen2_ref.py token-nll` (the same forward, no backward) in both precisions
and compares the logits and the per-token NLL.

  python3 tools/reference/make_bf16_budget.py [--out tests/golden/bf16_budget.json] [--keep DIR]

Run from anywhere; paths are relative to the repository root.
"""

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import safetensors_io as st  # noqa: E402

G = "tests/golden"
REF = "tools/reference/qwen2_ref.py"
PRECISIONS = ("fp32", "bf16-autocast")
GRADS = [  # case (golden file name without .safetensors), model, adapter
    ("grads_tiny_qv", "tiny", "tiny_qv"),
    ("grads_tiny_all", "tiny", "tiny_all"),
    ("grads_odd_all", "odd", "odd_all"),
    ("grads_sharp_all", "sharp", "sharp_all"),
    ("grads_tiny_llama_all", "tiny_llama", "tiny_llama_all"),
    ("grads_tiny_llama_bias_all", "tiny_llama_bias", "tiny_llama_bias_all"),
    ("grads_tiny_qwen3_all", "tiny_qwen3", "tiny_qwen3_all"),
    ("grads_tiny_mistral_all", "tiny_mistral", "tiny_mistral_all"),
]
ADAMW = [("adamw_tiny_qv_10steps", "tiny", "tiny_qv")]
LORA = re.compile(r".*\.lora_[AB]\.weight$")


def sig(x, n=4):
    """x rounded to n significant digits (for the derived differences)."""
    return float(f"{x:.{n}g}")


def seqs_text(tensors, prefix):
    n = len([k for k in tensors if re.fullmatch(rf"{prefix}\.\d+", k)])
    return ";".join(",".join(str(int(v)) for v in tensors[f"{prefix}.{i}"]) for i in range(n))


def golden_inputs(case, model, adapter):
    tensors, meta, _ = st.load_file(os.path.join(ROOT, G, case + ".safetensors"))
    want = {"model": f"{G}/models/{model}", "adapter": f"{G}/adapters/{adapter}"}
    for k, v in want.items():
        if os.path.normpath(meta.get(k, "")) != os.path.normpath(v):
            raise SystemExit(f"make_bf16_budget: {case}: metadata {k}={meta.get(k)!r}, expected {v}")
    ids, labels = seqs_text(tensors, "ids"), seqs_text(tensors, "labels")
    if ids != meta.get("ids") or labels != meta.get("labels"):
        raise SystemExit(f"make_bf16_budget: {case}: ids/labels tensors disagree with the metadata")
    return tensors, meta, want["model"], want["adapter"], ids, labels


def run_ref(argv, work, out_name, commands):
    """Runs qwen2_ref.py with --out WORK/out_name; records the command line with $WORK."""
    out = os.path.join(work, out_name)
    shown = "python3 " + " ".join(shlex.quote(a) for a in [REF] + argv) + f" --out $WORK/{out_name}"
    print("+ " + shown, flush=True)
    commands.append(shown)
    subprocess.run([sys.executable, REF] + argv + ["--out", out], cwd=ROOT, check=True)
    return st.load_file(out)


def lora(tensors):
    return {k: np.asarray(v, np.float64) for k, v in tensors.items() if LORA.fullmatch(k)}


def rel_l2(a, b):
    """||a - b|| / ||b|| over the concatenation of the tensors in dicts a and b (same names)."""
    num = math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in b))
    den = math.sqrt(sum(float((b[k] ** 2).sum()) for k in b))
    return num / den


def grads_case(case, model, adapter, work, commands):
    golden, gmeta, mdir, adir, ids, labels = golden_inputs(case, model, adapter)
    res = {}
    for p in PRECISIONS:
        argv = ["grads", "--precision", p, "--model", mdir, "--adapter", adir, "--ids", ids, "--labels", labels]
        res[p] = run_ref(argv, work, f"{case}.{p}.safetensors", commands)
    (t32, m32, _), (tbf, mbf, _) = res["fp32"], res["bf16-autocast"]
    l32, lbf = float(m32["loss_f64"]), float(mbf["loss_f64"])
    g32, gbf = lora(t32), lora(tbf)
    if set(g32) != set(gbf) or not g32:
        raise SystemExit(f"make_bf16_budget: {case}: LoRA tensor names differ")
    per, skipped = {}, []
    for k in g32:
        n = float(np.linalg.norm(g32[k]))
        if n == 0.0:
            skipped.append(k)
            continue
        per[k] = float(np.linalg.norm(gbf[k] - g32[k])) / n
    worst = max(per, key=per.get)
    g64 = lora(golden)
    fwd = forward_quantities(case, mdir, adir, ids, labels, work, commands, {"fp32": l32, "bf16-autocast": lbf})
    return {
        "golden": f"{G}/{case}.safetensors", "model": mdir, "adapter": adir,
        "num_labelled": int(t32["num_labelled"][0]), "lora_tensors": len(g32),
        "loss_fp32": l32, "loss_bf16": lbf,
        "loss_abs_diff": sig(abs(lbf - l32)), "loss_rel_diff": sig(abs(lbf - l32) / abs(l32)),
        "grad_rel_l2": sig(rel_l2(gbf, g32)),
        "grad_max_tensor_rel_l2": sig(per[worst]), "grad_max_tensor": worst,
        "grad_tensors_skipped_zero_norm": skipped,
        **fwd,
        "fp32_vs_fp64_golden": {"loss_abs_diff": sig(abs(l32 - float(gmeta["loss_f64"]))),
                                "grad_rel_l2": sig(rel_l2(g32, g64))},
    }


def forward_quantities(case, mdir, adir, ids, labels, work, commands, losses):
    """`qwen2_ref.py token-nll` (the grads forward, adapter applied, each sequence on its own,
    no backward) in both precisions: relative L2 of the logits and the per-token NLL. Checks
    that the mean of the per-token NLL is the loss of the grads run."""
    res = {}
    for p in PRECISIONS:
        argv = ["token-nll", "--precision", p, "--model", mdir, "--adapter", adir, "--ids", ids, "--labels", labels]
        t, _, _ = run_ref(argv, work, f"{case}.{p}.token-nll.safetensors", commands)
        n = len([k for k in t if re.fullmatch(r"logits\.\d+", k)])
        logits = np.concatenate([np.asarray(t[f"logits.{i}"], np.float64).ravel() for i in range(n)])
        nll = [float(x) for i in range(n) for x in np.asarray(t[f"nll.{i}"], np.float32)]
        if int(t["num_labelled"][0]) != len(nll):
            raise SystemExit(f"make_bf16_budget: {case}: {p}: num_labelled disagrees with the nll count")
        mean = math.fsum(nll) / len(nll)
        if abs(mean - losses[p]) > 1e-6 * max(1.0, abs(losses[p])):
            raise SystemExit(f"make_bf16_budget: {case}: {p}: mean token NLL {mean!r} != grads loss {losses[p]!r}")
        res[p] = logits, nll
    (z32, n32), (zbf, nbf) = res["fp32"], res["bf16-autocast"]
    d = math.sqrt(math.fsum((b - a) ** 2 for a, b in zip(n32, nbf)))
    return {
        "logits_rel_l2": sig(float(np.linalg.norm(zbf - z32)) / float(np.linalg.norm(z32))),
        "token_nll_fp32": n32, "token_nll_bf16": nbf,
        "token_nll_l2_diff": sig(d), "token_nll_rms_diff": sig(d / math.sqrt(len(n32))),
    }


def adamw_case(case, model, adapter, work, commands):
    golden, gmeta, mdir, adir, ids, labels = golden_inputs(case, model, adapter)
    if gmeta["betas"] != "0.9,0.999" or float(gmeta["eps"]) != 1e-8:
        raise SystemExit(f"make_bf16_budget: {case}: betas/eps are not the defaults")
    hyper = ["--steps", gmeta["steps"], "--lr", gmeta["lr"], "--weight-decay", gmeta["weight_decay"],
             "--max-grad-norm", gmeta["max_grad_norm"], "--warmup-steps", gmeta["warmup_steps"]]
    if gmeta["total_steps"] != gmeta["steps"]:
        hyper += ["--total-steps", gmeta["total_steps"]]
    res = {}
    for p in PRECISIONS:
        argv = ["adamw", "--precision", p, "--model", mdir, "--adapter", adir, "--ids", ids, "--labels", labels] + hyper
        res[p] = run_ref(argv, work, f"{case}.{p}.safetensors", commands)
    (t32, m32, _), (tbf, mbf, _) = res["fp32"], res["bf16-autocast"]
    l32 = [float(x) for x in m32["losses_f64"].split(",")]
    lbf = [float(x) for x in mbf["losses_f64"].split(",")]
    n32 = [float(x) for x in m32["grad_norms_f64"].split(",")]
    nbf = [float(x) for x in mbf["grad_norms_f64"].split(",")]
    w32, wbf = lora(t32), lora(tbf)
    a0, _, _ = st.load_file(os.path.join(ROOT, adir, "adapter_model.safetensors"))
    w0 = lora(a0)
    d32 = {k: w32[k] - w0[k] for k in w32}
    dbf = {k: wbf[k] - w0[k] for k in w32}
    diffs = [abs(b - a) for a, b in zip(l32, lbf)]
    return {
        "golden": f"{G}/{case}.safetensors", "model": mdir, "adapter": adir,
        "steps": int(gmeta["steps"]), "lr": float(gmeta["lr"]), "weight_decay": float(gmeta["weight_decay"]),
        "max_grad_norm": float(gmeta["max_grad_norm"]), "warmup_steps": int(gmeta["warmup_steps"]),
        "losses_fp32": l32, "losses_bf16": lbf,
        "step_loss_abs_diff": [sig(d) for d in diffs],
        "max_step_loss_abs_diff": sig(max(diffs)),
        "max_step_loss_rel_diff": sig(max(d / abs(a) for d, a in zip(diffs, l32))),
        "grad_norms_fp32": n32, "grad_norms_bf16": nbf,
        "final_weight_rel_l2": sig(rel_l2(wbf, w32)),
        "update_rel_l2": sig(rel_l2(dbf, d32)),
        "fp32_vs_fp64_golden": {"max_step_loss_abs_diff": sig(max(
            abs(a - float(b)) for a, b in zip(l32, gmeta["losses_f64"].split(",")))),
            "final_weight_rel_l2": sig(rel_l2(w32, lora(golden)))},
    }


NOTES = [
    "fp32 = weights, LoRA parameters and compute in float32; bf16 = qwen2_ref.py --precision bf16-autocast: "
    "the same float32 tensors, forward run inside torch.autocast('cpu', dtype=torch.bfloat16) (HF "
    "TrainingArguments(bf16=True) on CPU): every linear (bias added inside the bf16 addmm), every LoRA A/B "
    "product, the two attention matmuls and lm_head run in bf16, and so do their backward matmuls; RMSNorm, "
    "RoPE (bf16 q/k times float32 cos/sin promotes to float32), softmax and the loss (logits cast to float32 "
    "before log_softmax) are float32; residual adds are float32; SiLU and the gate*up product stay bf16. "
    "backward() runs outside the autocast context; gradients are read in float32 from the float32 parameters "
    "(they are bf16 values, cast up).",
    "loss_rel_diff = |loss_bf16 - loss_fp32| / loss_fp32; grad_rel_l2 = ||g_bf16 - g_fp32||_2 / ||g_fp32||_2 "
    "over all LoRA gradients concatenated; grad_max_tensor_rel_l2 = the largest per-tensor ratio (tensor named "
    "in grad_max_tensor); tensors whose float32 gradient is exactly zero (lora_A when lora_B = 0) would be "
    "skipped and listed in grad_tensors_skipped_zero_norm (none are: every golden adapter has B != 0).",
    "Forward only (qwen2_ref.py token-nll: the grads forward with the adapter applied, each sequence on its own, "
    "LoRA parameters requiring grad, no backward): logits_rel_l2 = ||logits_bf16 - logits_fp32||_2 / "
    "||logits_fp32||_2 over all positions of all sequences (bf16 logits cast to float32 first); token_nll_fp32 / "
    "token_nll_bf16 = -log p(labels[t+1]) at every position t whose label is not -100, in sequence order, "
    "log_softmax in float32 from the cast logits (their mean is loss_fp32 / loss_bf16, checked to 1e-6); "
    "token_nll_l2_diff = ||nll_bf16 - nll_fp32||_2, token_nll_rms_diff = token_nll_l2_diff / sqrt(num_labelled).",
    "AdamW: losses_*[k] is the loss before step k; max_step_loss_abs_diff = max_k |losses_bf16[k] - "
    "losses_fp32[k]|; final_weight_rel_l2 = relative L2 difference of the final LoRA weights (all tensors "
    "concatenated); update_rel_l2 = the same on (final - initial) weights, i.e. on what training moved.",
    "fp32_vs_fp64_golden: float32 against the committed float64 golden, the float32 noise floor for scale.",
    "Losses are the exact float32 values (as float64); differences are rounded to 4 significant digits. "
    "Single-threaded CPU torch; bf16 matmul kernels differ between torch builds and CPUs, so the numbers "
    "are a budget (a scale), not bit-exact targets.",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=f"{G}/bf16_budget.json")
    ap.add_argument("--keep", help="keep the intermediate safetensors files in this folder")
    args = ap.parse_args()
    out_path = args.out if os.path.isabs(args.out) else os.path.join(os.getcwd(), args.out)
    import torch  # only for the version string; the computations run in qwen2_ref.py

    commands = []
    with tempfile.TemporaryDirectory() as tmp:
        work = os.path.abspath(args.keep) if args.keep else tmp
        os.makedirs(work, exist_ok=True)
        cases = {}
        for case, model, adapter in GRADS:
            cases[case] = grads_case(case, model, adapter, work, commands)
        for case, model, adapter in ADAMW:
            cases[case] = adamw_case(case, model, adapter, work, commands)
    doc = {"what": "bf16 budget: PyTorch CPU autocast bf16 vs float32 on the same golden inputs "
                   "(tools/reference/make_bf16_budget.py)",
           "torch": torch.__version__, "notes": NOTES}
    doc.update(cases)
    doc["commands"] = {"made_by": "python3 tools/reference/make_bf16_budget.py --out " + os.path.relpath(out_path, ROOT),
                       "work": "$WORK = a temporary folder, removed afterwards",
                       "runs": commands}
    text = json.dumps(doc, indent=2)
    # numeric lists on one line
    text = re.sub(r"\[\s+([-0-9.eE+,\s]+?)\s+\]", lambda mo: "[" + re.sub(r",\s+", ", ", mo.group(1)) + "]", text)
    tmp_out = out_path + ".tmp"
    with open(tmp_out, "w") as f:
        f.write(text + "\n")
    os.replace(tmp_out, out_path)
    for case in cases:
        c = cases[case]
        if "grad_rel_l2" in c:
            print(f"{case:26s} loss rel diff {c['loss_rel_diff']:.2e}  grad rel L2 {c['grad_rel_l2']:.2e}  "
                  f"worst tensor {c['grad_max_tensor_rel_l2']:.2e}  logits rel L2 {c['logits_rel_l2']:.2e}  "
                  f"token NLL rms diff {c['token_nll_rms_diff']:.2e}")
        else:
            print(f"{case:26s} max step loss abs diff {c['max_step_loss_abs_diff']:.2e}  final weights rel L2 "
                  f"{c['final_weight_rel_l2']:.2e}  update rel L2 {c['update_rel_l2']:.2e}")
    print(f"wrote {os.path.relpath(out_path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
