// llama.cpp (node-llama-cpp's prebuilt CPU library) on loratune's GGUF exports, for
// tests/test_llama_cpp.cpp. Reads a job (JSON) from the file named by argv[2] and prints one
// JSON object: the tokenization of each text by each model file, and for each run the greedy
// tokens after the prompt (stopping at an end-of-generation token) and the probabilities of
// the first position's 20 most likely tokens.
//   job: {"texts": [...], "tokenize_with": FILE,
//         "runs": [{"model": FILE, "lora": FILE|null, "prompt": [ids], "tokens": N}]}
import {readFileSync} from "node:fs";
import {getLlama} from "node-llama-cpp";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const models = new Map();
async function model(file) {
  if (!models.has(file)) models.set(file, await llama.loadModel({modelPath: file}));
  return models.get(file);
}

const out = {tokenize: [], runs: []};
const tokenizer = await model(job.tokenize_with);
for (const text of job.texts) out.tokenize.push(Array.from(tokenizer.tokenize(text)));

for (const run of job.runs) {
  const m = await model(run.model);
  const ctx = await m.createContext({
    contextSize: 512,
    threads: 1,
    ...(run.lora ? {lora: {adapters: [{filePath: run.lora, scale: 1}]}} : {}),
  });
  const seq = ctx.getSequence();
  const tokens = [];
  let top = null;
  for await (const step of seq.evaluateWithMetadata(run.prompt, {probabilities: true},
                                                    {temperature: 0})) {
    if (top === null) top = Array.from(step.probabilities.entries()).slice(0, 20);
    if (m.isEogToken(step.token)) break;
    tokens.push(step.token);
    if (tokens.length >= run.tokens) break;
  }
  out.runs.push({tokens, top});
  await ctx.dispose();
}
for (const m of models.values()) await m.dispose();
console.log(JSON.stringify(out));
