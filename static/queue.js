// Waiting in line instead of an error: when the server answers 503 with Retry-After (every inference
// slot busy and its short queue full, or the result store briefly unavailable), the page waits the
// time the server asks, plus a little random jitter so that many pages do not come back at the same
// moment, and sends the same request again by itself. The caller shows the countdown; the user never
// has to retry by hand. API clients see the plain 503 + Retry-After.
(() => {
  "use strict";
  const JITTER = 0.25; // up to 25 % more than Retry-After
  const MAX_WAIT_S = 600; // after ten minutes in line, the 503 is shown after all

  function abortError() {
    return new DOMException("aborted", "AbortError");
  }

  // resolves after ms, or rejects with an AbortError as soon as signal aborts
  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal && signal.aborted) { reject(abortError()); return; }
      const timer = setTimeout(() => { if (signal) signal.removeEventListener("abort", stop); resolve(); }, ms);
      function stop() { clearTimeout(timer); reject(abortError()); }
      if (signal) signal.addEventListener("abort", stop, { once: true });
    });
  }

  // the seconds to wait before trying again, or null when the answer is not a "come back later"
  function retryAfter(status, header) {
    if (status !== 503) return null;
    const s = Number(header);
    return Number.isFinite(s) && s >= 0 ? Math.max(1, s) : null;
  }

  // attempt() -> {status, retryAfter (the header's text), ...}; on a 503 with Retry-After, counts down
  // (onWait(secondsLeft, round) every second) and tries again, until another answer comes or the wait
  // in line passes MAX_WAIT_S; answers that last attempt's result
  async function retry(attempt, onWait, signal) {
    let waited = 0;
    for (let round = 1; ; round++) {
      const answer = await attempt();
      const s = retryAfter(answer.status, answer.retryAfter);
      if (s === null || waited >= MAX_WAIT_S) return answer;
      let left = Math.ceil(s * (1 + JITTER * Math.random()));
      waited += left;
      while (left > 0) {
        if (onWait) onWait(left, round);
        await sleep(1000, signal);
        left--;
      }
    }
  }

  // fetch(url, init) that waits in line on 503 + Retry-After; init.signal also ends the wait
  async function queuedFetch(url, init, onWait) {
    const answer = await retry(async () => {
      const response = await fetch(url, init);
      return { status: response.status, retryAfter: response.headers.get("Retry-After"), response };
    }, onWait, init && init.signal);
    return answer.response;
  }

  window.studioQueue = { fetch: queuedFetch, retry, sleep };
})();
