/**
 * Password hashing with PBKDF2-HMAC-SHA-256 through WebCrypto, the only password KDF Workers offer
 * natively. Not a Redis pattern: the shared crypto of src/functions/auth.ts.
 *
 * - Stored as `pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>`: a random 16-byte salt, 32 bytes
 *   of derived key, standard base64 (with padding).
 * - {@link PBKDF2_ITERATIONS} is 100 000: Cloudflare's runtime refuses more ("iteration counts above
 *   100000 are not supported"; workerd issue #1346). Open-source workerd (Miniflare, the tests) has
 *   no such cap, so the number is pinned here rather than probed. OWASP asks 600 000 for SHA-256:
 *   this is the platform's ceiling, not a recommendation. The count is stored per hash, so raising
 *   it later only needs a rehash at the next successful login.
 * - Verification parses the stored count and refuses anything above the cap before deriving, so a
 *   tampered row cannot ask for unbounded work; derived bits are compared in constant time.
 * - {@link verifyUnknownUser} costs what a real verification costs, so "no such user" and "wrong
 *   password" take similar time.
 *
 * @example
 * const stored = await hashPassword('correct horse battery staple');
 * await verifyPassword('correct horse battery staple', stored); // true
 */

/** Iterations of new hashes: the most Cloudflare Workers allow. */
export const PBKDF2_ITERATIONS = 100_000;
/** Highest count accepted when verifying (the platform cap). */
const MAX_ITERATIONS = 100_000;
const SALT_BYTES = 16;
const HASH_BITS = 256;
const PREFIX = 'pbkdf2-sha256';
const FORMAT = /^pbkdf2-sha256\$([1-9]\d{0,6})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

const enc = new TextEncoder();
const b64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));
const unb64 = (s: string) => Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));

async function derive(password: string, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  // NFKC (NIST SP 800-63B): the same password typed on two keyboards may arrive composed or not.
  const key = await crypto.subtle.importKey('raw', enc.encode(password.normalize('NFKC')), 'PBKDF2', false, ['deriveBits']);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations }, key, HASH_BITS));
}

/** A new hash string for `password`, with a fresh random salt. */
export async function hashPassword(password: string, iterations = PBKDF2_ITERATIONS): Promise<string> {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) throw new RangeError(`password: iterations must be 1..${MAX_ITERATIONS}`);
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  return `${PREFIX}$${iterations}$${b64(salt)}$${b64(await derive(password, salt, iterations))}`;
}

/** The parts of a stored hash, or a TypeError: a row we cannot read is a server-side bug, never a wrong password. */
function parse(stored: string): { iterations: number; salt: Uint8Array; hash: Uint8Array } {
  const m = FORMAT.exec(stored);
  const iterations = Number(m?.[1]);
  if (!m || iterations > MAX_ITERATIONS) throw new TypeError('password: unrecognised or unsupported stored hash');
  const salt = unb64(m[2]!);
  const hash = unb64(m[3]!);
  if (salt.length < 8 || hash.length !== HASH_BITS / 8) throw new TypeError('password: unrecognised or unsupported stored hash');
  return { iterations, salt, hash };
}

/** Whether `password` matches `stored`. Throws TypeError on a malformed `stored`. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const { iterations, salt, hash } = parse(stored);
  const derived = await derive(password, salt, iterations);
  return crypto.subtle.timingSafeEqual(derived, hash);
}

// A valid hash of a password nobody knows (the salt and hash are not secret; the point is the work).
const DUMMY = `${PREFIX}$${PBKDF2_ITERATIONS}$${b64(new Uint8Array(SALT_BYTES).fill(7))}$${b64(new Uint8Array(HASH_BITS / 8).fill(7))}`;

/** Does the work of a verification and answers false: for logins naming a user that does not exist. */
export async function verifyUnknownUser(password: string): Promise<false> {
  await verifyPassword(password, DUMMY);
  return false;
}

/** Whether a stored hash was made with fewer iterations than new ones get (rehash it after a good login). */
export function needsRehash(stored: string): boolean {
  const m = FORMAT.exec(stored);
  return !m || Number(m[1]) < PBKDF2_ITERATIONS;
}
