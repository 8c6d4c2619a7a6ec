/**
 * The Cron Trigger (wrangler.toml `[triggers] crons`): flushes the page-view stream to D1.
 *
 * No lock: the flush is exact without one (each entry is applied to D1 once, whatever drains
 * overlap, and acked once), and an overlapping run only repeats D1 work that changes nothing.
 * A failure is logged and rethrown so the run shows as failed; whatever was not acked stays
 * pending in the stream and the next run reclaims it.
 *
 * Round trips per run: batches + 1 (one claim per batch, the next claim riding with the ack).
 */
import { WriteBehindError } from 'edge-redis/writebehind';
import { flushViews } from './views.ts';

/** `scheduled()` of the Worker's default export. */
export async function scheduled(controller: ScheduledController, env: Env, _ctx: ExecutionContext): Promise<void> {
  try {
    const r = await flushViews(env);
    if (r.acked > 0 || r.deadLettered.length > 0) {
      console.log(`[cron ${controller.cron}] views: ${r.acked} flushed in ${r.batches} batches, ${r.redelivered} redelivered, ${r.deadLettered.length} dead-lettered`);
    }
  } catch (err) {
    const done = err instanceof WriteBehindError && err.report ? ` after ${err.report.acked} flushed` : '';
    const cause = err instanceof Error && err.cause instanceof Error ? ` (${err.cause.name})` : '';
    console.error(`[cron ${controller.cron}] views flush failed${done}: ${err instanceof Error ? err.message : typeof err}${cause}`);
    throw err;
  }
}
