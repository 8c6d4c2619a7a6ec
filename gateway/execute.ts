/**
 * Running a validated batch: which lane each command takes (policy.ts), the reply budget, script
 * rewriting and INFO shaping, and killing a script that outlives its request.
 */
import { ReplyBudget } from './budget.ts';
import { checkCommands, metricName, RequestError, type CheckedBatch, type Command } from './commands.ts';
import { DeadlineError, type Outcome } from './connect.ts';
import type { Lane } from './lane.ts';
import type { Metrics } from './metrics.ts';
import type { ScriptAliases } from './scripts.ts';
import { shapeInfo } from './shape.ts';
import type { TokenRuntime, Upstream } from './upstream.ts';

export interface BatchContext {
  upstream: Upstream;
  runtime: TokenRuntime;
  scripts: ScriptAliases;
  metrics: Metrics;
  timeoutMs: number;
  maxReplyBytes: number;
  maxDedicatedConnections: number;
  /** ms since epoch */
  deadline: number;
}

type Mapper = ((reply: unknown) => unknown) | undefined;

function prepare(cmds: Command[], checked: CheckedBatch, ctx: BatchContext): Mapper[] {
  return cmds.map((c, i) => {
    ctx.metrics.command(metricName(c));
    if (checked.verdicts[i]?.shapeInfo) return (reply: unknown) => shapeInfo(reply, ctx.runtime.db);
    return ctx.scripts.prepare(c);
  });
}

function mapped(outcomes: Outcome[], mappers: Mapper[]): Outcome[] {
  return outcomes.map((o, i) => {
    const map = mappers[i];
    return map && o.ok ? { ok: true, value: map(o.value) } : o;
  });
}

/** Consecutive commands on one lane, run one group after the other so request order holds. */
async function bySegments(cmds: Command[], checked: CheckedBatch, ctx: BatchContext, budget: ReplyBudget): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (let i = 0; i < cmds.length;) {
    const lane = checked.verdicts[i]?.lane ?? 'token';
    let j = i;
    let blocking = false;
    while (j < cmds.length && (checked.verdicts[j]?.lane ?? 'token') === lane) blocking ||= checked.verdicts[j++]?.blocking === true;
    const on: Lane = lane === 'admin' ? ctx.runtime.admin : ctx.runtime.lane;
    out.push(...await on.run(cmds.slice(i, j), { dedicated: checked.dedicated && blocking, deadline: ctx.deadline, budget }));
    i = j;
  }
  return out;
}

async function guarded<T>(checked: CheckedBatch, ctx: BatchContext, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    // A script (or function) may be what keeps Redis from answering: stop it, so Redis serves
    // everyone again (see Upstream.killScripts for the one case Redis cannot stop).
    if (err instanceof DeadlineError && checked.scripts) void ctx.upstream.killScripts();
    throw err;
  }
}

/** `/` and `/pipeline`: every command's outcome, in request order. */
export async function runBatch(cmds: Command[], ctx: BatchContext): Promise<Outcome[]> {
  const checked = checkCommands(cmds, ctx.runtime.policy, ctx.timeoutMs);
  if (checked.dedicated && ctx.upstream.dedicated.value >= ctx.maxDedicatedConnections) {
    throw new RequestError(503, `ERR too many blocking commands at once (GATEWAY_MAX_CONNECTIONS=${ctx.maxDedicatedConnections})`);
  }
  const loading = ctx.scripts.load(cmds);
  if (loading) await loading;
  const mappers = prepare(cmds, checked, ctx);
  const budget = new ReplyBudget(ctx.maxReplyBytes);
  return guarded(checked, ctx, async () => {
    let outcomes: Outcome[];
    if (!checked.onAdmin) {
      outcomes = await ctx.runtime.lane.run(cmds, { dedicated: checked.dedicated, deadline: ctx.deadline, budget });
    } else if (!checked.scripts && !checked.dedicated) {
      // Nothing here runs code the ACL would have to bind: the gateway's lane keeps the order.
      outcomes = await ctx.runtime.admin.run(cmds, { dedicated: false, deadline: ctx.deadline, budget });
    } else {
      outcomes = await bySegments(cmds, checked, ctx, budget);
    }
    return mapped(outcomes, mappers);
  });
}

/** `/multi-exec`: MULTI … EXEC on one lane. */
export async function runTransaction(cmds: Command[], ctx: BatchContext): Promise<Outcome[]> {
  const checked = checkCommands(cmds, ctx.runtime.policy, ctx.timeoutMs, 'transaction');
  let lane = ctx.runtime.lane;
  if (checked.onAdmin) {
    if (checked.scripts) {
      throw new RequestError(400, 'ERR for this token INFO and COPY run on another connection than scripts, so they cannot share a transaction; send them apart');
    }
    lane = ctx.runtime.admin;
  }
  const loading = ctx.scripts.load(cmds);
  if (loading) await loading;
  const mappers = prepare(cmds, checked, ctx);
  const budget = new ReplyBudget(ctx.maxReplyBytes);
  return guarded(checked, ctx, async () => mapped(await lane.transaction(cmds, ctx.deadline, budget), mappers));
}
