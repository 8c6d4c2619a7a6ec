/**
 * Files the Worker imports as bytes: wrangler.toml's `[[rules]] type = "Data"` (which the vitest pool
 * applies too) makes each such import an `ArrayBuffer` of the file as it is on disk.
 */
declare module '*/@scalar/api-reference/dist/browser/standalone.js' {
  const bytes: ArrayBuffer;
  export default bytes;
}
