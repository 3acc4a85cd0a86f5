// The official openai client against a running `loratune serve`: lists the models, sends a
// chat completion and a streamed one, and prints what the client parsed as one JSON line.
// usage: node check.mjs BASE_URL MODEL API_KEY
import OpenAI from "openai";

const [baseURL, model, apiKey] = process.argv.slice(2);
if (!baseURL || !model || !apiKey) {
  console.error("usage: node check.mjs BASE_URL MODEL API_KEY");
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const models = [];
for await (const m of client.models.list()) models.push(m.id);

const messages = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "你好" },
];
const chat = await client.chat.completions.create({
  model,
  messages,
  max_tokens: 12,
  temperature: 0,
});

const stream = await client.chat.completions.create({
  model,
  messages,
  max_tokens: 12,
  temperature: 0,
  stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
let chunks = 0;
let streamFinish = null;
let streamUsage = null;
for await (const chunk of stream) {
  chunks += 1;
  if (chunk.usage) streamUsage = chunk.usage;
  for (const choice of chunk.choices) {
    streamed += choice.delta?.content ?? "";
    if (choice.finish_reason) streamFinish = choice.finish_reason;
  }
}

let badModel = null;
try {
  await client.chat.completions.create({ model: "no-such-model", messages, max_tokens: 2 });
} catch (e) {
  badModel = { status: e.status, code: e.code ?? null, type: e.type ?? null };
}

console.log(
  JSON.stringify({
    models,
    chat: {
      object: chat.object,
      content: chat.choices[0].message.content,
      role: chat.choices[0].message.role,
      finish_reason: chat.choices[0].finish_reason,
      usage: chat.usage,
    },
    stream: { content: streamed, chunks, finish_reason: streamFinish, usage: streamUsage },
    bad_model: badModel,
  }),
);
