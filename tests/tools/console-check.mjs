// Drives the console in Debian's Chromium (headless, through playwright-core) the way
// a user would, against a running tierlog. Called by tests/api/console.rs with a JSON
// argument: { base, admin_key, tenant_key, tenant, other_tenant, bulk_tenant,
// screenshots, chromium }. Prints a JSON report on stdout; any failed expectation
// throws, which exits non-zero with the reason on stderr.
import { chromium } from 'playwright-core';

const input = JSON.parse(process.argv[2]);
const report = { screenshots: [], steps: [] };

function expect(condition, message) {
  if (!condition) throw new Error(`expectation failed: ${message}`);
}

async function shot(page, name) {
  const path = `${input.screenshots}/${String(report.screenshots.length + 1).padStart(2, '0')}-${name}.png`;
  await page.screenshot({ path, fullPage: true });
  report.screenshots.push(path);
}

/** The text of every cell of the events table, row by row. */
async function eventRows(page) {
  return page.$$eval('#events-table tbody tr:not(.empty)', (rows) => rows.map((row) => [...row.cells].map((cell) => cell.textContent)));
}

async function search(page, filters) {
  await page.fill('#filters input[name="q"]', '');
  for (const [name, value] of Object.entries(filters)) {
    const selector = `#filters [name="${name}"]`;
    if ((await page.$eval(selector, (node) => node.tagName)) === 'SELECT') await page.selectOption(selector, value);
    else if (!(await page.$eval(selector, (node) => node.readOnly))) await page.fill(selector, value);
  }
  const answered = page.waitForResponse((response) => response.url().includes('/audit/combined'));
  await page.click('#filters button[type="submit"]');
  await answered;
  await page.waitForFunction(() => /event\(s\)/.test(document.querySelector('#events-status').textContent));
}

async function signIn(page, key) {
  await page.fill('#key', key);
  await page.click('#sign-in-form button');
  await page.waitForSelector('#nav:not([hidden])');
}

const browser = await chromium.launch({
  executablePath: input.chromium,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const failures = [];
  page.on('pageerror', (error) => failures.push(error.message));
  page.on('console', (message) => { if (message.type() === 'error') failures.push(message.text()); });

  // Sign-in: a wrong key is refused with a message; the key never appears in a URL.
  await page.goto(`${input.base}/console`);
  await page.waitForSelector('#page-sign-in:not([hidden])');
  await shot(page, 'sign-in');
  await page.fill('#key', 'tlk_not_a_real_key_at_all_000000000000');
  await page.click('#sign-in-form button');
  await page.waitForFunction(() => document.querySelector('#sign-in-error').textContent.length > 0);
  expect((await page.textContent('#sign-in-error')).includes('not valid'), 'a wrong key is refused');
  failures.length = 0; // the refused sign-in logged its 401
  await signIn(page, input.admin_key);
  expect(!page.url().includes(input.admin_key), 'the key is not in the URL');
  expect(await page.evaluate(() => sessionStorage.getItem('tierlog.key')) === input.admin_key, 'the key is in session storage');
  expect(await page.evaluate(() => localStorage.length) === 0, 'nothing in local storage');
  await page.waitForFunction(() => /event\(s\)/.test(document.querySelector('#events-status').textContent));
  report.steps.push('sign-in');

  // The first page of a tenant with 100,000 events.
  await search(page, { tenant_id: input.bulk_tenant });
  report.first_page_ms = Number(await page.evaluate(() => document.body.dataset.lastPageMs));
  const bulk = await eventRows(page);
  expect(bulk.length === 50, `a page of 50 events (${bulk.length})`);
  // Paging: the next page follows on, newest first, nothing repeated.
  await page.click('#older');
  await page.waitForFunction(() => document.querySelectorAll('#events-table tbody tr:not(.empty)').length === 100);
  const paged = await eventRows(page);
  const times = paged.map((row) => row[0]);
  expect(times.every((t, i) => i === 0 || t <= times[i - 1]), 'newest first across pages');
  const ids = await page.evaluate(() => [...document.querySelectorAll('#events-table tbody tr:not(.empty)')].map((row) => row.dataset.index));
  expect(new Set(ids).size === 100, 'every row once');
  await shot(page, 'events-paged');
  report.steps.push('paging');

  // A filtered search: one tenant's failed logins, with full-text search.
  await search(page, { tenant_id: input.tenant, category: 'auth', status: 'failure', q: 'password' });
  const failed = await eventRows(page);
  expect(failed.length === 5, `five failed logins (${failed.length})`);
  expect(failed.every((row) => row[1] === input.tenant && row[2] === 'auth' && row[4] === 'failure'), 'only what the filters ask for');
  await shot(page, 'events-filtered');
  report.steps.push('filtered search');

  // An event's detail: tiers, chain position, and the before/after diff.
  await page.fill('#filters input[name="q"]', '');
  await page.selectOption('#filters [name="status"]', '');
  await search(page, { tenant_id: input.tenant, category: 'audit', action: 'user.role_changed' });
  await page.click('#events-table tbody tr:not(.empty)');
  await page.waitForSelector('#detail:not([hidden])');
  const facts = await page.textContent('#detail-facts');
  expect(/audit_logs, chain [0-9]+, row 1 \(seq [0-9]+\)/.test(facts), `the chain position is shown: ${facts}`);
  expect(facts.includes('redis') && facts.includes('postgres'), `the tiers are shown: ${facts}`);
  const changed = await page.$$eval('#changes-table tr.changed', (rows) => rows.map((row) => row.cells[0].textContent));
  expect(changed.length === 1 && changed[0] === 'role', `the changed field is marked: ${changed}`);
  await shot(page, 'event-detail');
  await page.click('#close-detail');
  await page.fill('#filters input[name="action"]', '');
  report.steps.push('event detail');

  // The live tail: an event accepted while the page follows appears on top.
  await page.click('#nav a[data-page="live"]');
  await page.fill('#live-form input[name="tenant_id"]', input.tenant);
  const following = page.waitForResponse((response) => response.url().includes('/audit/stream'));
  await page.click('#live-form button[type="submit"]');
  await following;
  await page.waitForFunction(() => /Following/.test(document.querySelector('#live-status').textContent));
  const liveId = crypto.randomUUID();
  const posted = await fetch(`${input.base}/audit/events`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${input.admin_key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ id: liveId, category: 'auth', action: 'auth.login_failed', status: 'failure', tenant_id: input.tenant,
      user_id: 'u-live', ip_address: '203.0.113.77', message: 'seen live' }),
  });
  expect(posted.ok, `the live event was accepted: ${posted.status}`);
  await page.waitForFunction(() => [...document.querySelectorAll('#live-table tbody tr:not(.empty)')].some((row) => row.textContent.includes('seen live')));
  const liveRows = await page.$$eval('#live-table tbody tr:not(.empty)', (rows) => rows.map((row) => [...row.cells].map((cell) => cell.textContent)));
  expect(liveRows[0][1] === input.tenant && liveRows[0][5] === 'u-live', `the live row: ${JSON.stringify(liveRows)}`);
  await shot(page, 'live');
  await page.click('#live-stop');
  await page.waitForFunction(() => /Stopped/.test(document.querySelector('#live-status').textContent));
  report.steps.push('live tail');

  // Stats and failed-login groups.
  await page.click('#nav a[data-page="stats"]');
  await page.fill('#stats-form input[name="tenant_id"]', input.tenant);
  await page.click('#stats-form button');
  await page.waitForFunction(() => document.querySelectorAll('#failed-by-ip tbody tr:not(.empty)').length > 0);
  const byIp = await page.$$eval('#failed-by-ip tbody tr:not(.empty)', (rows) => rows.map((row) => [...row.cells].map((cell) => cell.textContent)));
  expect(byIp[0][0] === '203.0.113.9' && byIp[0][1] === '5', `the failing address: ${JSON.stringify(byIp)}`);
  await shot(page, 'stats');
  report.steps.push('stats');

  // Lockout diagnostics of the user whose account was locked.
  await page.fill('#lockouts-form input[name="tenant_id"]', input.tenant);
  await page.fill('#lockouts-form input[name="user_id"]', 'u-4');
  await page.click('#lockouts-form button');
  await page.waitForFunction(() => document.querySelectorAll('#lockouts tbody tr:not(.empty)').length > 0);
  const lockouts = await page.$$eval('#lockouts tbody tr:not(.empty)', (rows) => rows.map((row) => [...row.cells].map((cell) => cell.textContent)));
  expect(lockouts.length === 1 && lockouts[0][0].includes('auth.account_locked') && lockouts[0][1].includes('203.0.113.9') && lockouts[0][2] === 'not ended',
    `the lockout: ${JSON.stringify(lockouts)}`);
  await shot(page, 'lockouts');
  report.steps.push('lockouts');

  // Verification, then again.
  await page.click('#nav a[data-page="verify"]');
  await page.fill('#verify-form input[name="tenant_id"]', input.tenant);
  await page.click('#verify-form button');
  await page.waitForFunction(() => document.querySelector('#verify-status').textContent.includes('chain(s)'));
  expect((await page.textContent('#verify-status')).startsWith('Every chain holds'), await page.textContent('#verify-status'));
  const verdicts = await page.$$eval('#verify-table tbody tr td:last-child', (cells) => cells.map((cell) => cell.textContent));
  expect(verdicts.length >= 2 && verdicts.every((v) => v === 'intact'), `every chain intact: ${verdicts}`);
  expect((await page.textContent('#verify-form button')) === 'Verify again', 'a button to verify again');
  await page.click('#verify-form button');
  await page.waitForFunction(() => document.querySelector('#verify-status').textContent.startsWith('Every chain holds'));
  await shot(page, 'verification');
  report.steps.push('verification');

  // A key created, shown once, then revoked.
  await page.click('#nav a[data-page="keys"]');
  await page.waitForSelector('#keys-table tbody tr');
  await page.fill('#key-form input[name="name"]', 'made-in-the-console');
  await page.fill('#key-form input[name="tenant_id"]', input.other_tenant);
  await page.check('#key-form input[value="logs.auth.view"]');
  await page.click('#key-form button');
  await page.waitForSelector('#new-key:not([hidden])');
  const secret = await page.textContent('#new-key-secret');
  expect(secret.startsWith('tlk_'), 'the new key is shown once');
  const row = page.locator('#keys-table tbody tr', { hasText: 'made-in-the-console' });
  expect((await row.textContent()).includes('active'), 'the new key is listed as active');
  await shot(page, 'key-created');
  await row.locator('button.revoke').click();
  await page.waitForFunction(() => [...document.querySelectorAll('#keys-table tbody tr')].some((r) => r.textContent.includes('made-in-the-console') && r.textContent.includes('revoked')));
  report.created_key = secret;
  report.steps.push('key created and revoked');

  // Retention policies.
  await page.click('#nav a[data-page="retention"]');
  await page.waitForSelector('#retention-defaults tbody tr');
  await shot(page, 'retention');

  // An export download.
  await page.click('#nav a[data-page="export"]');
  await page.fill('#export-form input[name="tenant_id"]', input.tenant);
  const download = page.waitForEvent('download');
  await page.click('#export-form button');
  const file = await (await download).path();
  const { readFile } = await import('node:fs/promises');
  const csv = await readFile(file, 'utf8');
  expect(csv.startsWith('table,seq,hash,id,'), 'the CSV export downloads');
  report.export_lines = csv.trim().split('\r\n').length;
  await shot(page, 'export');
  report.steps.push('export');

  // A tenant-bound key sees its tenant only, and no key management.
  await page.click('#sign-out');
  await page.waitForSelector('#page-sign-in:not([hidden])');
  expect(await page.evaluate(() => sessionStorage.getItem('tierlog.key')) === null, 'signing out forgets the key');
  await signIn(page, input.tenant_key);
  await page.goto(`${input.base}/console#/events`);
  await page.waitForFunction(() => /event\(s\)/.test(document.querySelector('#events-status').textContent));
  const tenantInput = await page.$eval('#filters input[name="tenant_id"]', (node) => [node.value, node.readOnly]);
  expect(tenantInput[0] === input.other_tenant && tenantInput[1], `the tenant is fixed: ${tenantInput}`);
  const own = await eventRows(page);
  expect(own.length > 0 && own.every((r) => r[1] === input.other_tenant), `only its own tenant: ${JSON.stringify(own)}`);
  expect(await page.isHidden('#nav a[data-page="keys"]'), 'no key management without keys.manage');
  // Asking the API for another tenant directly is refused, and the page says so.
  const refused = await page.evaluate(async (tenant) => {
    const response = await fetch(`/audit/combined?tenant_id=${tenant}`, { headers: { Authorization: `Bearer ${sessionStorage.getItem('tierlog.key')}` } });
    return response.status;
  }, input.tenant);
  expect(refused === 403, `another tenant's events are refused (${refused})`);
  await shot(page, 'tenant-key');
  report.steps.push('tenant isolation');
  const unexpected = failures.filter((message) => !message.includes('403'));
  expect(unexpected.length === 0, `no script errors: ${unexpected}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
