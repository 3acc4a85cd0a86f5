#!/usr/bin/env python3
"""Texts for tokenizer_qwen2_extra_cases.jsonl: random mixes of the hard parts of the Qwen2
pre-tokenizer (contractions with Unicode case folding, white space kinds, CR/LF runs, marks that
NFC composes, Hangul, emoji, special-token look-alikes) and long single-class words (the heap
path of BPE). Writes texts.jsonl and split_special.jsonl; the ids come from the reference:

  node encode.js --jsonl --with-text texts.jsonl > a.jsonl
  node encode.js --jsonl --with-text --split-special split_special.jsonl > b.jsonl

and the test file is a.jsonl followed by b.jsonl with "split_special": true on each line.
"""
import json, random
random.seed(12345)
atoms = list("abcXYZ019 ") + ["\t","\n","\r","\r\n","  ","'", "'s","'S","'t","'re","'VE","'m","'ll","'D","'ſ","'x",
  "\"", ",", ".", "!", "?", "...", "-", "_", "(", ")", "中", "文", "测试", "，", "。", "！", "\u00a0", "\u3000", "\u2028", "\u0085",
  "\x1c", "\x0b", "\x0c", "\u0301", "\u0308", "e", "A", "\u212b", "\u1e9b\u0323", "한", "\u1100\u1161", "\u11a8", "😀", "👍🏽", "①", "²", "½",
  "مرحبا", "नमस्ते", "\u0915\u093c", "Ω", "\u2126", "ﬁ", "Ⅻ", "<|im_start|>", "<|endoftext|>", "<|im_end|>", "<|im_", "|>", "<", "\ufeff", "\u200b",
  "hello", " world", "Don't", "I'M", "e\u0301", "\u00e9", "ö", "o\u0308", "123456", "3.14", "$", "€", "🇨🇳", "\u0000", "\x7f", "\ud7a3", "ſ"]
out=[]
for i in range(700):
    n=random.randint(1,25)
    out.append("".join(random.choice(atoms) for _ in range(n)))
for s in ["a"*300, "中"*150, " "*300, "\n"*50, "ab"*200+"!", "'"+"s"*400, "😀"*80, "1"*50, " \t"*100+"x", "Hello"+" "*299+"world"]:
    out.append(s)
with open("texts.jsonl","w") as f:
    for s in out: f.write(json.dumps(s)+"\n")
ss = ["<|im_start|>user\nhi<|im_end|>\n", "<|endoftext|><|endoftext|>",
      "a<|im_end|>b <|im_start|> c", "<|im_start|", "x<|endoftext|>y"]
with open("split_special.jsonl", "w") as f:
    for s in ss: f.write(json.dumps(s)+"\n")
