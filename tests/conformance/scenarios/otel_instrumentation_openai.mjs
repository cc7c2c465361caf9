/* `@opentelemetry/instrumentation-openai` (opentelemetry-js-contrib).

How user, session and properties are attached: the instrumentation has no API for them
(https://www.npmjs.com/package/@opentelemetry/instrumentation-openai), so the application puts
them on its own span around the call, as this service's README documents ("Sending spans"):
`user.id`, `session.id`, `property.<name>` on the parent span; the call's span inherits them.
The openai `user` parameter is passed as well.
*/
import { need, openaiCall, openaiClient, otelProvider, run, shutdown } from './common.mjs';

const provider = otelProvider();
const { registerInstrumentations } = need('@opentelemetry/instrumentation');
const { OpenAIInstrumentation } = need('@opentelemetry/instrumentation-openai');
registerInstrumentations({ instrumentations: [new OpenAIInstrumentation()], tracerProvider: provider });
const api = need('@opentelemetry/api');
const client = openaiClient();

function attach(call, fn) {
  const span = api.trace.getActiveSpan();
  if (call.user) {
    span.setAttribute('user.id', call.user);
    span.setAttribute('session.id', call.session);
    for (const [key, value] of Object.entries(call.properties)) span.setAttribute(`property.${key}`, value);
  }
  return fn();
}

await run((call) => openaiCall(client, call), attach);
await shutdown(provider);
