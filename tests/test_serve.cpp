// loratune serve through HTTP: a tiny model with the real Qwen2 tokenizer and two random
// adapters, served on a free loopback port.
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "io/json_file.h"
#include "model/transformer.h"
#include "serve/engine.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace loratune {
namespace {

// A random adapter (B ≠ 0, so that it changes the output) on `targets`, made once.
std::string make_adapter(const std::string& name, const std::string& targets, int seed) {
  static test::TempDir dir;
  const std::string out = dir / name;
  if (!std::filesystem::exists(out + "/adapter_config.json")) {
    test::CommandResult r = test::run_cli(
        "debug init-adapter --model '" + test::qwen2_vocab_tiny_model_dir() + "' --out '" + out +
        "' --target-modules " + targets + " --b-std 0.2 --seed " + std::to_string(seed));
    if (r.status != 0) ADD_FAILURE() << r.output;
  }
  return out;
}
const std::string& adapter_a() {
  static const std::string dir = make_adapter("a", "q_proj,v_proj", 1);
  return dir;
}
const std::string& adapter_b() {
  static const std::string dir = make_adapter("b", "all-linear", 2);
  return dir;
}

// `loratune serve` in the background on a free port, stopped with SIGTERM at the end.
class Server {
 public:
  explicit Server(const std::string& extra = "") {
    const std::string cmd =
        "( '" + test::binary() + "' serve --model '" + test::qwen2_vocab_tiny_model_dir() +
        "' --model-name base --adapter a='" + adapter_a() + "' --adapter b='" + adapter_b() +
        "' --port 0 --threads 2 " + extra + " 2>'" + dir_ / "log.txt" + "' & echo $! >'" +
        dir_ / "pid.txt" + "'; wait $!; echo $? >'" + dir_ / "status.txt" + "' ) >/dev/null 2>&1 &";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot start the server";
    const std::string marker = "listening on http://127.0.0.1:";
    for (int i = 0; i < 600 && port_ == 0; ++i) {
      const std::string log = test::read_file(dir_ / "log.txt");
      const size_t at = log.find(marker);
      if (at != std::string::npos && log.find('(', at) != std::string::npos)
        port_ = std::stoi(log.substr(at + marker.size()));
      else if (std::filesystem::exists(dir_ / "status.txt"))
        break;
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (port_ == 0) ADD_FAILURE() << "the server did not start: " << log();
    pid_ = std::stoi("0" + test::read_file(dir_ / "pid.txt"));
  }
  ~Server() {
    if (pid_ > 0 && !std::filesystem::exists(dir_ / "status.txt")) stop();
  }
  // SIGTERM, then the exit status ("" when it did not exit within 30 s).
  std::string stop() {
    if (pid_ > 0) kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      if (std::filesystem::exists(dir_ / "status.txt")) {
        const std::string s = test::read_file(dir_ / "status.txt");
        if (!s.empty()) return s;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return "";
  }
  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(120);
    return c;
  }
  std::string log() const { return test::read_file(dir_ / "log.txt"); }
  int port() const { return port_; }

 private:
  test::TempDir dir_;
  int port_ = 0;
  int pid_ = 0;
};

struct Reply {
  int status = 0;
  Json body;
};

Reply post(const Server& s, const std::string& path, const std::string& body,
           const httplib::Headers& headers = {}) {
  auto res = s.client()->Post(path, headers, body, "application/json");
  if (!res) return {-1, Json()};
  Reply r{res->status, Json()};
  try {
    r.body = Json::parse(res->body);
  } catch (const nlohmann::json::exception&) {
    r.body = res->body;
  }
  return r;
}

Reply get(const Server& s, const std::string& path, const httplib::Headers& headers = {}) {
  auto res = s.client()->Get(path, headers);
  if (!res) return {-1, Json()};
  return {res->status, Json::parse(res->body)};
}

// What `loratune generate` prints for the raw prompt, greedy, without its final newline, and
// the ids it generated.
struct Generated {
  std::string text;
  Json ids;
};
Generated generate(const std::string& adapter, const std::string& prompt, int tokens,
                   const std::string& flags = "--template raw") {
  test::TempDir dir;
  test::CommandResult r = test::run_shell(
      "'" + test::binary() + "' generate --model '" + test::qwen2_vocab_tiny_model_dir() + "' " +
      (adapter.empty() ? "" : "--adapter '" + adapter + "' ") + "--prompt '" + prompt + "' " +
      flags + " --max-new-tokens " + std::to_string(tokens) + " --threads 2 --ids-out '" +
      dir / "ids.json" + "' 2>/dev/null");
  EXPECT_EQ(r.status, 0) << r.output;
  if (!r.output.empty() && r.output.back() == '\n') r.output.pop_back();
  return {r.output, Json::parse(test::read_file(dir / "ids.json"))};
}
std::string generate_text(const std::string& adapter, const std::string& prompt, int tokens,
                          const std::string& flags = "--template raw") {
  return generate(adapter, prompt, tokens, flags).text;
}

Json completion(const std::string& model, const std::string& prompt, int tokens) {
  return {{"model", model}, {"prompt", prompt}, {"max_tokens", tokens}, {"temperature", 0}};
}

// The text of an SSE stream's chunks, and the finish reason of its last choice.
struct Streamed {
  std::string text;
  std::string finish_reason;
  int chunks = 0;
  bool done = false;  // ended with data: [DONE]
  Json usage;
};
Streamed read_stream(const std::string& sse, bool chat) {
  Streamed s;
  std::istringstream lines(sse);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    const Json chunk = Json::parse(data);
    ++s.chunks;
    if (chunk.contains("usage")) s.usage = chunk["usage"];
    for (const Json& c : chunk["choices"]) {
      if (chat && c["delta"].contains("content"))
        s.text += c["delta"]["content"].get<std::string>();
      if (!chat) s.text += c["text"].get<std::string>();
      if (!c["finish_reason"].is_null()) s.finish_reason = c["finish_reason"].get<std::string>();
    }
  }
  return s;
}

Json completion_with_ids(const std::string& model, const std::string& prompt, int tokens) {
  Json body = completion(model, prompt, tokens);
  body["return_token_ids"] = true;
  return body;
}

// The engine runs the requests on the thread that calls run() (the one that loaded the model)
// until shutdown() from another thread; shutdown() waits for run() to return, and returns at
// once where run() is not running, as run() does after a shutdown.
TEST(ServeEngine, RunsOnTheCallingThreadUntilShutdown) {
  Transformer model(test::tiny_model_dir());
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(test::tiny_model_dir());
  serve::Engine engine(model, tok, 2, 64, 4);
  serve::GenerationRequest request;
  request.prompt = {5, 6, 7};
  request.max_tokens = 6;
  std::shared_ptr<serve::Job> job;
  std::thread client([&] {
    job = engine.submit(request);
    std::string text;
    while (job && !job->wait(text, 1000)) {
    }
    engine.shutdown();  // also when the submit failed, so that run() returns
  });
  engine.run();
  client.join();
  ASSERT_NE(job, nullptr);
  EXPECT_EQ(job->token_ids().size(), 6u);
  engine.run();  // after shutdown(): returns at once
  EXPECT_EQ(engine.submit(request), nullptr);
  serve::Engine idle(model, tok, 1, 64, 1);
  idle.shutdown();  // run() never ran
}

// In both modes (the kernels of generation and serving are row-invariant: a row's values do not
// depend on the other rows of its batch), alone and in batches that come and go.
TEST(Serve, GreedyOutputOfEachAdapterEqualsGenerate) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  const std::string prompts[] = {"Instruction: 你好\nOutput: ", "The capital of France is"};
  const std::pair<std::string, std::string> models[] = {
      {"a", adapter_a()}, {"b", adapter_b()}, {"base", ""}};
  for (const char* bf16 : {"true", "false"}) {
    SCOPED_TRACE(std::string("--bf16 ") + bf16);
    const std::string mode = std::string(" --bf16 ") + bf16;
    std::map<std::pair<std::string, std::string>, Generated> expected;
    for (const auto& [name, dir] : models)
      for (const std::string& p : prompts)
        expected[{name, p}] = generate(dir, p, 24, "--template raw" + mode);
    const auto first = [&](const std::string& model) { return expected[{model, prompts[0]}].ids; };
    EXPECT_NE(first("a"), first("b"));
    EXPECT_NE(first("a"), first("base"));

    Server server("--max-batch 4" + mode);
    for (const auto& [key, want] : expected) {
      const Reply r =
          post(server, "/v1/completions", completion_with_ids(key.first, key.second, 24).dump());
      ASSERT_EQ(r.status, 200) << r.body.dump();
      EXPECT_EQ(r.body["choices"][0]["token_ids"], want.ids) << key.first << ": " << key.second;
      EXPECT_EQ(r.body["choices"][0]["text"], want.text) << key.first << ": " << key.second;
      EXPECT_EQ(r.body["model"], key.first);
    }
    // All six at once, three times: four share the batch, two wait for a slot and join it
    // later, at a step that the timing decides.
    for (int round = 0; round < 3; ++round) {
      std::vector<std::future<Reply>> replies;
      for (const auto& [key, want] : expected)
        replies.push_back(std::async(std::launch::async, [&server, key = key, round] {
          std::this_thread::sleep_for(
              std::chrono::milliseconds(round * 7 * key.second.size() % 90));
          return post(server, "/v1/completions",
                      completion_with_ids(key.first, key.second, 24).dump());
        }));
      size_t i = 0;
      for (const auto& [key, want] : expected) {
        const Reply r = replies[i++].get();
        ASSERT_EQ(r.status, 200) << r.body.dump();
        EXPECT_EQ(r.body["choices"][0]["token_ids"], want.ids)
            << "concurrent " << key.first << ": " << key.second;
        EXPECT_EQ(r.body["model"], key.first);
      }
    }
    EXPECT_EQ(server.stop(), "0\n") << server.log();
  }
}

TEST(Serve, ChatUsesTheAdaptersTrainingTemplateAndTheModelsOwn) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  // Adapter a says it was trained with the seed template; the base model's tokenizer_config.json
  // has Qwen2's ChatML template.
  test::write_file(adapter_a() + "/prompt_template.json", "{\"template\": \"seed\"}\n");
  const std::string seed_text = generate_text(adapter_a(), "你好", 16, "--template seed");
  const std::string chatml_text = generate_text("", "你好", 16, "--template chatml");
  Server server;
  auto chat = [&](const std::string& model) {
    const Json body = {{"model", model},
                       {"messages", {{{"role", "user"}, {"content", "你好"}}}},
                       {"max_tokens", 16},
                       {"temperature", 0}};
    return post(server, "/v1/chat/completions", body.dump());
  };
  const Reply a = chat("a");
  ASSERT_EQ(a.status, 200) << a.body.dump();
  EXPECT_EQ(a.body["choices"][0]["message"]["content"], seed_text);
  EXPECT_EQ(a.body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(a.body["object"], "chat.completion");
  const Reply base = chat("base");
  ASSERT_EQ(base.status, 200) << base.body.dump();
  EXPECT_EQ(base.body["choices"][0]["message"]["content"], chatml_text);
  std::filesystem::remove(adapter_a() + "/prompt_template.json");
}

TEST(Serve, StreamedChunksConcatenateToTheText) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  Server server;
  Json body = completion("b", "Instruction: 写一首诗\nOutput: ", 20);
  const Reply whole = post(server, "/v1/completions", body.dump());
  ASSERT_EQ(whole.status, 200);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto res = server.client()->Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  const Streamed s = read_stream(res->body, false);
  EXPECT_TRUE(s.done);
  EXPECT_GT(s.chunks, 2);
  EXPECT_EQ(s.text, whole.body["choices"][0]["text"]);
  EXPECT_EQ(s.finish_reason, whole.body["choices"][0]["finish_reason"]);
  EXPECT_EQ(s.usage, whole.body["usage"]);
  EXPECT_EQ(whole.body["usage"]["completion_tokens"], 20);

  Json chat = {{"model", "a"},
               {"messages",
                {{{"role", "system"}, {"content", "Be brief."}},
                 {{"role", "user"}, {"content", "hi"}},
                 {{"role", "assistant"}, {"content", "hello"}},
                 {{"role", "user"}, {"content", "more"}}}},
               {"max_tokens", 12},
               {"temperature", 0}};
  const Reply chat_whole = post(server, "/v1/chat/completions", chat.dump());
  ASSERT_EQ(chat_whole.status, 200) << chat_whole.body.dump();
  chat["stream"] = true;
  res = server.client()->Post("/v1/chat/completions", chat.dump(), "application/json");
  ASSERT_TRUE(res);
  const Streamed cs = read_stream(res->body, true);
  EXPECT_TRUE(cs.done);
  EXPECT_EQ(cs.text, chat_whole.body["choices"][0]["message"]["content"]);
}

TEST(Serve, StopStringsEndTheTextBeforeThem) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  Server server;
  const Reply whole = post(server, "/v1/completions", completion("a", "The answer:", 24).dump());
  ASSERT_EQ(whole.status, 200);
  const std::string text = whole.body["choices"][0]["text"];
  ASSERT_GE(text.size(), 6u);
  // One whole character from the middle of the text.
  size_t at = text.size() / 2;
  while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
  size_t end = at + 1;
  while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
  const std::string stop = text.substr(at, end - at);
  ASSERT_FALSE(stop.empty()) << text;
  Json body = completion("a", "The answer:", 24);
  body["stop"] = {stop};
  const Reply cut = post(server, "/v1/completions", body.dump());
  ASSERT_EQ(cut.status, 200);
  EXPECT_EQ(cut.body["choices"][0]["text"], text.substr(0, text.find(stop)));
  EXPECT_EQ(cut.body["choices"][0]["finish_reason"], "stop");
  body["stream"] = true;
  auto res = server.client()->Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(read_stream(res->body, false).text, text.substr(0, text.find(stop)));
}

TEST(Serve, BadInputGetsItsStatusAndTheServerGoesOn) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  Server server("--ctx 64");
  const std::string long_prompt(400, 'x');
  const std::pair<std::string, int> cases[] = {
      {"{not json", 400},
      {"[1, 2]", 400},
      {R"({"prompt": "hi"})", 400},
      {R"({"model": "nobody", "prompt": "hi"})", 404},
      {R"({"model": "a", "prompt": ")" + long_prompt + R"("})", 400},
      {R"({"model": "a", "prompt": "hi", "max_tokens": 64})", 400},
      {R"({"model": "a", "prompt": "hi", "max_tokens": "ten"})", 400},
      {R"({"model": "a", "prompt": "hi", "temperature": "hot"})", 400},
      {R"({"model": "a", "prompt": "hi", "temperature": 3})", 400},
      {R"({"model": "a", "prompt": "hi", "top_p": 0})", 400},
      {R"({"model": "a", "prompt": "hi", "stop": 5})", 400},
      {R"({"model": "a", "prompt": "hi", "stream": "yes"})", 400},
      {R"({"model": "a", "prompt": "hi", "n": 2})", 400},
      {R"({"model": "a", "prompt": [1, 99999999]})", 400},
      {R"({"model": "a", "prompt": 7})", 400},
  };
  for (const auto& [body, status] : cases) {
    const Reply r = post(server, "/v1/completions", body);
    EXPECT_EQ(r.status, status) << body;
    ASSERT_TRUE(r.body.is_object()) << body;
    EXPECT_TRUE(r.body["error"]["message"].is_string()) << r.body.dump();
    EXPECT_TRUE(r.body["error"]["type"].is_string()) << r.body.dump();
  }
  const std::pair<std::string, int> chats[] = {
      {R"({"model": "a", "messages": "hi"})", 400},
      {R"({"model": "a", "messages": []})", 400},
      {R"({"model": "a", "messages": [{"role": "user"}]})", 400},
      {R"({"model": "a", "messages": [{"role": "wizard", "content": "x"}]})", 400},
      {R"({"model": "a", "messages": [{"role": "assistant", "content": "x"}]})", 400},
  };
  for (const auto& [body, status] : chats)
    EXPECT_EQ(post(server, "/v1/chat/completions", body).status, status) << body;
  EXPECT_EQ(post(server, "/v1/completions", R"({"model": "nobody", "prompt": "x"})")
                .body["error"]["code"],
            "model_not_found");
  EXPECT_EQ(get(server, "/v1/nothing").status, 404);
  EXPECT_EQ(get(server, "/health").status, 200);
  const Reply ok = post(server, "/v1/completions", completion("a", "hi", 4).dump());
  EXPECT_EQ(ok.status, 200) << ok.body.dump();
  EXPECT_EQ(ok.body["usage"]["completion_tokens"], 4);
}

TEST(Serve, ApiKeyIsRequiredWhenSet) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  Server server("--api-key sesame");
  EXPECT_EQ(get(server, "/v1/models").status, 401);
  EXPECT_EQ(get(server, "/v1/models", {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(post(server, "/v1/completions", completion("a", "hi", 2).dump()).status, 401);
  const Reply models = get(server, "/v1/models", {{"Authorization", "Bearer sesame"}});
  ASSERT_EQ(models.status, 200);
  std::vector<std::string> ids;
  for (const Json& m : models.body["data"]) ids.push_back(m["id"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"base", "a", "b"}));
  EXPECT_EQ(get(server, "/health").status, 200);
}

// One slot, one queue place: a third request while both are taken is turned away.
TEST(Serve, FullQueueAnswers503) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  Server server("--max-batch 1 --max-queue 1 --ctx 4096");
  Json body = completion("a", "hi", 4000);
  // Waits until /health shows `busy` running and `queued` waiting requests.
  Json health;
  auto wait_for = [&](int busy, int queued) {
    for (int i = 0; i < 500; ++i) {
      health = get(server, "/health").body;
      if (health["slots_busy"] == busy && health["queued"] == queued) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  auto running =
      std::async(std::launch::async, [&] { return post(server, "/v1/completions", body.dump()); });
  wait_for(1, 0);
  auto queued =
      std::async(std::launch::async, [&] { return post(server, "/v1/completions", body.dump()); });
  wait_for(1, 1);
  ASSERT_EQ(health["queued"], 1) << health.dump();
  const Reply turned_away = post(server, "/v1/completions", completion("a", "hi", 2).dump());
  EXPECT_EQ(turned_away.status, 503) << turned_away.body.dump();
  EXPECT_EQ(server.stop(), "0\n") << server.log();  // ends both: cancelled
  EXPECT_EQ(running.get().body["choices"][0]["finish_reason"], "cancelled");
  EXPECT_EQ(queued.get().body["choices"][0]["finish_reason"], "cancelled");
}

// A client that goes away mid-stream frees its slot: the request ends as cancelled instead of
// running to its 4000 tokens.
TEST(Serve, ClientThatDisconnectsFreesItsSlot) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  Server server("--max-batch 1 --ctx 4096");
  Json body = completion("a", "hi", 4000);
  body["stream"] = true;
  {
    auto client = server.client();
    int chunks = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    // Returning false after a few chunks drops the connection.
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
    client->send(req);
  }
  Json health;
  for (int i = 0; i < 600; ++i) {
    health = get(server, "/health").body;
    if ((health["requests_cancelled"] == 1 && health["slots_busy"] == 0) ||
        health["requests_finished"] == 1)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health["requests_cancelled"], 1) << health.dump();
  EXPECT_EQ(health["slots_busy"], 0) << health.dump();
  EXPECT_EQ(post(server, "/v1/completions", completion("a", "hi", 3).dump()).status, 200);
}

TEST(Serve, SigtermEndsRunningRequestsAndExitsZero) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  Server server("--ctx 4096");
  Json body = completion("b", "hi", 4000);
  body["stream"] = true;
  auto stream = std::async(std::launch::async, [&] {
    auto res = server.client()->Post("/v1/completions", body.dump(), "application/json");
    return res ? res->body : std::string();
  });
  for (int i = 0; i < 300 && get(server, "/health").body["slots_busy"] != 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(server.stop(), "0\n") << server.log();
  const Streamed s = read_stream(stream.get(), false);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.finish_reason, "cancelled");
}

// A bounded load: 16 clients send 48 requests between them to 4 slots (the rest queue):
// none fails, none is lost, each is answered by its model with all its tokens.
TEST(Serve, BoundedLoadLosesNothing) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  Server server("--max-batch 4 --max-queue 64");
  const std::string models[] = {"base", "a", "b"};
  std::atomic<int> next{0}, ok{0}, wrong{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 16; ++c)
    clients.emplace_back([&] {
      for (int i; (i = next++) < 48;) {
        const std::string& m = models[i % 3];
        const Reply r =
            post(server, "/v1/completions", completion(m, "Once upon a time", 12).dump());
        const bool answered = r.status == 200 && r.body["model"] == m &&
                              r.body["usage"]["completion_tokens"] >= 1 &&
                              r.body["usage"]["completion_tokens"] <= 12;
        if (answered)
          ++ok;
        else
          ++wrong;
      }
    });
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok, 48);
  EXPECT_EQ(wrong, 0);
  // The engine counts a request once its step is over, just after the answer went out.
  Json health;
  for (int i = 0; i < 100; ++i) {
    health = get(server, "/health").body;
    if (health["requests_finished"] == 48 && health["slots_busy"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(health["requests_finished"], 48) << health.dump();
  EXPECT_EQ(health["slots_busy"], 0) << health.dump();
}

// Why the official openai npm client cannot run here, or empty.
std::string openai_client_missing() {
  if (std::system("command -v node >/dev/null 2>&1") != 0) return "no node on the PATH";
  if (!std::filesystem::exists(test::source_dir() + "/tests/openai_client/node_modules/openai"))
    return "the openai npm package is not installed in tests/openai_client "
           "(scripts/install-deps.sh does it)";
  return "";
}

// A client no one here wrote: the official openai package parses our answers.
TEST(Serve, OfficialOpenAiClient) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  const std::string missing = openai_client_missing();
  if (!missing.empty()) GTEST_SKIP() << missing;
  Server server("--api-key sesame");
  const Json request = {{"model", "a"},
                        {"messages",
                         {{{"role", "system"}, {"content", "You are a helpful assistant."}},
                          {{"role", "user"}, {"content", "你好"}}}},
                        {"max_tokens", 12},
                        {"temperature", 0}};
  const Reply direct =
      post(server, "/v1/chat/completions", request.dump(), {{"Authorization", "Bearer sesame"}});
  ASSERT_EQ(direct.status, 200) << direct.body.dump();
  test::CommandResult r = test::run_shell("node '" + test::source_dir() +
                                          "/tests/openai_client/check.mjs' http://127.0.0.1:" +
                                          std::to_string(server.port()) + "/v1 a sesame 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  const Json got = Json::parse(r.output);
  EXPECT_EQ(got["models"], Json({"base", "a", "b"}));
  const std::string content = direct.body["choices"][0]["message"]["content"];
  EXPECT_EQ(got["chat"]["object"], "chat.completion");
  EXPECT_EQ(got["chat"]["role"], "assistant");
  EXPECT_EQ(got["chat"]["content"], content);
  EXPECT_EQ(got["chat"]["finish_reason"], direct.body["choices"][0]["finish_reason"]);
  EXPECT_EQ(got["chat"]["usage"], direct.body["usage"]);
  EXPECT_EQ(got["stream"]["content"], content);
  EXPECT_GT(got["stream"]["chunks"].get<int>(), 2);
  EXPECT_EQ(got["stream"]["finish_reason"], direct.body["choices"][0]["finish_reason"]);
  EXPECT_EQ(got["stream"]["usage"], direct.body["usage"]);
  EXPECT_EQ(got["bad_model"]["status"], 404) << got.dump();
  EXPECT_EQ(got["bad_model"]["code"], "model_not_found") << got.dump();
}

}  // namespace
}  // namespace loratune
