// The `ollama` npm package (ollama-js), unchanged except for its host: the router.
import { Ollama } from "ollama";

import { WEATHER_TOOL, baseUrl, check, model, runChecks } from "./lib.mjs";

const ollama = new Ollama({ host: baseUrl });
const ask = [{ role: "user", content: "Say hello in five words." }];

await runChecks("ollama_js", {
  async list() {
    const { models } = await ollama.list();
    const names = models.map((m) => m.name);
    check(names.includes(model), `list() names ${model}`, names);
    return { names };
  },

  async show() {
    const info = await ollama.show({ model });
    const caps = info.capabilities ?? [];
    check(caps.includes("completion") && caps.includes("tools"), "show() capabilities", caps);
    const ctx = Object.entries(info.model_info ?? {}).find(([k]) => k.endsWith(".context_length"));
    check(ctx && ctx[1] > 0, "show() model_info.*.context_length", info.model_info);
    return { capabilities: caps, context_length: ctx[1] };
  },

  async chat() {
    const r = await ollama.chat({ model, messages: ask, stream: false });
    check(r.message.role === "assistant" && r.message.content, "chat() answer", r);
    check(r.done === true && r.done_reason === "stop", "chat() done, done_reason stop", r);
    check(r.prompt_eval_count > 0 && r.eval_count > 0, "chat() token counts", r);
    check(Number.isInteger(r.total_duration) && r.total_duration > 0, "chat() durations", r);
    return { content: r.message.content };
  },

  async chatStream() {
    const stream = await ollama.chat({ model, messages: ask, stream: true });
    let content = "";
    let parts = 0;
    let last;
    for await (const part of stream) {
      parts += 1;
      content += part.message?.content ?? "";
      last = part;
    }
    check(parts > 1 && content, "chat stream: several parts with content", { parts, content });
    check(last?.done === true && last.done_reason === "stop", "chat stream ends done", last);
    check(last.eval_count > 0, "chat stream: eval_count on the last part", last);
    return { parts, content };
  },

  async think() {
    const r = await ollama.chat({ model, messages: ask, think: true, stream: false });
    check(r.message.thinking, "think: message.thinking", r.message);
    check(r.message.content, "think: message.content", r.message);
    const s = await ollama.chat({ model, messages: ask, think: "high", stream: true });
    let thinking = "";
    for await (const part of s) thinking += part.message?.thinking ?? "";
    check(thinking, "think (level, streamed): thinking deltas", thinking);
    return { thinking: r.message.thinking };
  },

  async toolRoundTrip() {
    const messages = [{ role: "user", content: "What is the weather in Berlin?" }];
    const first = await ollama.chat({ model, messages, tools: [WEATHER_TOOL], stream: false });
    const calls = first.message.tool_calls ?? [];
    check(calls.length === 1, "one tool call", first.message);
    const fn = calls[0].function;
    check(fn.name === "get_weather", "tool name", fn);
    check(typeof fn.arguments === "object" && typeof fn.arguments.city === "string",
      "tool arguments as an object", fn);
    messages.push(first.message);
    messages.push({ role: "tool", content: `sunny in ${fn.arguments.city}`,
      tool_name: "get_weather" });
    const second = await ollama.chat({ model, messages, tools: [WEATHER_TOOL], stream: false });
    check(!second.message.tool_calls?.length, "no second tool call", second.message);
    check(second.message.content.includes("sunny in"), "answer uses the tool result",
      second.message);
    return { arguments: fn.arguments, answer: second.message.content };
  },

  async generate() {
    const r = await ollama.generate({ model, prompt: "Why is the sky blue?", stream: false });
    check(r.response && r.done === true, "generate() response", r);
    check(r.eval_count > 0, "generate() eval_count", r);
    const s = await ollama.generate({ model, prompt: "Why is the sky blue?", stream: true });
    let text = "";
    let last;
    for await (const part of s) {
      text += part.response ?? "";
      last = part;
    }
    check(text && last?.done === true, "generate stream", { text, last });
    return { response: r.response };
  },
});
