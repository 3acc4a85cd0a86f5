#!/usr/bin/env node
// Encode throughput of Hugging Face `tokenizers` (the Rust library, through its official Node
// bindings) on the same texts as bench_tokenizer: every alpaca record in the seed template.
//
//   node bench_tokenizer_hf.js REFERENCE_DIR TOKENIZER_JSON ALPACA_JSON [ITERATIONS]
//
// REFERENCE_DIR holds node_modules/tokenizers (../shared/reference/tokenizer after `npm ci`).
// Two single-threaded ways are timed: one encode() call per text (each call pays the
// JS <-> Rust crossing) and one encodeBatch() call for all texts with the thread pool held to
// one thread (RAYON_NUM_THREADS=1, set before the library loads). The faster of the two is
// reported, for the first pass and for the warm passes separately.
"use strict";
process.env.RAYON_NUM_THREADS = "1";
process.env.RAYON_RS_NUM_CPUS = "1";
const fs = require("fs");
const path = require("path");

const [refDir, tokenizerJson, alpacaJson, iterArg] = process.argv.slice(2);
if (!alpacaJson) {
  process.stderr.write("usage: node bench_tokenizer_hf.js REFERENCE_DIR TOKENIZER_JSON ALPACA_JSON [ITERATIONS]\n");
  process.exit(2);
}
const iterations = Math.max(2, parseInt(iterArg || "20", 10));
const { Tokenizer } = require(path.resolve(refDir, "node_modules", "tokenizers"));

function seedText(r) {
  let s = "Instruction: " + r.instruction + "\n";
  if (r.input) s += "Input: " + r.input + "\n";
  return s + "Output: " + r.output;
}

async function main() {
  let t0 = process.hrtime.bigint();
  const tok = Tokenizer.fromString(fs.readFileSync(tokenizerJson, "utf8"));
  const loadS = Number(process.hrtime.bigint() - t0) / 1e9;
  const texts = JSON.parse(fs.readFileSync(alpacaJson, "utf8")).map(seedText);
  const mb = texts.reduce((n, t) => n + Buffer.byteLength(t, "utf8"), 0) / 1e6;

  async function timeIt(label, pass) {
    let first = 0, rest = 0, checksum = 0n, tokens = 0;
    for (let it = 0; it < iterations; it++) {
      const t = process.hrtime.bigint();
      const encodings = await pass();
      const s = Number(process.hrtime.bigint() - t) / 1e9;
      if (it === 0) first = s; else rest += s;
      let sum = 0n, count = 0;
      for (const e of encodings) {
        const ids = e.getIds();
        count += ids.length;
        for (const id of ids) sum += BigInt(id);
      }
      checksum = sum;
      tokens = count;
    }
    const warm = (mb * (iterations - 1)) / rest;
    console.log(`  ${label}: first pass ${(mb / first).toFixed(2)} MB/s; warm ${warm.toFixed(2)} MB/s`);
    return { warm, first: mb / first, checksum, tokens };
  }

  console.log(`HF tokenizers: ${texts.length} texts, ${mb.toFixed(2)} MB, load ${loadS.toFixed(3)} s`);
  const single = await timeIt("encode() per text", async () => {
    const out = [];
    for (const t of texts) out.push(await tok.encode(t, null, { addSpecialTokens: false }));
    return out;
  });
  const batch = await timeIt("encodeBatch(), 1 thread", () =>
    tok.encodeBatch(texts, { addSpecialTokens: false }));
  if (single.checksum !== batch.checksum) throw new Error("encode and encodeBatch disagree");
  const warm = Math.max(single.warm, batch.warm);
  const first = Math.max(single.first, batch.first);
  console.log(`  ${single.tokens} tokens, id checksum ${single.checksum}`);
  console.log(`RESULT hf ${warm.toFixed(3)} ${first.toFixed(3)} ${single.checksum}`);
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); });
