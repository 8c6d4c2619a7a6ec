/**
 * How the routes meet a D1 failure: it is an outage (503 problem+json with Retry-After), not a bug
 * (500). The cause travels on the error for `app.onError` to log; the client sees only the detail.
 */
import { AppError } from '../errors.ts';

/**
 * Waits for one D1 call (a statement or a batch). On failure, rejects with `AppError('unavailable')`:
 * "The `what` is unavailable; try again shortly.", `Retry-After: 5`, the failure as `cause`. `refine`
 * may answer a failure it recognises with another error first (a constraint failure as a 409).
 *
 * @example
 * const row = await d1(c.env.DB.prepare('SELECT stock FROM products WHERE id = ?1').bind(id).first<Row>(), 'product database');
 */
export function d1<T>(work: Promise<T>, what: string, refine?: (cause: unknown) => AppError | undefined): Promise<T> {
  return work.catch((cause: unknown) => {
    throw refine?.(cause) ?? new AppError('unavailable', { detail: `The ${what} is unavailable; try again shortly.`, headers: { 'Retry-After': '5' }, cause });
  });
}
