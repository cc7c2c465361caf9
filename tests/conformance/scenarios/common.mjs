/* The scenario contract, Node side: the same as common.py's (CONFORMANCE_CALLS, CONFORMANCE_OUT,
CONFORMANCE_OPENAI_BASE_URL, CONFORMANCE_OTLP_ENDPOINT, CONFORMANCE_SERVICE_NAME; one JSON line per
call with n, t0/t1, trace_id, ok, error), plus CONFORMANCE_NPM_HOME: the library's npm folder.

Packages are loaded with `need(name)`, a require() rooted in that folder (this file lives in the
repository, where no node_modules is): CommonJS, as require-in-the-middle based instrumentations
(OpenTelemetry, OpenInference, Traceloop) patch modules without an ESM loader hook only then.
*/
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export const need = createRequire(path.join(process.env.CONFORMANCE_NPM_HOME, 'package.json'));
export const CALLS = JSON.parse(fs.readFileSync(process.env.CONFORMANCE_CALLS, 'utf8'));
export const OPENAI_BASE_URL = process.env.CONFORMANCE_OPENAI_BASE_URL;
export const OTLP_ENDPOINT = process.env.CONFORMANCE_OTLP_ENDPOINT;
export const SERVICE_NAME = process.env.CONFORMANCE_SERVICE_NAME;
export const APP_SCOPE = 'conformance.app'; // spans.py: the application's own spans

/** An OTLP/HTTP protobuf exporter to the runner. */
export function otlpExporter() {
  const { OTLPTraceExporter } = need('@opentelemetry/exporter-trace-otlp-proto');
  return new OTLPTraceExporter({ url: `${OTLP_ENDPOINT}/v1/traces` });
}

/** A registered global NodeTracerProvider batching to the runner (for libraries that leave the
 * SDK set-up to the application); `processors` replace the default batch processor. */
export function otelProvider(processors) {
  const { NodeTracerProvider } = need('@opentelemetry/sdk-trace-node');
  const { BatchSpanProcessor } = need('@opentelemetry/sdk-trace-base');
  const { resourceFromAttributes } = need('@opentelemetry/resources');
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': SERVICE_NAME }),
    spanProcessors: processors || [new BatchSpanProcessor(otlpExporter())],
  });
  provider.register();
  return provider;
}

export async function shutdown(provider) {
  for (const step of ['forceFlush', 'shutdown']) {
    try {
      await provider[step]();
    } catch (e) {
      console.error(`${step}: ${e}`);
    }
  }
}

export function currentTraceId() {
  const api = need('@opentelemetry/api');
  const span = api.trace.getActiveSpan();
  const id = span ? span.spanContext().traceId : '';
  return /^0+$/.test(id) ? '' : id;
}

/** A plain application span around the call, with no attributes (so the trace is the call's). */
export function rootSpan(call, fn) {
  const api = need('@opentelemetry/api');
  return api.trace.getTracer(APP_SCOPE).startActiveSpan(`handle call ${call.n}`, async (span) => {
    try {
      return await fn();
    } finally {
      span.end();
    }
  });
}

export function openaiClient(wrap = (c) => c) {
  const { OpenAI } = need('openai');
  return wrap(new OpenAI({ baseURL: OPENAI_BASE_URL, apiKey: 'test', maxRetries: 0 }));
}

/** One call of the scenario with the openai client; the `user` parameter when there is a user. */
export async function openaiCall(client, call) {
  const extra = call.user ? { user: call.user } : {};
  if (call.kind === 'embed') {
    await client.embeddings.create({ model: call.model, input: call.input, ...extra });
    return;
  }
  if (call.kind === 'stream' || call.kind === 'stream_nousage') {
    const options = call.kind === 'stream' ? { stream_options: { include_usage: true } } : {};
    const stream = await client.chat.completions.create({
      model: call.model, messages: call.messages, stream: true, ...options, ...extra,
    });
    for await (const _ of stream); // eslint-disable-line no-unused-vars
    return;
  }
  await client.chat.completions.create({ model: call.model, messages: call.messages, ...extra });
}

/** Make every call inside `root` (an application span) and `attach` (the library's way of naming
 * user, session and properties; `(call, fn) => fn()` wrapped); write what happened to CONFORMANCE_OUT. */
export async function run(doCall, attach, { root = rootSpan } = {}) {
  const out = fs.openSync(process.env.CONFORMANCE_OUT, 'w');
  for (const call of CALLS) {
    const row = { n: call.n, t0: Date.now() / 1000 };
    const body = () => attach(call, async () => {
      row.trace_id = currentTraceId();
      try {
        await doCall(call);
        row.ok = true;
        row.error = null;
      } catch (e) { // the 500 and the 429 are meant to fail
        row.ok = false;
        row.error = (e && e.constructor && e.constructor.name) || String(e);
      }
    });
    await (root ? root(call, body) : body());
    row.t1 = Date.now() / 1000;
    fs.writeSync(out, JSON.stringify(row) + '\n');
    await new Promise((resolve) => setTimeout(resolve, 20)); // calls never share a millisecond
  }
  fs.closeSync(out);
}

/** The AI SDK's arguments for one call: the system prompt apart, the other messages as they are. */
export function aiSdkPrompt(call) {
  const system = call.messages.filter((m) => m.role === 'system').map((m) => m.content)[0];
  return { system, messages: call.messages.filter((m) => m.role !== 'system') };
}

/** One call with the AI SDK (`ai` package `mod`, a provider `openai`), `options` on top. */
export async function aiSdkCall(mod, openai, call, options) {
  if (call.kind === 'embed') {
    await mod.embed({ model: openai.embedding(call.model), value: call.input, maxRetries: 0, ...options });
    return;
  }
  const args = { model: openai(call.model), ...aiSdkPrompt(call), maxRetries: 0, ...options };
  if (call.kind === 'stream' || call.kind === 'stream_nousage') {
    let error;
    const result = mod.streamText({ ...args, onError: (e) => { error = e.error; } });
    for await (const _ of result.textStream); // eslint-disable-line no-unused-vars
    if (error) throw error;
    await result.usage;
    return;
  }
  await mod.generateText(args);
}

/** The `@ai-sdk/openai` provider on the fake server. */
export function aiSdkOpenAI() {
  const { createOpenAI } = need('@ai-sdk/openai');
  return createOpenAI({ baseURL: OPENAI_BASE_URL, apiKey: 'test' });
}

/** AI SDK 6's documented way: `experimental_telemetry.metadata` (and the openai `user` parameter). */
export function aiSdkV6Options(call) {
  const metadata = call.user ? { userId: call.user, sessionId: call.session, ...call.properties } : {};
  return {
    experimental_telemetry: { isEnabled: true, functionId: `call-${call.kind}`, metadata },
    providerOptions: call.user ? { openai: { user: call.user } } : undefined,
  };
}

/** `@traceloop/node-server-sdk` initialised to export to the runner; `options` on top. */
export function traceloopInit(options = {}) {
  const traceloop = need('@traceloop/node-server-sdk');
  traceloop.initialize({
    appName: SERVICE_NAME,
    baseUrl: OTLP_ENDPOINT,
    apiKey: 'test',
    traceloopSyncEnabled: false,
    silenceInitializationMessage: true,
    ...options,
  });
  return traceloop;
}
