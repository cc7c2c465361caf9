// Shared scenario + OTel setup for the JS capture drivers (CommonJS).
// Packages resolve from the library's own npm folder (process.cwd()).
'use strict';
const { createRequire } = require('module');
const fs = require('fs');
const path = require('path');
const req = createRequire(path.join(process.cwd(), 'package.json'));

const SYSTEM = 'You are a concise assistant.';
const u = (t) => ({ role: 'user', content: t });
const ALICE = { user: 'user-alice', session: 'sess-alice-01', plan: 'free', feature: 'chat' };
const BOB = { user: 'user-bob', session: 'sess-bob-01', plan: 'premium', feature: 'search' };
const CAROL = { user: 'user-carol', session: 'sess-carol-01', plan: 'premium', feature: 'chat' };
const ANON = { user: null, session: null, plan: null, feature: null };
const CALLS = [
  { n: 1, who: ALICE, model: 'gpt-4o-mini', kind: 'chat', messages: [u('[call 1] What is OpenTelemetry in one sentence?')] },
  { n: 2, who: ALICE, model: 'gpt-4o-mini', kind: 'stream', messages: [u('[call 2] Stream me three words about tracing.')] },
  { n: 3, who: ALICE, model: 'gpt-4o', kind: 'chat', messages: [u('[call 3] Summarise the benefits of distributed tracing for LLM apps.')] },
  { n: 4, who: BOB, model: 'gpt-4o', kind: 'chat', messages: [u('[call 4] Search: best practices for token cost attribution per customer.')] },
  { n: 5, who: BOB, model: 'gpt-4o-mini', kind: 'stream', messages: [u('[call 5] Search: how do span receivers store attributes?')] },
  { n: 6, who: BOB, model: 'text-embedding-3-small', kind: 'embed', input: '[call 6] embedding input for semantic search' },
  { n: 7, who: CAROL, model: 'gpt-4o-mini', kind: 'chat', messages: [u('[call 7] Hi, what is a span?'), { role: 'assistant', content: 'A span is one timed operation in a trace.' }, u('[call 7] Continue the conversation about tracing, briefly.')] },
  { n: 8, who: CAROL, model: 'gpt-4o', kind: 'chat', messages: [u('[call 8] Explain cached prompt tokens vs reasoning tokens.')] },
  { n: 9, who: CAROL, model: 'gpt-4o', kind: 'error500', messages: [u('[call 9] This request should fail. TRIGGER_500')] },
  { n: 10, who: { ...ALICE }, model: 'gpt-4o-mini', kind: 'error429', messages: [u('[call 10] This request should be rate limited. TRIGGER_429')] },
  { n: 11, who: ANON, model: 'gpt-4o-mini', kind: 'chat', messages: [u('[call 11] Anonymous question without a user id.')] },
  { n: 12, who: CAROL, model: 'gpt-4o', kind: 'stream_nousage', messages: [u('[call 12] Stream without usage reporting please.')] },
];

const OPENAI_BASE = `http://127.0.0.1:${process.env.FAKE_PORT}/v1`;
const OTLP_URL = `http://127.0.0.1:${process.env.RECORDER_PORT}/v1/traces`;

function otlpExporter() {
  const { OTLPTraceExporter } = req('@opentelemetry/exporter-trace-otlp-proto');
  return new OTLPTraceExporter({ url: OTLP_URL });
}

function batchProcessor(exporter) {
  const { BatchSpanProcessor } = req('@opentelemetry/sdk-trace-base');
  return new BatchSpanProcessor(exporter || otlpExporter(), {
    scheduledDelayMillis: 600000, maxExportBatchSize: 10000, maxQueueSize: 10000,
  });
}

function setupTracing(lib, { extraProcessors = [], register = true } = {}) {
  const { NodeTracerProvider } = req('@opentelemetry/sdk-trace-node');
  const { resourceFromAttributes } = req('@opentelemetry/resources');
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': `capture-${lib}`, 'deployment.environment.name': 'capture' }),
    spanProcessors: [batchProcessor(), ...extraProcessors],
  });
  if (register) provider.register();
  return provider;
}

// Runs the 12 calls; driver(call) returns a result object or throws.
async function runScenario(lib, driver, { userParam = true } = {}) {
  const out = fs.openSync(path.join(process.env.CAPTURE_DIR, 'intended.jsonl'), 'w');
  for (const c of CALLS) {
    const props = c.who.user ? { feature: c.who.feature, plan: c.who.plan } : {};
    const row = {
      kind: c.kind, library: lib, model: c.model, n: c.n, properties: props,
      session_id: c.who.session, user: c.who.user, user_id: c.who.user,
      user_param_sent: Boolean(userParam && c.who.user),
    };
    try {
      const r = await driver(c);
      row.result = { kind: c.kind, model: c.model, n: c.n, ok: true, ...r };
    } catch (e) {
      row.result = { kind: c.kind, model: c.model, n: c.n, ok: false, error: `${e && e.constructor && e.constructor.name}: ${e && e.message}`.slice(0, 300) };
    }
    console.log(JSON.stringify(row.result));
    fs.writeSync(out, JSON.stringify(row) + '\n');
  }
  fs.closeSync(out);
}

module.exports = { req, SYSTEM, CALLS, OPENAI_BASE, OTLP_URL, otlpExporter, batchProcessor, setupTracing, runScenario };

// The 12 calls on a plain openai client (openai `user=` parameter sent for every call with a user).
async function openaiCall(client, c) {
  const user = c.who.user ? { user: c.who.user } : {};
  if (c.kind === 'embed') {
    const r = await client.embeddings.create({ model: c.model, input: c.input, ...user });
    return { prompt_tokens: r.usage.prompt_tokens };
  }
  const messages = [{ role: 'system', content: SYSTEM }, ...c.messages];
  if (c.kind.startsWith('stream')) {
    const extra = c.kind === 'stream' ? { stream_options: { include_usage: true } } : {};
    const s = await client.chat.completions.create({ model: c.model, messages, stream: true, ...extra, ...user });
    let text = '', usage = null;
    for await (const ch of s) { if (ch.choices[0]) text += ch.choices[0].delta.content || ''; if (ch.usage) usage = ch.usage; }
    return { text, prompt_tokens: usage && usage.prompt_tokens, completion_tokens: usage && usage.completion_tokens };
  }
  const r = await client.chat.completions.create({ model: c.model, messages, ...user });
  return { prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens, response_id: r.id };
}
module.exports.openaiCall = openaiCall;
