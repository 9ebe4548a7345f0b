// The AI SDK with its Ollama provider (ollama-ai-provider-v2), baseURL `<router>/api`.
import { generateText, stepCountIs, streamText, tool } from "ai";
import { createOllama } from "ollama-ai-provider-v2";
import { z } from "zod";

import { baseUrl, check, model, runChecks } from "./lib.mjs";

const ollama = createOllama({ baseURL: `${baseUrl}/api` });
const prompt = "Say hello in five words.";

await runChecks("ai_sdk", {
  async generateText() {
    const r = await generateText({ model: ollama(model), prompt, maxRetries: 0 });
    check(r.text, "generateText text", r.text);
    check(r.finishReason === "stop", "finishReason stop", r.finishReason);
    check(r.usage.inputTokens > 0 && r.usage.outputTokens > 0, "usage", r.usage);
    return { text: r.text };
  },

  async reasoning() {
    const r = await generateText({ model: ollama(model), prompt, maxRetries: 0,
      providerOptions: { ollama: { think: true } } });
    check(r.reasoningText, "reasoningText with think: true", r.reasoning);
    check(r.text, "text next to the reasoning", r.text);
    return { reasoning: r.reasoningText };
  },

  async streamText() {
    const r = streamText({ model: ollama(model), prompt, maxRetries: 0 });
    let text = "";
    let chunks = 0;
    for await (const delta of r.textStream) {
      text += delta;
      chunks += 1;
    }
    check(chunks > 1 && text, "streamed text in several chunks", { chunks, text });
    check((await r.finishReason) === "stop", "streamed finishReason", await r.finishReason);
    return { chunks, text };
  },

  async toolCall() {
    const calls = [];
    const r = await generateText({
      model: ollama(model),
      prompt: "What is the weather in Berlin?",
      maxRetries: 0,
      tools: {
        get_weather: tool({
          description: "Current weather in a city",
          inputSchema: z.object({ city: z.string() }),
          execute: async ({ city }) => {
            calls.push(city);
            return `sunny in ${city}`;
          },
        }),
      },
      stopWhen: stepCountIs(3),
    });
    check(calls.length === 1 && typeof calls[0] === "string", "the tool ran once", calls);
    check(r.steps.length === 2, "two steps: tool call, then the answer", r.steps.length);
    check(r.text.includes("sunny in"), "answer uses the tool result", r.text);
    return { city: calls[0], text: r.text };
  },
});
