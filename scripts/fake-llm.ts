/**
 * Starts the fake OpenAI-compatible server (test/helpers/fakeLlm.ts) for
 * trying the UI without a key: `npm run dev:fake-llm`, then start the app
 * with the printed OPENAI_BASE_URL. FAKE_LLM_PORT picks the port (default 5199).
 */
import { startFakeLlm } from "../test/helpers/fakeLlm.js";

const port = Number(process.env.FAKE_LLM_PORT ?? 5199);
const fake = await startFakeLlm({ port });
console.log(`fake LLM listening on ${fake.url}`);
console.log(`start the app with:\n  OPENAI_BASE_URL=${fake.url} OPENAI_API_KEY=fake-key npm run dev`);
console.log("add ROUTER=llm to let the fake model route messages too");

let seen = 0;
const report = setInterval(() => {
  for (; seen < fake.requests.length; seen++) {
    const r = fake.requests[seen];
    if (r) console.log(`request ${r.index}: ${r.body.messages?.length ?? 0} messages, tools: ${(r.body.tools ?? []).map((t) => t.function.name).join(", ") || "none"}`);
  }
}, 250);

const stop = () => {
  clearInterval(report);
  void fake.close().then(() => process.exit(0));
};
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
