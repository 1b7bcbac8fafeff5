/** The IMF-fixdate for Date headers, formatted at most once a second (nginx and Node do the same). */
let cached = '';
let cachedAt = 0;

export function httpDate(): string {
  const now = Date.now();
  if (now - cachedAt >= 1000 || cached === '') {
    cachedAt = now - (now % 1000);
    cached = new Date(cachedAt).toUTCString();
  }
  return cached;
}
