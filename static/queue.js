// Waiting in line instead of an error. A photo's request asks the server for a place in its line
// (X-Line-Ticket: new). When every inference slot is busy and others are ahead, the server answers 503
// with the place it keeps (`line`: ticket, ahead, called, retry_in) and holds no upload meanwhile. The
// page then asks GET /api/v1/line/<ticket> every `retry_in` seconds how many are ahead (the caller shows
// it, counting down) and sends the same request again, with its ticket, as soon as its turn has come
// (`called`): first come, first served across every worker and host. While a request is on its way the
// page keeps asking, so a slow upload keeps its place. A 503 without a place (the line is full, or the
// result store is briefly unavailable) is waited out as Retry-After says, plus a little random jitter so
// that many pages do not come back at the same moment. The user never has to retry by hand. API
// clients that send no ticket see the plain 503 + Retry-After.
(() => {
  "use strict";
  const HEADER = "X-Line-Ticket";
  const JITTER = 0.25; // up to 25 % more than Retry-After, when there is no place to go by
  const MAX_WAIT_S = 600; // after ten minutes in line, the 503 is shown after all
  const KEEP_MS = 2000; // while a request is on its way, its place is asked about (and so kept) this often
  const MIN_PAUSE_MS = 250; // the shortest wait between two questions, whatever an answer says

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

  // the place the server kept for this request (a 503's `line`), or null
  function placeOf(answer) {
    const line = answer.status === 503 && answer.json && answer.json.line;
    return line && typeof line.ticket === "string" && /^[0-9a-f]{32}$/.test(line.ticket) ? line : null;
  }

  // where the place stands now; null when it is gone (expired, used); {later: s} when the server
  // cannot say for a moment
  async function ask(line, ticket, signal) {
    const r = await fetch(`${line}/${ticket}`, { headers: { Accept: "application/json" }, cache: "no-store", signal });
    if (r.status === 404) return null;
    if (!r.ok) return { later: retryAfter(r.status, r.headers.get("Retry-After")) || 1 };
    return r.json();
  }

  // the answer of the request `sending`, asking about its place every KEEP_MS until it comes
  async function keeping(sending, line, ticket, signal) {
    if (ticket === "new") return sending;
    const timer = setInterval(() => { ask(line, ticket, signal).catch(() => {}); }, KEEP_MS);
    try {
      return await sending;
    } finally {
      clearInterval(timer);
    }
  }

  // a plain Retry-After wait: onWait({seconds}) every second
  async function countdown(seconds, onWait, signal) {
    for (let left = seconds; left > 0; left--) {
      if (onWait) onWait({ seconds: left });
      await sleep(1000, signal);
    }
  }

  // the pause the server asked for, at least MIN_PAUSE_MS
  function pause(place, signal) {
    return sleep(Math.max(MIN_PAUSE_MS, (Number(place.retry_in) || 0) * 1000), signal);
  }

  // waits until the place is called (true), or is gone or the time is up (false); onWait({ahead})
  // whenever the server says how many are ahead
  async function turn(place, line, onWait, signal, until) {
    if (onWait) onWait({ ahead: place.ahead });
    await pause(place, signal);
    while (!place.called) {
      if (Date.now() >= until) return false;
      const now = await ask(line, place.ticket, signal);
      if (now === null) return false;
      if (now.later) { await sleep(now.later * 1000, signal); continue; }
      place = now;
      if (onWait) onWait({ ahead: place.ahead });
      if (!place.called) await pause(place, signal);
    }
    return true;
  }

  // attempt(ticket) -> {status, retryAfter (the header's text), json (a 503's body), ...} sends the
  // request with X-Line-Ticket: ticket ("new" or the place's). On a 503 it waits in line (`line`: the
  // URL of /api/v1/line) and tries again, until another answer comes or the wait passes MAX_WAIT_S;
  // answers that last attempt's result
  async function retry(attempt, { onWait, signal, line }) {
    const until = Date.now() + MAX_WAIT_S * 1000;
    let ticket = "new";
    for (;;) {
      const answer = await keeping(attempt(ticket), line, ticket, signal);
      if (answer.status !== 503 || Date.now() >= until) return answer;
      const place = placeOf(answer);
      if (place) {
        ticket = (await turn(place, line, onWait, signal, until)) ? place.ticket : "new";
        continue;
      }
      const s = retryAfter(answer.status, answer.retryAfter);
      if (s === null) return answer;
      ticket = "new";
      await countdown(Math.ceil(s * (1 + JITTER * Math.random())), onWait, signal);
    }
  }

  // fetch(url, init) that waits in line on 503 (`line`: the URL of /api/v1/line); init.signal also ends
  // the wait
  async function queuedFetch(url, init, { onWait, line }) {
    const answer = await retry(async (ticket) => {
      const headers = new Headers(init.headers || {});
      headers.set(HEADER, ticket);
      const response = await fetch(url, { ...init, headers });
      const json = response.status === 503 ? await response.clone().json().catch(() => null) : null;
      return { status: response.status, retryAfter: response.headers.get("Retry-After"), json, response };
    }, { onWait, signal: init.signal, line });
    return answer.response;
  }

  window.studioQueue = { fetch: queuedFetch, retry, HEADER };
})();
