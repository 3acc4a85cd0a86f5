#!/usr/bin/env node
// Writes the reference token ids of every record of an alpaca JSON file, formatted with the
// seed template ("Instruction: {instruction}\nInput: {input}\nOutput: {output}", no Input line
// when the input is empty), or of every {"text": ...} line of a .jsonl file (such as
// ../shared/tokenizer/qwen2_cases.jsonl), as produced by Hugging Face `tokenizers` (the
// reference in ../shared/reference/tokenizer, after `npm ci` in a copy of it).
//
// Usage: node make_tokenizer_golden.js REFERENCE_DIR TOKENIZER_JSON (ALPACA_JSON | TEXTS_JSONL) OUT_BIN [PATCH_JSON]
//
// PATCH_JSON: an object whose members replace the tokenizer.json members of the same name (a
// variant of a real tokenizer, such as tokenizer_metaspace_first.patch.json); the tests apply
// the same patch.
//
// Output format (little-endian; the texts themselves are not stored):
//   "LTIDS001"                   8-byte magic
//   varint  record count
//   per record:
//     u64     FNV-1a 64 of the UTF-8 text (to check that the same text is encoded)
//     varint  id count
//     varint  each id
"use strict";
const fs = require("fs");
const path = require("path");

const [refDir, tokenizerJson, alpacaJson, outBin, patchJson] = process.argv.slice(2);
if (!outBin) {
  process.stderr.write("usage: node make_tokenizer_golden.js REFERENCE_DIR TOKENIZER_JSON (ALPACA_JSON | TEXTS_JSONL) OUT_BIN [PATCH_JSON]\n");
  process.exit(2);
}
const { Tokenizer } = require(path.resolve(refDir, "node_modules", "tokenizers"));

function seedText(r) {
  let s = "Instruction: " + r.instruction + "\n";
  if (r.input) s += "Input: " + r.input + "\n";
  return s + "Output: " + r.output;
}

function fnv1a64(buf) {
  let h = 0xcbf29ce484222325n;
  for (const b of buf) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n);
  return h;
}

function varint(out, v) {
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

async function main() {
  const spec = JSON.parse(fs.readFileSync(tokenizerJson, "utf8"));
  if (patchJson) Object.assign(spec, JSON.parse(fs.readFileSync(patchJson, "utf8")));
  const tok = Tokenizer.fromString(JSON.stringify(spec));
  const input = fs.readFileSync(alpacaJson, "utf8");
  const texts = alpacaJson.endsWith(".jsonl")
    ? input.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).text)
    : JSON.parse(input).map(seedText);
  const bytes = [...Buffer.from("LTIDS001", "ascii")];
  varint(bytes, texts.length);
  for (const text of texts) {
    const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    const h = Buffer.alloc(8);
    h.writeBigUInt64LE(fnv1a64(Buffer.from(text, "utf8")));
    bytes.push(...h);
    varint(bytes, ids.length);
    for (const id of ids) varint(bytes, id);
  }
  fs.writeFileSync(outBin, Buffer.from(bytes));
  process.stderr.write(`${texts.length} texts -> ${outBin} (${bytes.length} bytes)\n`);
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); });
