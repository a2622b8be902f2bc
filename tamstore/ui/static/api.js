// Talking to the TAMS API from the browser: credentials, errors, paging through Link.

const KEY = "tamstore.credentials";

export function credentials() {
  try { return JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch { return null; }
}

export function setCredentials(value) {
  if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
  else sessionStorage.removeItem(KEY);
}

function authorization() {
  const c = credentials();
  if (!c) return {};
  if (c.token) return { Authorization: `Bearer ${c.token}` };
  return { Authorization: "Basic " + btoa(`${c.user}:${c.secret}`) };
}

// A query parameter carrying the token, for what cannot send headers (EventSource, players).
export function tokenQuery() {
  const c = credentials();
  return c && c.token ? `access_token=${encodeURIComponent(c.token)}` : "";
}

export function withToken(url) {
  const q = tokenQuery();
  if (!q) return url;
  return url + (url.includes("?") ? "&" : "?") + q;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.summary ? body.summary : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let onUnauthorised = () => {};
export function whenUnauthorised(handler) { onUnauthorised = handler; }

export async function request(path, { method = "GET", body, headers = {} } = {}) {
  // credentials "omit": the UI sends its own Authorization; a 401 must come back to it, not
  // open the browser's own password prompt.
  const init = { method, credentials: "omit", headers: { Accept: "application/json", ...authorization(), ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    onUnauthorised();
    throw new ApiError(401, { summary: "sign in to see this" });
  }
  if (!response.ok) {
    let detail = null;
    try { detail = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return response;
}

export async function json(path, options) {
  const response = await request(path, options);
  if (response.status === 204) return null;
  return response.json();
}

// One page of a listing: its items, the URL of the next page (from Link) and the count header.
export async function page(path) {
  const response = await request(path);
  const items = await response.json();
  const link = response.headers.get("Link") || "";
  const next = /<([^>]+)>;\s*rel="next"/.exec(link);
  return {
    items,
    next: next ? new URL(next[1], location.href).pathname + new URL(next[1], location.href).search : null,
    count: response.headers.get("X-Paging-Count"),
    limit: response.headers.get("X-Paging-Limit"),
  };
}

export async function signIn(kind, user, secret) {
  if (kind === "client") {
    const form = new URLSearchParams({ grant_type: "client_credentials" });
    const response = await fetch("/x-tamstore/oauth2/token", {
      method: "POST",
      credentials: "omit",
      headers: { Authorization: "Basic " + btoa(`${user}:${secret}`), "Content-Type": "application/x-www-form-urlencoded" },
      body: form,
    });
    if (!response.ok) throw new ApiError(response.status, { summary: "the store did not accept these client credentials" });
    const token = (await response.json()).access_token;
    setCredentials({ user, token });
  } else {
    setCredentials({ user, secret });
    const response = await fetch("/service", { credentials: "omit", headers: { Accept: "application/json", ...authorization() } });
    if (response.status === 401) {
      setCredentials(null);
      throw new ApiError(401, { summary: "the store did not accept this user name and password" });
    }
  }
}
