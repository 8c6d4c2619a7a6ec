/** Opening `GET /events/inventory` on the Worker and reading its Server-Sent Events. */
import { fetchWorker } from '../support/worker.ts';

/** Opens the stream on `shop`'s env (the response is handed over as the Worker made it). */
export async function openEvents(shop: Env, ip: string, headers: Record<string, string> = {}, query = ''): Promise<Response> {
  return fetchWorker(shop, `/events/inventory${query}`, { headers: { 'cf-connecting-ip': ip, accept: 'text/event-stream', ...headers } });
}

/** Reads until `until` matches the text received so far (bounded by reads), or the stream ends. */
export async function readUntil(reader: ReadableStreamDefaultReader<Uint8Array>, until: RegExp, state: { text: string } = { text: '' }): Promise<string> {
  const decoder = new TextDecoder();
  for (let i = 0; i < 200 && !until.test(state.text); i++) {
    const { value, done } = await reader.read();
    if (done) break;
    state.text += decoder.decode(value, { stream: true });
  }
  return state.text;
}

/** The `data:` of every `event: inventory` block, parsed. */
export function inventoryEvents(text: string): unknown[] {
  return text.split('\n\n').flatMap((block) => {
    const m = /^event: inventory\ndata: (.*)$/.exec(block);
    return m ? [JSON.parse(m[1]!)] : [];
  });
}
