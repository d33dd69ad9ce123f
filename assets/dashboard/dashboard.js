// spotpool's on-call dashboard: plain ES2020, no framework, no build step, served under a strict
// Content-Security-Policy (no inline script or style, no eval).
//
// Data flow: the admin token lives in this tab's sessionStorage only and goes out as an
// `Authorization: Bearer` header, never in a URL. After sign-in the page reads `GET /v1/pool`
// and `GET /v1/admin/users`, renders them, then streams `GET /v1/events` with `fetch` (an
// `EventSource` cannot send the header), parsing the server-sent events itself. Every event
// goes into the feed and asks for a refetch of the pool and the users (at most one a second);
// a 30 s timer refetches as a safety net. A stream that ends or fails is opened again with
// back-off, resuming with a `Last-Event-ID` header. A 401 forgets the token and asks again.
// Every piece of data reaches the page through `textContent`, never as markup.

"use strict";

(() => {
  const TOKEN_KEY = "spotpool.dashboard.token";
  const FEED_MAX = 200;
  const REFRESH_MIN_MS = 1000;
  const SAFETY_REFRESH_MS = 30000;
  // The daemon sends a keep-alive comment every 15 s: silence this long means a dead stream.
  const STREAM_IDLE_MS = 45000;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  // A stream open this long resets the back-off.
  const STREAM_HEALTHY_MS = 10000;
  const USERS_SHOWN_MAX = 300;

  const STATE_ORDER = ["failed", "provisioning", "migrating", "queued", "ready", "sleeping", "asleep", "deleting"];
  const KNOWN_COUNTS = ["available", "initializing", "assigned", "terminating"];
  const LAUNCH_TROUBLE = new Set([
    "pool.launch_backoff",
    "pool.launch_halted",
    "pool.quota_exceeded",
    "pool.capacity_unavailable",
    "instance.probe_failed",
  ]);
  const BAD_KINDS = new Set([
    "claim.failed",
    "instance.probe_failed",
    "pool.launch_halted",
    "pool.quota_exceeded",
    "move.abandoned",
    "route.refused",
  ]);
  const WARN_KINDS = new Set([
    "claim.requeued",
    "pool.launch_backoff",
    "pool.capacity_unavailable",
    "pool.fallback",
    "move.rolled_back",
    "route.no_capacity",
    "drain.paused",
    "leadership.released",
    "instance.terminating",
  ]);
  const GOOD_KINDS = new Set([
    "claim.ready",
    "move.done",
    "instance.available",
    "release.done",
    "leadership.acquired",
  ]);

  const $ = (id) => document.getElementById(id);

  /** The signed-in session: everything that goes when the token goes. */
  let session = null;
  /** The recycle the confirmation dialog asks about. */
  let pendingRecycle = null;
  /** The tiers whose instance list is open, kept across re-renders. */
  const openTiers = new Set();

  // ---------------------------------------------------------------- small helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function readToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function writeToken(token) {
    try {
      if (token === null) window.sessionStorage.removeItem(TOKEN_KEY);
      else window.sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      // Storage refused (a private mode): the token then lives in this page's memory only.
    }
  }

  /** "42s", "3m", "2h", "5d" since an RFC 3339 time. */
  function ago(iso) {
    const then = Date.parse(iso);
    if (!Number.isFinite(then)) return "—";
    return span(Math.max(0, Date.now() - then));
  }

  /** "in 3m" until an RFC 3339 time, or "now" once it has passed. */
  function until(iso) {
    const then = Date.parse(iso);
    if (!Number.isFinite(then)) return "—";
    const left = then - Date.now();
    return left <= 0 ? "now" : `in ${span(left)}`;
  }

  function span(ms) {
    const seconds = Math.floor(ms / 1000);
    if (seconds < 60) return `${seconds}s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes}m`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours}h`;
    return `${Math.floor(hours / 24)}d`;
  }

  /** Local wall-clock time, "03:14:07". */
  function clock(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "--:--:--";
    const two = (n) => String(n).padStart(2, "0");
    return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
  }

  function isAbort(error) {
    return error instanceof DOMException && error.name === "AbortError";
  }

  class HttpError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  async function httpError(response) {
    let code = "";
    let message = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && body.error) {
        code = String(body.error.code || "");
        message = String(body.error.message || message);
      }
    } catch (_) {
      // Not the API's JSON error (a proxy's page): the status says enough.
    }
    const retry = Number(response.headers.get("Retry-After"));
    return new HttpError(response.status, code, message, Number.isFinite(retry) && retry > 0 ? retry : null);
  }

  function describe(error) {
    if (error instanceof HttpError) return error.code ? `${error.code}: ${error.message}` : error.message;
    if (error instanceof TypeError) return "the daemon cannot be reached";
    return String((error && error.message) || error);
  }

  /** One API call with the session's token; JSON back, or an HttpError. */
  async function api(s, method, path) {
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${s.token}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      signal: s.controller.signal,
    });
    if (!response.ok) throw await httpError(response);
    return response.json();
  }

  /** A refused token ends the session; true when it did. */
  function authFailed(error) {
    if (!(error instanceof HttpError)) return false;
    if (error.status === 401) {
      signOut("The daemon refused that token (401). Enter the admin token.");
      return true;
    }
    if (error.status === 403) {
      signOut("That is not the admin token (403): the dashboard needs the admin token.");
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------- sign-in and sign-out

  function newSession(token) {
    return {
      token,
      controller: new AbortController(),
      pool: null,
      poolError: null,
      users: null,
      usersError: null,
      lastEventId: null,
      backoff: BACKOFF_MIN_MS,
      streamed: false,
      reconnectTimer: null,
      reconnectNow: null,
      refreshTimer: null,
      safetyTimer: null,
      refreshing: false,
      refreshAgain: false,
      lastRefreshAt: 0,
      feedIds: new Set(),
      rows: new Map(),
      tierNews: new Map(),
      noticeTimer: null,
      noticeFrom: null,
    };
  }

  function start(token) {
    session = newSession(token);
    const s = session;
    $("token-form").hidden = true;
    $("token-error").hidden = true;
    $("dashboard").hidden = false;
    $("sign-out").hidden = false;
    setConnection("connecting");
    s.safetyTimer = setInterval(() => scheduleRefresh(s), SAFETY_REFRESH_MS);
    refresh(s).then(() => {
      if (s === session) stream(s);
    });
  }

  function signOut(message) {
    const s = session;
    session = null;
    if (s) {
      s.controller.abort();
      clearTimeout(s.reconnectTimer);
      clearTimeout(s.refreshTimer);
      clearTimeout(s.noticeTimer);
      clearInterval(s.safetyTimer);
    }
    writeToken(null);
    pendingRecycle = null;
    const dialog = $("confirm-dialog");
    if (dialog.open) dialog.close();
    $("tiers").replaceChildren();
    $("shards").replaceChildren();
    $("users-body").replaceChildren();
    $("feed").replaceChildren();
    $("repair-result").replaceChildren();
    $("feed-empty").hidden = false;
    $("feed-note").hidden = true;
    $("notice").hidden = true;
    $("users-error").hidden = true;
    $("users-more").hidden = true;
    $("users-count").textContent = "";
    $("waiting-for-route").hidden = true;
    $("pool").dataset.loaded = "false";
    $("role").hidden = true;
    $("sign-out").hidden = true;
    $("dashboard").hidden = true;
    setConnection("offline");
    const error = $("token-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("token-form").hidden = false;
    $("token-input").focus();
  }

  function setConnection(state, why) {
    const node = $("connection");
    node.dataset.state = state;
    node.textContent = state;
    node.title = why || "";
  }

  /** The banner under the header; `from` says whose it is, so only its owner clears it; `ttl`
   *  (ms) clears it by itself. */
  function showNotice(s, text, from, { info = false, ttl = 0 } = {}) {
    if (s !== session) return;
    const notice = $("notice");
    clearTimeout(s.noticeTimer);
    s.noticeFrom = from;
    notice.textContent = text;
    notice.classList.toggle("info", Boolean(info));
    notice.hidden = false;
    if (ttl) s.noticeTimer = setTimeout(() => clearNotice(s, from), ttl);
  }

  function clearNotice(s, from) {
    if (s !== session || s.noticeFrom !== from) return;
    clearTimeout(s.noticeTimer);
    s.noticeFrom = null;
    $("notice").hidden = true;
  }

  // ---------------------------------------------------------------- refetching

  /** Reads the pool and the users again and renders them. */
  async function refresh(s) {
    if (s !== session) return;
    if (s.refreshing) {
      s.refreshAgain = true;
      return;
    }
    s.refreshing = true;
    s.lastRefreshAt = Date.now();
    try {
      const [pool, users] = await Promise.allSettled([
        api(s, "GET", "/v1/pool"),
        api(s, "GET", "/v1/admin/users"),
      ]);
      if (s !== session) return;
      for (const result of [pool, users]) {
        if (result.status === "rejected" && authFailed(result.reason)) return;
      }
      if (pool.status === "fulfilled") {
        s.pool = pool.value;
        s.poolError = null;
      } else if (!isAbort(pool.reason)) {
        s.poolError = describe(pool.reason);
      }
      if (users.status === "fulfilled") {
        const list = users.value && users.value.users;
        s.users = Array.isArray(list) ? list : [];
        s.usersError = null;
      } else if (!isAbort(users.reason)) {
        s.usersError = describe(users.reason);
      }
      render(s);
    } finally {
      s.refreshing = false;
      if (s === session && s.refreshAgain) {
        s.refreshAgain = false;
        scheduleRefresh(s);
      }
    }
  }

  /** A refetch soon: at most one a second, however many events come. */
  function scheduleRefresh(s) {
    if (s !== session) return;
    if (s.refreshing) {
      s.refreshAgain = true;
      return;
    }
    if (s.refreshTimer) return;
    const wait = Math.max(0, s.lastRefreshAt + REFRESH_MIN_MS - Date.now());
    s.refreshTimer = setTimeout(() => {
      s.refreshTimer = null;
      refresh(s);
    }, wait);
  }

  // ---------------------------------------------------------------- the event stream

  /** Server-sent events, parsed by the spec: LF, CR or CRLF line ends, frames split anywhere. */
  class SseParser {
    constructor(onFrame) {
      this.onFrame = onFrame;
      this.buffer = "";
      this.clear();
    }

    clear() {
      this.event = "";
      this.data = [];
      this.id = undefined;
    }

    push(text) {
      const buffer = this.buffer + text;
      let pos = 0;
      let cr = buffer.indexOf("\r");
      for (;;) {
        if (cr !== -1 && cr < pos) cr = buffer.indexOf("\r", pos);
        const lf = buffer.indexOf("\n", pos);
        let end;
        let next;
        if (cr !== -1 && (lf === -1 || cr < lf)) {
          // A CR last in the chunk may be the first half of a CRLF: wait for the next chunk.
          if (cr === buffer.length - 1) break;
          end = cr;
          next = buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
        } else if (lf !== -1) {
          end = lf;
          next = lf + 1;
        } else {
          break;
        }
        this.line(buffer.slice(pos, end));
        pos = next;
      }
      this.buffer = buffer.slice(pos);
    }

    /** The stream ended: a CR held back was a line end; a frame without its blank line is dropped. */
    end() {
      if (this.buffer.endsWith("\r")) this.line(this.buffer.slice(0, -1));
      this.buffer = "";
      this.clear();
    }

    line(line) {
      if (line === "") {
        const frame = { event: this.event || "message", data: this.data.join("\n"), id: this.id };
        const hasData = this.data.length > 0;
        this.clear();
        if (hasData || frame.id !== undefined) this.onFrame(frame, hasData);
        return;
      }
      if (line[0] === ":") return; // a comment: the keep-alive
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && !value.includes("\0")) this.id = value;
      // `retry` and unknown fields: ignored (the page keeps its own back-off).
    }
  }

  /** Opens the stream; when it ends, schedules the next one. */
  async function stream(s) {
    if (s !== session) return;
    clearTimeout(s.reconnectTimer);
    s.reconnectTimer = null;
    s.reconnectNow = null;
    const controller = new AbortController();
    const stopWithSession = () => controller.abort();
    s.controller.signal.addEventListener("abort", stopWithSession, { once: true });
    let idle = null;
    const awake = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), STREAM_IDLE_MS);
    };
    let retryAfter = null;
    let closed = null;
    let problem = null;
    let openedAt = 0;
    setConnection(s.streamed ? "reconnecting" : "connecting");
    try {
      const headers = { Authorization: `Bearer ${s.token}`, Accept: "text/event-stream" };
      // Resume after the last event seen; the first stream starts with the next event.
      if (s.lastEventId !== null) headers["Last-Event-ID"] = s.lastEventId;
      awake();
      const response = await fetch("/v1/events", {
        headers,
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        signal: controller.signal,
      });
      if (!response.ok) {
        const error = await httpError(response);
        if (authFailed(error)) return;
        retryAfter = error.retryAfter;
        throw error;
      }
      if (!response.body) throw new Error("the browser gives no stream body");
      openedAt = Date.now();
      setConnection("live");
      clearNotice(s, "stream");
      // Back after a gap: the numbers may have moved meanwhile.
      if (s.streamed) scheduleRefresh(s);
      s.streamed = true;
      const parser = new SseParser((frame, hasData) => {
        if (frame.id !== undefined && frame.id !== "") s.lastEventId = frame.id;
        if (!hasData) return;
        const reason = onFrame(s, frame);
        if (reason) closed = reason;
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        awake();
        parser.push(decoder.decode(value, { stream: true }));
        if (s !== session) return;
      }
      parser.push(decoder.decode());
      parser.end();
      problem = closed ? `the daemon closed the stream (${closed})` : "the stream ended";
    } catch (error) {
      if (s !== session) return;
      problem = isAbort(error) ? "no data for too long" : describe(error);
    } finally {
      clearTimeout(idle);
      s.controller.signal.removeEventListener("abort", stopWithSession);
    }
    if (s !== session) return;
    if (openedAt && Date.now() - openedAt >= STREAM_HEALTHY_MS) s.backoff = BACKOFF_MIN_MS;
    let delay;
    if (closed === "lagging") delay = 250;
    else if (retryAfter) delay = retryAfter * 1000;
    else delay = s.backoff * (0.75 + Math.random() * 0.5);
    s.backoff = Math.min(BACKOFF_MAX_MS, s.backoff * 2);
    const seconds = Math.max(1, Math.round(delay / 1000));
    setConnection("reconnecting", `${problem}; again in ${seconds} s`);
    // A blip stays on the dot; a stream that keeps failing says why.
    if (s.backoff >= 4 * BACKOFF_MIN_MS) showNotice(s, `Event stream: ${problem}; trying again in ${seconds} s.`, "stream");
    s.reconnectNow = () => stream(s);
    s.reconnectTimer = setTimeout(() => stream(s), delay);
  }

  /** One frame of the stream; answers the close reason for `event: close`. */
  function onFrame(s, frame) {
    let data;
    try {
      data = JSON.parse(frame.data);
    } catch (_) {
      return null;
    }
    if (data === null || typeof data !== "object") return null;
    if (frame.event === "close") {
      return String(data.reason || "closed");
    }
    if (frame.event === "reset") {
      // Events before the horizon are gone; the stream carries on after it.
      const horizon = Number(data.horizon);
      if (Number.isFinite(horizon) && (s.lastEventId === null || Number(s.lastEventId) < horizon)) {
        s.lastEventId = String(horizon);
      }
      const note = $("feed-note");
      note.textContent = `The journal no longer keeps events up to #${data.horizon}; some were missed.`;
      note.hidden = false;
      scheduleRefresh(s);
      return null;
    }
    if (typeof data.kind !== "string") return null;
    addEvent(s, data);
    scheduleRefresh(s);
    return null;
  }

  // ---------------------------------------------------------------- the feed

  function severity(kind) {
    if (BAD_KINDS.has(kind) || /(^|[._])(failed|crash_loop|unhealthy|halted)$/.test(kind)) return "bad";
    if (GOOD_KINDS.has(kind)) return "good";
    if (WARN_KINDS.has(kind)) return "warn";
    if (/^(rollback|recover|no_route)\./.test(kind)) return "warn";
    if (/^interruption\./.test(kind) && kind !== "interruption.ignored") return "warn";
    if (/^health\./.test(kind)) return "warn";
    return "";
  }

  /** The tier an event is about: its own, or a pool event's "tier <name>: ..." message. */
  function tierOf(event) {
    if (event.tier) return event.tier;
    const match = /^tier (\S+?):? /.exec(event.message || "");
    return match ? match[1] : null;
  }

  function addEvent(s, event) {
    const id = Number(event.id);
    if (s.feedIds.has(id)) return;
    s.feedIds.add(id);
    const item = el("li", `event ${severity(event.kind)}`.trim());
    item.dataset.id = String(event.id);
    item.dataset.kind = event.kind;
    if (event.user_id) item.dataset.user = event.user_id;
    const time = el("time", "time", clock(event.at));
    time.dateTime = String(event.at || "");
    time.title = String(event.at || "");
    item.append(time, el("span", "kind", event.kind));
    const who = [event.user_id, event.instance_id, event.tier].filter(Boolean).join(" · ");
    if (who) item.append(el("span", "who mono", who));
    if (event.message) item.append(el("span", "msg", event.message));
    const feed = $("feed");
    feed.prepend(item);
    while (feed.children.length > FEED_MAX) {
      const last = feed.lastElementChild;
      s.feedIds.delete(Number(last.dataset.id));
      last.remove();
    }
    $("feed-empty").hidden = true;

    const tier = tierOf(event);
    if (tier && (event.kind === "instance.launched" || LAUNCH_TROUBLE.has(event.kind))) {
      const news = s.tierNews.get(tier) || { launches: 0, troubles: 0, last: null };
      if (event.kind === "instance.launched") news.launches += 1;
      else {
        news.troubles += 1;
        news.last = event;
      }
      s.tierNews.set(tier, news);
    }
  }

  // ---------------------------------------------------------------- rendering

  // A tap must land on the node it started on: hold re-renders while a pointer is down.
  let pointerDownAt = 0;
  let renderHeld = null;
  document.addEventListener("pointerdown", () => { pointerDownAt = Date.now(); }, true);
  const pointerDone = () => {
    pointerDownAt = 0;
    if (renderHeld) {
      const s = renderHeld;
      renderHeld = null;
      setTimeout(() => render(s), 0);
    }
  };
  document.addEventListener("pointerup", pointerDone, true);
  document.addEventListener("pointercancel", pointerDone, true);

  function render(s) {
    if (s !== session) return;
    if (pointerDownAt && Date.now() - pointerDownAt < 5000) {
      renderHeld = s;
      return;
    }
    renderPool(s);
    renderUsers(s);
  }

  function renderPool(s) {
    if (s.poolError) showNotice(s, `Cannot read the pool: ${s.poolError}`, "pool");
    else clearNotice(s, "pool");
    const pool = s.pool;
    if (!pool) return;
    const role = $("role");
    role.textContent = pool.role;
    role.className = `badge ${pool.role === "leader" ? "leader" : "standby"}`;
    role.title = pool.role === "leader"
      ? "this replica runs the reconciler"
      : "this replica serves the API only; repair needs the leader";
    role.hidden = false;

    const byTier = new Map();
    for (const user of s.users || []) {
      if (!byTier.has(user.tier)) byTier.set(user.tier, []);
      byTier.get(user.tier).push(user);
    }
    const tiers = Array.isArray(pool.tiers) ? pool.tiers : [];
    $("tiers").replaceChildren(...tiers.map((tier) => tierCard(s, tier, byTier.get(tier.tier))));

    const shards = Array.isArray(pool.shards) ? pool.shards : [];
    $("shards").replaceChildren(...shards.map(shardCard));
    const waiting = $("waiting-for-route");
    const n = pool.waiting_for_route;
    waiting.textContent = `${n} queued ${n === 1 ? "user waits" : "users wait"} for route capacity: every shard is full.`;
    waiting.classList.toggle("error", pool.waiting_for_route > 0);
    waiting.hidden = !(pool.waiting_for_route > 0);
    $("pool").dataset.loaded = "true";
  }

  function stat(label, value, tone) {
    const box = el("div", tone ? `stat ${tone}` : "stat");
    box.append(el("span", "n", value), el("span", "l", label));
    return box;
  }

  function tierCard(s, tier, users) {
    const card = el("article", "card tier");
    card.dataset.tier = tier.tier;
    const head = el("div", "tier-head");
    head.append(el("h3", "", tier.tier));
    if (tier.paused) head.append(el("span", "badge paused", "paused"));
    if (tier.slots_per_instance > 1) head.append(el("span", "badge", `${tier.slots_per_instance} per instance`));
    card.append(head);

    const counts = tier.counts || {};
    const spares = counts.available || 0;
    const queued = tier.queued_users || 0;
    const total = Object.values(counts).reduce((sum, n) => sum + (Number(n) || 0), 0);
    let spareTone = "ok";
    if (spares === 0 && (tier.spare_target > 0 || queued > 0)) spareTone = "bad";
    else if (spares < tier.spare_target) spareTone = "warn";
    const stats = el("div", "stats");
    stats.append(
      stat(`spares (target ${tier.spare_target})`, spares, spareTone),
      stat("queued", queued, queued > 0 ? "warn" : ""),
      stat("launching", counts.initializing || 0),
      stat("in use", counts.assigned || 0),
      stat("terminating", counts.terminating || 0),
      stat(`instances (max ${tier.max_instances})`, total, total >= tier.max_instances ? "warn" : ""),
    );
    for (const [status, n] of Object.entries(counts)) {
      if (!KNOWN_COUNTS.includes(status)) stats.append(stat(status, n));
    }
    card.append(stats);

    if (users) {
      const states = new Map();
      const health = new Map();
      for (const user of users) {
        states.set(user.state, (states.get(user.state) || 0) + 1);
        if (user.health && user.health !== "healthy") health.set(user.health, (health.get(user.health) || 0) + 1);
      }
      const chips = el("ul", "chips");
      chips.setAttribute("aria-label", "users by state");
      const ordered = [...states.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
      for (const state of ordered) chips.append(el("li", `chip state state-${state}`, `${state} ${states.get(state)}`));
      for (const [h, n] of health) chips.append(el("li", `chip health health-${h}`, `${h.replace("_", " ")} ${n}`));
      if (!users.length) chips.append(el("li", "chip", "no users"));
      card.append(chips);
      const failed = states.get("failed") || 0;
      if (failed) card.append(el("p", "problem", `${failed} failed ${failed === 1 ? "user" : "users"}: see the user list.`));
    }

    const blocked = tier.launch_blocked;
    if (blocked) {
      card.append(el("p", "problem",
        `Launches blocked (${blocked.cause}) since ${ago(blocked.since)} ago, retry ${until(blocked.retry_at)}: ${blocked.detail}`));
    }
    const news = s.tierNews.get(tier.tier);
    if (news) {
      let text = `Since this page opened: ${news.launches} launched`;
      if (news.troubles) text += `, ${news.troubles} launch failures; last ${ago(news.last.at)} ago: ${news.last.message || news.last.kind}`;
      card.append(el("p", news.troubles ? "trouble" : "hint", text));
    }

    const instances = Array.isArray(tier.instances) ? tier.instances : [];
    const details = el("details");
    details.dataset.tier = tier.tier;
    details.open = openTiers.has(tier.tier);
    details.addEventListener("toggle", () => {
      if (details.open) openTiers.add(tier.tier);
      else openTiers.delete(tier.tier);
    });
    details.append(el("summary", "", `Instances (${instances.length})`));
    const list = el("ul", "instances");
    for (const instance of instances) list.append(instanceRow(s, instance));
    details.append(list);
    card.append(details);
    return card;
  }

  function rank(state) {
    const at = STATE_ORDER.indexOf(state);
    return at === -1 ? STATE_ORDER.length : at;
  }

  function instanceRow(s, instance) {
    const item = el("li", "instance");
    item.dataset.instance = instance.instance_id;
    const what = el("div", "what");
    what.append(el("span", "mono", instance.instance_id));
    const holders = (instance.users || []).map((h) => h.user_id);
    if (!holders.length && instance.user_id) holders.push(instance.user_id);
    const meta = [
      instance.status,
      instance.instance_type,
      instance.availability_zone,
      holders.length ? holders.join(", ") : null,
      `up ${ago(instance.launched_at)}`,
    ].filter(Boolean).join(" · ");
    what.append(el("span", "meta", meta));
    item.append(what);
    if (instance.status !== "terminating") item.append(recycleButton(s, instance.instance_id));
    return item;
  }

  function recycleButton(s, instanceId) {
    const button = el("button", "recycle", "Recycle");
    button.type = "button";
    button.setAttribute("aria-label", `Recycle ${instanceId}`);
    button.addEventListener("click", () => askRecycle(s, instanceId));
    return button;
  }

  function shardCard(shard) {
    const card = el("article", "card shard");
    card.dataset.shard = shard.name;
    const head = el("div", "shard-head");
    head.append(el("strong", "", shard.name), el("span", "", `${shard.users} / ${shard.capacity} users · ${shard.routing}`));
    card.append(head);
    const fill = shard.capacity > 0 ? shard.users / shard.capacity : 1;
    const bar = el("div", "bar");
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", String(shard.capacity));
    bar.setAttribute("aria-valuenow", String(shard.users));
    bar.setAttribute("aria-label", `${shard.name} fill`);
    const inner = el("div", `bar-fill${fill >= 0.95 ? " bad" : fill >= 0.8 ? " warn" : ""}`);
    // CSSOM, which the Content-Security-Policy allows (a style attribute it would not).
    inner.style.width = `${Math.min(100, Math.round(fill * 100))}%`;
    bar.append(inner);
    card.append(bar);
    return card;
  }

  // ---------------------------------------------------------------- users

  function attention(user) {
    return user.state === "failed" || user.health === "unhealthy" || user.health === "crash_loop";
  }

  function userOrder(a, b) {
    const weight = (u) => (attention(u) ? 0 : ["provisioning", "migrating", "queued"].includes(u.state) ? 1 : 2);
    return weight(a) - weight(b) || String(a.user_id).localeCompare(String(b.user_id));
  }

  function matches(user, words) {
    if (!words.length) return true;
    const hay = [user.user_id, user.state, user.instance_id, user.route, user.tier, user.shard, user.health]
      .filter(Boolean).join(" ").toLowerCase();
    return words.every((word) => hay.includes(word));
  }

  function renderUsers(s) {
    const errorLine = $("users-error");
    errorLine.textContent = s.usersError ? `Cannot read the users: ${s.usersError}` : "";
    errorLine.hidden = !s.usersError;
    if (!s.users) return;
    const words = $("user-search").value.toLowerCase().split(/\s+/).filter(Boolean);
    const found = s.users.filter((u) => matches(u, words)).sort(userOrder);
    const shown = found.slice(0, USERS_SHOWN_MAX);
    const body = $("users-body");
    const keep = new Map();
    const rows = shown.map((user) => {
      const signature = JSON.stringify([
        user.state, user.instance_id, user.route, user.health, user.tier, user.shard,
        user.error, user.waiting_for, ago(user.created_at), user.ready_at ? ago(user.ready_at) : null,
      ]);
      const old = s.rows.get(user.user_id);
      const row = old && old.signature === signature ? old.row : userRow(s, user);
      keep.set(user.user_id, { row, signature });
      return row;
    });
    s.rows = keep;
    // Move only what moved, so rows under a finger stay put.
    rows.forEach((row, index) => {
      if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    });
    while (body.children.length > rows.length) body.lastElementChild.remove();
    $("users-count").textContent = words.length ? `(${found.length} of ${s.users.length})` : `(${s.users.length})`;
    const more = $("users-more");
    if (found.length > shown.length) more.textContent = `Showing ${shown.length} of ${found.length}: search to narrow.`;
    else if (!found.length) more.textContent = s.users.length ? "No user matches the search." : "No users.";
    more.hidden = found.length > 0 && found.length === shown.length;
  }

  /** A cell: its label (shown beside the value when the table is a card per user) and one
   *  wrapper holding the value's parts. */
  function cell(label, className, ...parts) {
    const td = el("td", className);
    td.dataset.label = label;
    const value = el("div", "v");
    value.append(...parts);
    td.append(value);
    return td;
  }

  function userRow(s, user) {
    const row = el("tr", attention(user) ? "user attention" : "user");
    row.dataset.user = user.user_id;
    row.dataset.state = user.state;

    const place = [user.tier, user.shard].filter(Boolean).join(" · ");
    const who = cell("User", "cell-user", el("span", "mono", user.user_id), el("span", "sub", place));

    const stateParts = [el("span", `state state-${user.state}`, user.state)];
    if (user.error) stateParts.push(el("span", "sub", user.error));
    else if (user.waiting_for) stateParts.push(el("span", "sub", `waiting for ${user.waiting_for}`));
    const state = cell("State", "cell-state", ...stateParts);

    const instance = cell("Instance", "cell-instance", el("span", "mono", user.instance_id || "—"));
    const route = cell("Route", "cell-route", el("span", "mono", user.route || "—"));
    const health = cell("Health", "cell-health",
      el("span", `health health-${user.health || "none"}`, user.health ? user.health.replace("_", " ") : "—"));

    const ageParts = [el("span", "", ago(user.created_at))];
    if (user.ready_at) ageParts.push(el("span", "sub", `ready ${ago(user.ready_at)}`));
    const age = cell("Age", "cell-age", ...ageParts);
    age.title = `asked at ${user.created_at}`;

    const actions = cell("", "cell-actions");
    if (user.instance_id) actions.firstChild.append(recycleButton(s, user.instance_id));

    row.append(who, state, instance, route, health, age, actions);
    return row;
  }

  // ---------------------------------------------------------------- actions

  function holdersOf(s, instanceId) {
    for (const tier of (s.pool && s.pool.tiers) || []) {
      for (const instance of tier.instances || []) {
        if (instance.instance_id === instanceId) {
          const ids = (instance.users || []).map((h) => h.user_id);
          if (!ids.length && instance.user_id) ids.push(instance.user_id);
          return ids;
        }
      }
    }
    return (s.users || []).filter((u) => u.instance_id === instanceId).map((u) => u.user_id);
  }

  function askRecycle(s, instanceId) {
    if (s !== session) return;
    const users = holdersOf(s, instanceId);
    pendingRecycle = { s, instanceId };
    $("confirm-title").textContent = `Recycle ${instanceId}?`;
    $("confirm-text").textContent = users.length
      ? `${users.length === 1 ? "User" : "Users"} ${users.join(", ")} ${users.length === 1 ? "moves" : "move"} to a fresh instance, keeping route and workspace; then ${instanceId} is terminated.`
      : `${instanceId} serves no user: it is terminated and a fresh spare replaces it.`;
    const dialog = $("confirm-dialog");
    if (!dialog.open) dialog.showModal();
    $("confirm-cancel").focus();
  }

  async function recycle(s, instanceId) {
    try {
      const answer = await api(s, "POST", `/v1/admin/instances/${encodeURIComponent(instanceId)}/recycle`);
      const users = Array.isArray(answer.user_ids) ? answer.user_ids : [];
      showNotice(s, users.length
        ? `Recycling ${instanceId}: moving ${users.join(", ")}.`
        : `Recycling ${instanceId}: replacing a spare.`, "recycle", { info: true, ttl: 15000 });
      scheduleRefresh(s);
    } catch (error) {
      if (s !== session || isAbort(error) || authFailed(error)) return;
      showNotice(s, `Recycle of ${instanceId} failed: ${describe(error)}`, "recycle", { ttl: 60000 });
    }
  }

  async function repairDryRun(s) {
    const button = $("repair-dry-run");
    const out = $("repair-result");
    button.disabled = true;
    button.textContent = "Running…";
    try {
      const report = await api(s, "POST", "/v1/admin/repair?dry_run=true");
      if (s !== session) return;
      out.replaceChildren(repairReport(report));
    } catch (error) {
      if (s !== session || isAbort(error) || authFailed(error)) return;
      out.replaceChildren(el("p", "error", `Repair dry run failed: ${describe(error)}`));
    } finally {
      button.disabled = false;
      button.textContent = "Repair (dry run)";
    }
  }

  function repairReport(report) {
    const card = el("div", "card");
    card.append(el("h3", "", `Dry run at ${clock(new Date().toISOString())}`));
    if (report.pass_error) card.append(el("p", "error", `The pass failed: ${report.pass_error}`));
    const actions = Array.isArray(report.pass_actions) ? report.pass_actions : [];
    const orphans = Array.isArray(report.orphans) ? report.orphans : [];
    if (!actions.length && !orphans.length && !report.pass_error) {
      card.append(el("p", "", "Nothing to do: the pool matches what is asked of it and no orphan was found."));
      return card;
    }
    card.append(el("p", "", `The pass would take ${actions.length} ${actions.length === 1 ? "action" : "actions"}.`));
    if (actions.length) {
      const list = el("ul");
      for (const a of actions) {
        list.append(el("li", "", [a.action, a.user_id, a.instance_id, a.detail].filter(Boolean).join(" · ")));
      }
      card.append(list);
    }
    card.append(el("p", orphans.length ? "trouble" : "", `${orphans.length} ${orphans.length === 1 ? "orphan" : "orphans"} found.`));
    if (orphans.length) {
      const list = el("ul");
      for (const o of orphans) {
        const name = o.name ? ` (${o.name})` : "";
        list.append(el("li", "", `${o.kind} ${o.id}${name}: ${o.reason} → ${o.result}`));
      }
      card.append(list);
    }
    return card;
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("token-input");
      const token = input.value.trim();
      input.value = "";
      if (!token) {
        const error = $("token-error");
        error.textContent = "Enter the admin token.";
        error.hidden = false;
        return;
      }
      writeToken(token);
      start(token);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("repair-dry-run").addEventListener("click", () => {
      if (session) repairDryRun(session);
    });
    $("user-search").addEventListener("input", () => {
      if (session) renderUsers(session);
    });
    $("feed-problems").addEventListener("click", (event) => {
      const on = !$("feed").classList.contains("problems-only");
      $("feed").classList.toggle("problems-only", on);
      event.currentTarget.setAttribute("aria-pressed", String(on));
    });
    $("feed-clear").addEventListener("click", () => {
      if (!session) return;
      $("feed").replaceChildren();
      session.feedIds.clear();
      $("feed-empty").hidden = false;
      $("feed-note").hidden = true;
    });
    const dialog = $("confirm-dialog");
    $("confirm-cancel").addEventListener("click", () => {
      pendingRecycle = null;
      dialog.close();
    });
    $("confirm-ok").addEventListener("click", () => {
      const asked = pendingRecycle;
      pendingRecycle = null;
      dialog.close();
      if (asked && asked.s === session) recycle(asked.s, asked.instanceId);
    });
    dialog.addEventListener("cancel", () => { pendingRecycle = null; });
    // A phone woken at 3 a.m.: catch up at once rather than at the next timer.
    const wake = () => {
      const s = session;
      if (!s || document.visibilityState !== "visible") return;
      scheduleRefresh(s);
      if (s.reconnectNow) s.reconnectNow();
    };
    document.addEventListener("visibilitychange", wake);
    window.addEventListener("online", wake);

    const token = readToken();
    if (token) start(token);
    else signOut("");
  }

  wire();
})();
