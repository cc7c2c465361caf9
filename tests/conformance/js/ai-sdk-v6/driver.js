// AI SDK v6: experimental_telemetry {isEnabled, functionId, metadata:{userId, sessionId, plan, feature}}
// https://ai-sdk.dev/v6/docs/ai-sdk-core/telemetry  (node_modules/ai/docs/03-ai-sdk-core/60-telemetry.mdx)
'use strict';
const C = require('/work/i15-js/tools/common.js');
const provider = C.setupTracing('ai-sdk-v6');
const { generateText, streamText, embed } = require('ai');
const { createOpenAI } = require('@ai-sdk/openai');
const openai = createOpenAI({ baseURL: C.OPENAI_BASE, apiKey: 'test' });

function opts(c) {
  const w = c.who;
  const metadata = w.user ? { userId: w.user, sessionId: w.session, plan: w.plan, feature: w.feature } : {};
  return {
    maxRetries: 0,
    experimental_telemetry: { isEnabled: true, functionId: `call-${c.kind}`, metadata },
    providerOptions: w.user ? { openai: { user: w.user } } : undefined,
  };
}

async function call(c) {
  if (c.kind === 'embed') {
    const r = await embed({ model: openai.embedding(c.model), value: c.input, ...opts(c) });
    return { prompt_tokens: r.usage && r.usage.tokens };
  }
  const args = { model: openai.chat(c.model), system: C.SYSTEM, messages: c.messages, ...opts(c) };
  if (c.kind.startsWith('stream')) {
    let err;
    const r = streamText({ ...args, onError: ({ error }) => { err = error; } });
    let text = '';
    for await (const t of r.textStream) text += t;
    if (err) throw err;
    const usage = await r.usage;
    return { text, prompt_tokens: usage.inputTokens, completion_tokens: usage.outputTokens };
  }
  const r = await generateText(args);
  return { prompt_tokens: r.usage.inputTokens, completion_tokens: r.usage.outputTokens, response_id: r.response.id };
}

(async () => {
  await C.runScenario('ai-sdk-v6', call);
  await provider.forceFlush();
  await provider.shutdown();
})();
