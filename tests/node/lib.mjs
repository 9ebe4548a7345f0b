// Shared by the client scripts: named checks, one JSON summary on stdout, exit code 1 on any
// failure. Usage: `node <script>.mjs <router base url> [model]`.

export const [baseUrl, model = "gpt-oss:20b"] = process.argv.slice(2);

export const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
};

export function check(condition, what, detail) {
  if (!condition) {
    const shown = detail === undefined ? "" : `: ${JSON.stringify(detail).slice(0, 400)}`;
    throw new Error(`${what}${shown}`);
  }
}

// Runs each named async step in order; every step runs even after one fails.
export async function runChecks(script, steps) {
  const results = {};
  let failed = 0;
  if (!baseUrl) {
    console.log(JSON.stringify({ script, ok: false, error: "usage: <base url> [model]" }));
    process.exit(2);
  }
  for (const [name, step] of Object.entries(steps)) {
    const started = Date.now();
    try {
      const info = await step();
      results[name] = { ok: true, ms: Date.now() - started, ...(info ?? {}) };
    } catch (err) {
      failed += 1;
      results[name] = { ok: false, ms: Date.now() - started, error: String(err?.stack ?? err) };
    }
  }
  console.log(JSON.stringify({ script, baseUrl, model, ok: failed === 0, failed, results }));
  process.exit(failed === 0 ? 0 : 1);
}
