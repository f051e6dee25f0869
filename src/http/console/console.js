// The tierlog console: a page of the public API and nothing else. The key lives in
// session storage (this tab only) and travels only in the Authorization header, so
// everything shown obeys the key's permissions and tenant. Text from events is only
// ever set as text, never parsed as HTML.
'use strict';

const KEY_STORAGE = 'tierlog.key';
const PAGE_SIZE = 50;
const PAGES = ['events', 'live', 'stats', 'verify', 'export', 'keys', 'retention'];
// The permission each page needs (events and stats: any view permission).
const PAGE_PERMISSION = { verify: 'logs.verify', export: 'logs.export', keys: 'keys.manage', retention: 'logs.configure' };

const state = { who: null, items: [], cursor: null, query: null };

const $ = (selector, root = document) => root.querySelector(selector);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API with the session's key; an error answer becomes an ApiError with the envelope's message. */
async function api(method, path, body, signal) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY_STORAGE) ?? ''}` };
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const envelope = await response.json();
      if (envelope.error?.message) message = envelope.error.message;
    } catch {
      // Not an envelope: keep the status line.
    }
    if (response.status === 401) signOut(message);
    throw new ApiError(response.status, message);
  }
  return response;
}

const apiJson = async (method, path, body) => (await api(method, path, body)).json();

/** An element with attributes and children (strings become text nodes). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setStatus(id, text, isError = false) {
  const node = $(`#${id}`);
  node.textContent = text;
  node.classList.toggle('error', isError);
}

const can = (permission) => state.who?.permissions.includes(permission) ?? false;
const canView = () => state.who?.permissions.some((p) => p.startsWith('logs.') && p.endsWith('.view')) ?? false;

function formatTime(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace('T', ' ').replace('Z', ' UTC');
}

/** The non-empty fields of a form as query parameters (times sent as UTC). */
function formQuery(form, skip = []) {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (value === '' || skip.includes(name)) continue;
    params.set(name, (name === 'from' || name === 'to') ? new Date(value).toISOString() : value);
  }
  return params;
}

/** Replaces a table's rows; with none, one row saying so. */
function fillRows(tbody, rows, empty = 'Nothing to show.') {
  if (rows.length > 0) {
    tbody.replaceChildren(...rows);
    return;
  }
  const columns = tbody.closest('table')?.querySelectorAll('thead th').length || 2;
  tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: String(columns) }, empty)));
}

// ---- Signing in and out -------------------------------------------------------------

async function signIn(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
  try {
    state.who = await apiJson('GET', '/audit/whoami');
  } catch (e) {
    sessionStorage.removeItem(KEY_STORAGE);
    state.who = null;
    throw e;
  }
  const tenant = state.who.tenant_id;
  $('#who').textContent = `${state.who.key_id}${tenant ? ` · tenant ${tenant}` : ' · all tenants'}`;
  for (const input of document.querySelectorAll('input[name="tenant_id"]')) {
    if (tenant) {
      input.value = tenant;
      input.readOnly = true;
    }
  }
  for (const link of document.querySelectorAll('#nav a')) {
    const page = link.dataset.page;
    const needed = PAGE_PERMISSION[page];
    link.hidden = needed ? !can(needed) : !canView();
  }
  $('#nav').hidden = false;
  $('#sign-out').hidden = false;
  renderPermissionChoices();
}

function signOut(reason) {
  stopLive();
  sessionStorage.removeItem(KEY_STORAGE);
  state.who = null;
  state.items = [];
  $('#nav').hidden = true;
  $('#sign-out').hidden = true;
  $('#who').textContent = '';
  $('#sign-in-error').textContent = reason ?? '';
  show('sign-in');
}

// ---- Pages ----------------------------------------------------------------------

function show(page) {
  for (const section of document.querySelectorAll('.page')) section.hidden = section.id !== `page-${page}`;
  for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('current', link.dataset.page === page);
  document.title = `tierlog · ${page.replace('-', ' ')}`;
}

async function route() {
  if (!state.who) {
    show('sign-in');
    return;
  }
  const requested = location.hash.replace(/^#\//, '') || 'events';
  const page = PAGES.includes(requested) ? requested : 'events';
  show(page);
  if (page !== 'live') stopLive();
  if (page === 'keys' && can('keys.manage')) await loadKeys();
  if (page === 'retention' && can('logs.configure')) await loadRetention();
}

// ---- Events -----------------------------------------------------------------------

async function searchEvents(older) {
  const started = performance.now();
  if (!older) {
    state.query = formQuery($('#filters'));
    state.items = [];
    state.cursor = null;
    $('#detail').hidden = true;
  }
  const params = new URLSearchParams(state.query);
  params.set('limit', String(PAGE_SIZE));
  if (older && state.cursor) params.set('cursor', state.cursor);
  setStatus('events-status', 'Searching…');
  try {
    const page = await apiJson('GET', `/audit/combined?${params}`);
    state.items.push(...page.items);
    state.cursor = page.next_cursor ?? null;
    renderEvents();
    const elapsed = Math.round(performance.now() - started);
    document.body.dataset.lastPageMs = String(elapsed);
    const partial = page.partial ? ' (the hot tier could not be read: database only)' : '';
    setStatus('events-status', `${state.items.length} event(s)${state.cursor ? ', more below' : ''}${partial} · ${elapsed} ms`);
  } catch (e) {
    setStatus('events-status', e.message, true);
  }
}

function renderEvents() {
  const rows = state.items.map((item, index) => el('tr', { tabindex: '0', 'data-index': String(index), class: item.status === 'failure' ? 'failure' : undefined,
    onclick: () => showDetail(index), onkeydown: (e) => { if (e.key === 'Enter') showDetail(index); } },
  el('td', {}, formatTime(item.timestamp)),
  el('td', {}, item.tenant_id ?? ''),
  el('td', {}, item.category ?? ''),
  el('td', {}, item.action ?? ''),
  el('td', {}, item.status ?? ''),
  el('td', {}, item.username ? `${item.user_id ?? ''} (${item.username})` : (item.user_id ?? '')),
  el('td', {}, item.ip_address ?? ''),
  el('td', {}, (item.tiers ?? []).join(' + '))));
  fillRows($('#events-table tbody'), rows, 'No events match.');
  $('#older').hidden = !state.cursor;
}

/** Where a row sits: its table, its chain (the high bits of seq) and its row in it. */
function chainPosition(item) {
  const rowsPerChain = 2 ** 48;
  const chain = Math.floor(item.seq / rowsPerChain);
  return `${item.table}, chain ${chain}, row ${item.seq % rowsPerChain} (seq ${item.seq})`;
}

function showDetail(index) {
  const item = state.items[index];
  if (!item) return;
  $('#detail-title').textContent = `${item.action ?? item.category} · ${item.id}`;
  const facts = [
    ['Time', formatTime(item.timestamp)], ['Received', formatTime(item.received_at)], ['Tenant', item.tenant_id],
    ['Category', item.category], ['Level', item.level], ['Status', item.status], ['User', item.user_id],
    ['Username', item.username], ['Address', item.ip_address], ['Resource', [item.resource, item.resource_id].filter(Boolean).join(' ')],
    ['Request id', item.request_id], ['Session id', item.session_id], ['Message', item.message],
    ['Held by', (item.tiers ?? []).join(', ')],
    ['Chain position', item.table ? chainPosition(item) : 'not persisted (hot tier and files only)'],
    ['Row hash', item.hash],
  ].filter(([, value]) => value !== undefined && value !== null && value !== '');
  $('#detail-facts').replaceChildren(...facts.flatMap(([name, value]) => [el('dt', {}, name), el('dd', {}, String(value))]));
  const changes = item.changes;
  $('#detail-changes').hidden = !changes;
  if (changes) {
    const before = changes.before ?? {};
    const after = changes.after ?? {};
    const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    const text = (object, field) => (field in object ? JSON.stringify(object[field]) : '—');
    fillRows($('#changes-table tbody'), fields.map((field) => el('tr', { class: text(before, field) !== text(after, field) ? 'changed' : undefined },
      el('td', {}, field), el('td', {}, text(before, field)), el('td', {}, text(after, field)))));
  }
  $('#detail-json').textContent = JSON.stringify(item, null, 2);
  $('#detail').hidden = false;
}

// ---- Stats --------------------------------------------------------------------------

function countRows(counts) {
  return Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([name, n]) => el('tr', {}, el('td', {}, name), el('td', { class: 'number' }, n.toLocaleString('en'))));
}

function groupRows(groups) {
  return groups.map((g) => el('tr', {}, el('td', {}, g.key), el('td', { class: 'number' }, g.failures), el('td', { class: 'number' }, g.distinct),
    el('td', {}, formatTime(g.first_seen)), el('td', {}, formatTime(g.last_seen))));
}

async function loadStats() {
  const params = formQuery($('#stats-form'), ['min_failures']);
  setStatus('stats-status', 'Counting…');
  try {
    const stats = await apiJson('GET', `/audit/stats?${params}`);
    const cards = [['Events', stats.total], ['Access records', stats.access_records], ['Failures', stats.by_status.failure ?? 0]]
      .filter(([, n]) => n !== undefined)
      .map(([name, n]) => el('div', { class: 'card' }, el('span', { class: 'card-number' }, Number(n).toLocaleString('en')), el('span', {}, name)));
    $('#stats-cards').replaceChildren(...cards);
    fillRows($('#by-category tbody'), countRows(stats.by_category));
    fillRows($('#by-status tbody'), countRows(stats.by_status));
    fillRows($('#by-action tbody'), countRows(Object.fromEntries(stats.by_action.slice(0, 15).map((a) => [a.action, a.count]))));
    setStatus('stats-status', `From ${formatTime(stats.from)} to ${formatTime(stats.to)}`);
  } catch (e) {
    setStatus('stats-status', e.message, true);
    return;
  }
  const failed = formQuery($('#stats-form'));
  for (const [groupBy, table] of [['ip', '#failed-by-ip'], ['user', '#failed-by-user']]) {
    failed.set('group_by', groupBy);
    try {
      const answer = await apiJson('GET', `/audit/failed-logins?${failed}`);
      fillRows($(`${table} tbody`), groupRows(answer.items), 'No failed logins at this threshold.');
    } catch (e) {
      fillRows($(`${table} tbody`), [el('tr', {}, el('td', { colspan: '5', class: 'error' }, e.message))]);
    }
  }
}

async function loadLockouts(form) {
  const user = form.elements.user_id.value.trim();
  const params = formQuery(form, ['user_id']);
  setStatus('lockouts-status', 'Looking…');
  try {
    const answer = await apiJson('GET', `/audit/users/${encodeURIComponent(user)}/lockouts?${params}`);
    const attempt = (a) => el('li', {}, [formatTime(a.timestamp), a.ip_address ?? '?', a.user_agent ?? '?', a.outcome ?? ''].join(' · '));
    const rows = answer.lockouts.map((l) => el('tr', {},
      el('td', {}, `${formatTime(l.lockout.timestamp)} ${l.lockout.action ?? ''}`),
      el('td', {}, l.attempts.length ? el('ul', {}, ...l.attempts.map(attempt)) : 'none in the window'),
      el('td', {}, l.reset ? `${l.reset.action} at ${formatTime(l.reset.timestamp)} (${Math.round(l.locked_seconds / 60)} min)` : 'not ended')));
    fillRows($('#lockouts tbody'), rows, 'No lockouts of this user.');
    setStatus('lockouts-status', `${answer.lockouts.length} lockout(s); failed attempts counted within ${answer.window_seconds} s before each`);
  } catch (e) {
    setStatus('lockouts-status', e.message, true);
  }
}

// ---- Verification ---------------------------------------------------------------------

async function verify() {
  const params = formQuery($('#verify-form'));
  setStatus('verify-status', 'Verifying…');
  try {
    const verdict = await apiJson('GET', `/audit/verify?${params}`);
    fillRows($('#verify-table tbody'), verdict.chains.map((c) => el('tr', { class: c.ok ? 'ok' : 'broken' },
      el('td', {}, c.tenant_id), el('td', {}, c.table), el('td', { class: 'number' }, c.shard),
      el('td', { class: 'number' }, c.rows_checked.toLocaleString('en')), el('td', { class: 'number' }, c.first_seq), el('td', { class: 'number' }, c.head_seq),
      el('td', { class: 'number' }, c.checkpoints),
      el('td', {}, c.ok ? 'intact' : `broken: ${JSON.stringify(c.first_break)}${c.break_count > 1 ? ` (+${c.break_count - 1} more)` : ''}`))));
    const when = new Date().toISOString().replace('T', ' ').slice(0, 19);
    setStatus('verify-status', `${verdict.ok ? 'Every chain holds' : 'A chain is broken'} · ${verdict.chains.length} chain(s) · checked ${when} UTC`, !verdict.ok);
    $('#verify-form button').textContent = 'Verify again';
  } catch (e) {
    setStatus('verify-status', e.message, true);
  }
}

// ---- Export -------------------------------------------------------------------------

async function exportEvents() {
  const params = formQuery($('#export-form'));
  const format = params.get('format') ?? 'csv';
  setStatus('export-status', 'Exporting…');
  try {
    const blob = await (await api('GET', `/audit/export?${params}`)).blob();
    const link = el('a', { href: URL.createObjectURL(blob), download: `tierlog-export.${format === 'csv' ? 'csv' : 'ndjson'}` });
    document.body.append(link);
    link.click();
    link.remove();
    setStatus('export-status', `Exported ${blob.size.toLocaleString('en')} bytes`);
  } catch (e) {
    setStatus('export-status', e.message, true);
  }
}

// ---- Keys -------------------------------------------------------------------------

function renderPermissionChoices() {
  const choices = (state.who?.permissions ?? []).map((p) => el('label', { class: 'choice' }, el('input', { type: 'checkbox', name: 'permission', value: p }), p));
  $('#key-permissions').replaceChildren(el('legend', {}, 'Permissions (those this key holds)'), ...choices);
}

function keyState(key) {
  if (key.revoked_at) return `revoked ${formatTime(key.revoked_at)}`;
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return `expired ${formatTime(key.expires_at)}`;
  return key.expires_at ? `active, expires ${formatTime(key.expires_at)}` : 'active';
}

async function loadKeys() {
  try {
    const list = await apiJson('GET', '/audit/keys');
    fillRows($('#keys-table tbody'), list.items.map((key) => el('tr', { 'data-key-id': key.id },
      el('td', {}, key.name), el('td', { class: 'mono' }, key.id), el('td', {}, key.tenant_id ?? 'all'),
      el('td', {}, key.permissions.join(', ')), el('td', {}, keyState(key)),
      el('td', {}, key.revoked_at ? '' : el('button', { type: 'button', class: 'revoke', onclick: () => revokeKey(key) }, 'Revoke')))));
  } catch (e) {
    setStatus('keys-status', e.message, true);
  }
}

async function createKey(form) {
  const data = new FormData(form);
  const body = { name: data.get('name'), permissions: data.getAll('permission') };
  if (data.get('tenant_id')) body.tenant_id = data.get('tenant_id');
  const days = Number(data.get('days'));
  if (days > 0) body.expires_at = new Date(Date.now() + days * 86400000).toISOString();
  try {
    const created = await apiJson('POST', '/audit/keys', body);
    $('#new-key-secret').textContent = created.secret;
    $('#new-key').hidden = false;
    setStatus('keys-status', `Created ${created.key.name} (${created.key.id})`);
    form.reset();
    if (state.who.tenant_id) form.elements.tenant_id.value = state.who.tenant_id;
    await loadKeys();
  } catch (e) {
    setStatus('keys-status', e.message, true);
  }
}

async function revokeKey(key) {
  try {
    await apiJson('DELETE', `/audit/keys/${encodeURIComponent(key.id)}`);
    setStatus('keys-status', `Revoked ${key.name} (${key.id})`);
    await loadKeys();
  } catch (e) {
    setStatus('keys-status', e.message, true);
  }
}

// ---- Retention ----------------------------------------------------------------------

const daysText = (days) => Object.entries(days ?? {}).map(([category, n]) => `${category} ${n}`).join(', ');

async function loadRetention() {
  try {
    const policies = await apiJson('GET', '/audit/retention');
    fillRows($('#retention-defaults tbody'), Object.entries(policies.defaults).map(([c, n]) => el('tr', {}, el('td', {}, c), el('td', { class: 'number' }, n))));
    fillRows($('#retention-plans tbody'), Object.entries(policies.plans).map(([name, days]) => el('tr', {}, el('td', {}, name), el('td', {}, daysText(days)))));
    fillRows($('#retention-tenants tbody'), Object.entries(policies.tenants).map(([tenant, p]) => el('tr', {},
      el('td', {}, tenant), el('td', {}, p.plan ?? ''), el('td', {}, daysText(p.days)),
      el('td', {}, p.legal_hold ? `held${p.hold_reason ? `: ${p.hold_reason}` : ''}` : 'no'))));
    setStatus('retention-status', '');
  } catch (e) {
    setStatus('retention-status', e.message, true);
  }
}

async function saveRetention(form) {
  const data = new FormData(form);
  const policy = { legal_hold: data.get('legal_hold') === 'on' };
  if (data.get('plan')) policy.plan = data.get('plan');
  if (data.get('hold_reason')) policy.hold_reason = data.get('hold_reason');
  try {
    await apiJson('PUT', '/audit/retention', { tenants: { [data.get('tenant')]: policy } });
    setStatus('retention-status', `Saved the policy of ${data.get('tenant')}`);
    await loadRetention();
  } catch (e) {
    setStatus('retention-status', e.message, true);
  }
}

// ---- Live tail -------------------------------------------------------------------------

const LIVE_ROWS = 500;
let live = null;

function stopLive() {
  if (live) {
    live.abort();
    live = null;
    setStatus('live-status', 'Stopped.');
  }
}

/** One event of the tail as a row, newest on top. */
function addLiveRow(item) {
  const tbody = $('#live-table tbody');
  tbody.querySelector('tr.empty')?.remove();
  tbody.prepend(el('tr', {}, el('td', {}, formatTime(item.timestamp)), el('td', {}, item.tenant_id ?? ''),
    el('td', {}, item.category ?? ''), el('td', {}, item.action ?? ''), el('td', {}, item.status ?? ''),
    el('td', {}, item.user_id ?? ''), el('td', {}, item.message ?? '')));
  while (tbody.rows.length > LIVE_ROWS) tbody.lastElementChild.remove();
}

/** Follows GET /audit/stream (read with fetch: EventSource cannot send the key). */
async function followLive(form) {
  stopLive();
  const controller = new AbortController();
  live = controller;
  fillRows($('#live-table tbody'), [], 'Waiting for events…');
  let received = 0;
  try {
    const response = await api('GET', `/audit/stream?${formQuery(form)}`, undefined, controller.signal);
    setStatus('live-status', 'Following: new events appear as they are accepted.');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let kind = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          const colon = line.indexOf(':');
          if (colon <= 0) continue;
          const value = line.slice(colon + 1).replace(/^ /, '');
          if (line.startsWith('event:')) kind = value;
          else if (line.startsWith('data:')) data += value;
        }
        if (kind === 'message' && data) {
          addLiveRow(JSON.parse(data));
          received += 1;
          setStatus('live-status', `Following: ${received} event(s) so far.`);
        } else if (kind === 'dropped') {
          setStatus('live-status', 'The server stopped the stream: this page read too slowly. Follow again to go on.', true);
        }
      }
    }
    if (live === controller) setStatus('live-status', 'The stream ended. Follow again to go on.');
  } catch (e) {
    if (e.name !== 'AbortError') setStatus('live-status', e.message, true);
  } finally {
    if (live === controller) live = null;
  }
}

// ---- Wiring ---------------------------------------------------------------------------

function onSubmit(selector, handler) {
  $(selector).addEventListener('submit', (event) => {
    event.preventDefault();
    handler(event.currentTarget);
  });
}

document.addEventListener('DOMContentLoaded', async () => {
  onSubmit('#sign-in-form', async (form) => {
    try {
      await signIn(form.elements.key.value.trim());
      form.reset();
      $('#sign-in-error').textContent = '';
      if (!location.hash || location.hash === '#/sign-in') location.hash = '#/events';
      await route();
      if (canView()) await searchEvents(false);
    } catch (e) {
      $('#sign-in-error').textContent = e.status === 401 ? 'That key is not valid (unknown, revoked or expired).' : e.message;
    }
  });
  onSubmit('#filters', () => searchEvents(false));
  onSubmit('#live-form', followLive);
  $('#live-stop').addEventListener('click', stopLive);
  onSubmit('#stats-form', loadStats);
  onSubmit('#lockouts-form', loadLockouts);
  onSubmit('#verify-form', verify);
  onSubmit('#export-form', exportEvents);
  onSubmit('#key-form', createKey);
  onSubmit('#retention-form', saveRetention);
  $('#older').addEventListener('click', () => searchEvents(true));
  $('#close-detail').addEventListener('click', () => { $('#detail').hidden = true; });
  $('#sign-out').addEventListener('click', () => signOut());
  window.addEventListener('hashchange', route);
  if (sessionStorage.getItem(KEY_STORAGE)) {
    try {
      await signIn(sessionStorage.getItem(KEY_STORAGE));
    } catch {
      // signIn cleared the key; the sign-in page shows.
    }
  }
  await route();
  if (state.who && canView() && (location.hash === '' || location.hash === '#/events')) await searchEvents(false);
});
