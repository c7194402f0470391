// The web dashboard in a real browser: Debian's headless Chromium driven by
// Playwright, at https://{domain}/ through the edge proxy, signed in with
// the key `sandbar env` printed. Sandboxes are made with the official SDK
// and then looked at, typed into and paused through the page. Screenshots
// are kept in tests/e2e/.deps/artifacts.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate, createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import tls from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { Sandbox, Template } from 'e2b'
import { chromium } from 'playwright-core'
import { create, killAll, fetchUntil, RUN_ID, TEMPLATE } from './helpers.mjs'

const CHROMIUM = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium'
const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '..', '.deps', 'artifacts')
const KEY = process.env.E2B_API_KEY
const DOMAIN = process.env.E2B_DOMAIN
const SESSION_COOKIE = '__Host-sandbar_session'

/** The base64 SHA-256 of the key the proxy presents (see browser.test.mjs). */
async function spkiHash(host, port) {
  const raw = await new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: host, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerCertificate(false)
      socket.end()
      resolve(cert.raw)
    })
    socket.on('error', reject)
  })
  const spki = new X509Certificate(raw).publicKey.export({ type: 'spki', format: 'der' })
  return createHash('sha256').update(spki).digest('base64')
}

/** Waits until `f()` is truthy (polls; the page updates on its own timers). */
async function until(what, f, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    last = await f()
    if (last) return last
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await sleep(250)
  }
}

describe('the dashboard', { skip: (!existsSync(CHROMIUM) && `no ${CHROMIUM}`) || (!DOMAIN && 'no E2B_DOMAIN') }, () => {
  let browser, context, page
  const base = `https://${DOMAIN}/`
  const cspViolations = []
  const pageErrors = []
  let sandbox // made through the SDK, looked at through the page

  const shot = (name, p = page) => p.screenshot({ path: join(ARTIFACTS, `dashboard-${name}.png`), fullPage: true })

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true })
    const { hostname, port } = new URL(base)
    const pin = await spkiHash(hostname, Number(port || 443))
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', `--ignore-certificate-errors-spki-list=${pin}`],
    })
    context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true })
    page = await context.newPage()
    const watch = (p) => {
      p.on('console', (m) => {
        if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text())
      })
      p.on('pageerror', (e) => pageErrors.push(e.message))
    }
    watch(page)
    context.on('page', watch)
  })

  after(async () => {
    await browser?.close()
    await killAll()
  })

  it('refuses a wrong key and sets no cookie', { timeout: 60_000 }, async () => {
    await page.goto(base)
    await page.waitForSelector('#sign-in')
    await shot('sign-in')
    await page.fill('#api-key', `e2b_${'0'.repeat(40)}`)
    const answer = page.waitForResponse((r) => r.url().endsWith('/session') && r.request().method() === 'POST')
    await page.click('#sign-in button[type=submit]')
    assert.equal((await answer).status(), 401)
    await until('the refusal on the page', async () => (await page.textContent('#sign-in-error'))?.trim())
    assert.match(await page.textContent('#sign-in-error'), /invalid API key/i)
    assert.deepEqual((await context.cookies()).filter((c) => c.name === SESSION_COOKIE), [])
    await shot('wrong-key')
  })

  it('signs in with the key `sandbar env` printed: an HttpOnly cookie, no key in the page', { timeout: 60_000 }, async () => {
    assert.ok(KEY, 'E2B_API_KEY is set (sandbar env)')
    await page.fill('#api-key', KEY)
    await page.click('#sign-in button[type=submit]')
    await page.waitForSelector('#sandbox-rows')
    const [cookie, ...more] = (await context.cookies()).filter((c) => c.name === SESSION_COOKIE)
    assert.ok(cookie, 'a session cookie was set')
    assert.equal(more.length, 0)
    assert.equal(cookie.httpOnly, true, 'HttpOnly')
    assert.equal(cookie.secure, true, 'Secure')
    assert.equal(cookie.sameSite, 'Strict', 'SameSite=Strict')
    assert.ok(!cookie.value.includes(KEY), 'the cookie is not the key')

    // The team page reads GET /teams, which the API answers with the key:
    // the relay scrubs it.
    await page.goto(`${base}#/team`)
    await page.waitForSelector('tr[data-team]')
    await shot('team')
    const seen = await page.evaluate(() => ({
      local: JSON.stringify({ ...localStorage }),
      session: JSON.stringify({ ...sessionStorage }),
      cookie: document.cookie,
      html: document.documentElement.outerHTML,
    }))
    for (const [where, text] of Object.entries(seen)) {
      assert.ok(!text.includes(KEY), `the key is not in ${where}`)
    }
    assert.ok(!seen.cookie.includes(SESSION_COOKIE), 'the session cookie is invisible to scripts')
    assert.match(await page.textContent('#keys-cli'), /sandbar keys create/)
    const teams = await page.evaluate(async () => (await fetch('api/teams')).text())
    assert.ok(!teams.includes(KEY) && teams.includes('teamID'), teams)
  })

  it('creates a key, shows it once, and revokes it: then the API refuses it', { timeout: 60_000 }, async () => {
    const api = process.env.E2B_API_URL
    const status = async (key) => (await fetch(`${api}/v2/sandboxes`, { headers: { 'X-API-Key': key } })).status
    const name = `dash-key-${RUN_ID}`
    await page.goto(`${base}#/team`)
    await page.waitForSelector('#key-rows tr[data-key]')
    await page.fill('#key-name', name)
    await page.click('#key-create button[type=submit]')
    await page.waitForSelector('#new-key-value')
    const key = (await page.textContent('#new-key-value')).trim()
    assert.match(key, /^e2b_[0-9a-f]{40}$/)
    assert.ok(await page.isVisible('#new-key-copy'), 'a copy button beside it')
    const row = `#key-rows tr:has-text("${name}")`
    await page.waitForSelector(row)
    const id = await page.getAttribute(row, 'data-key')
    assert.ok(!(await page.textContent('#key-rows')).includes(key.slice(4)), 'the list shows a mask, not the key')
    await shot('key-created')

    // It works against the API, and its listing shows only a mask.
    assert.equal(await status(key), 200)
    const listed = await (await fetch(`${api}/api-keys`, { headers: { 'X-API-Key': KEY } })).text()
    assert.ok(listed.includes(id) && !listed.includes(key.slice(4)), listed)

    // Shown once: neither kept by the page nor shown again.
    const kept = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }))
    assert.ok(!kept.includes(key), 'not in the page’s storage')
    await page.click('#new-key-done')
    assert.ok(!(await page.content()).includes(key), 'gone from the page once closed')
    await page.reload()
    await page.waitForSelector(row)
    assert.ok(!(await page.content()).includes(key.slice(4)), 'not shown again')

    // Revoked in the page, after a confirm: refused from then on.
    let asked = ''
    page.once('dialog', (d) => {
      asked = d.message()
      void d.accept()
    })
    await page.click(`tr[data-key="${id}"] button.revoke`)
    await until('the revoked key to leave the list', async () => !(await page.$(`tr[data-key="${id}"]`)))
    assert.match(asked, /Revoke the key/)
    assert.equal(await status(key), 401)
    assert.equal(await status(KEY), 200, 'the session’s key still works')
    assert.ok(await page.$('#key-rows tr[data-key] .chip'), 'the session’s own key is marked')
  })

  it('lists a sandbox created through the SDK, live, with filters', { timeout: 90_000 }, async () => {
    const first = await create({ metadata: { dash: 'list' } })
    await page.goto(`${base}#/sandboxes?metadata=${encodeURIComponent(`run=${RUN_ID}`)}`)
    await page.waitForSelector(`tr[data-sandbox="${first.sandboxId}"]`)
    // Made while the page is open: it appears without a reload.
    sandbox = await create({ metadata: { dash: 'main' } })
    await page.waitForSelector(`tr[data-sandbox="${sandbox.sandboxId}"]`, { timeout: 20_000 })
    assert.match(await page.textContent(`tr[data-sandbox="${sandbox.sandboxId}"]`), /running/)
    await shot('list')

    // Filters: metadata, state, template.
    await page.fill('#filter-metadata', `run=${RUN_ID}, dash=list`)
    await page.click('#filters button[type=submit]')
    await page.waitForSelector(`tr[data-sandbox="${first.sandboxId}"]`)
    await until('the other sandbox to be filtered out', async () => !(await page.$(`tr[data-sandbox="${sandbox.sandboxId}"]`)))
    await page.selectOption('#filter-state', 'paused')
    await until('no running sandbox under "paused"', async () => !(await page.$(`tr[data-sandbox="${first.sandboxId}"]`)))
    await page.selectOption('#filter-state', '')
    await page.fill('#filter-template', 'no-such-template')
    await page.click('#filters button[type=submit]')
    await until('no sandbox of another template', async () => !(await page.$(`tr[data-sandbox="${first.sandboxId}"]`)))
    await page.fill('#filter-template', TEMPLATE)
    await page.click('#filters button[type=submit]')
    await page.waitForSelector(`tr[data-sandbox="${first.sandboxId}"]`)

    // Killed through the SDK: it leaves the list.
    await Sandbox.kill(first.sandboxId)
    await until('the killed sandbox to leave the list', async () => !(await page.$(`tr[data-sandbox="${first.sandboxId}"]`)), 20_000)
  })

  it('opens its terminal: `echo hello` comes back', { timeout: 90_000 }, async () => {
    await page.goto(`${base}#/sandboxes?metadata=${encodeURIComponent(`run=${RUN_ID}`)}`)
    await page.click(`tr[data-sandbox="${sandbox.sandboxId}"] a`)
    await page.waitForSelector('#sandbox-state [data-state="running"]')
    await page.click('#tab-terminal')
    await page.waitForSelector('#terminal .xterm-rows')
    const rows = () => page.$$eval('#terminal .xterm-rows > div', (ds) => ds.map((d) => d.textContent.replace(/\u00a0/g, ' ')))
    await until('a shell prompt', async () => (await rows()).some((r) => /\$\s*$/.test(r)))
    await page.click('#terminal')
    await page.keyboard.type('echo hello')
    await page.keyboard.press('Enter')
    await until('"hello" on a line of its own', async () => (await rows()).some((r) => r.trim() === 'hello'))
    // The command line shows it was typed, not injected.
    assert.ok((await rows()).some((r) => /echo hello\s*$/.test(r)))
    await page.keyboard.type('echo $((6*7)) $(whoami)')
    await page.keyboard.press('Enter')
    await until('the shell to compute', async () => (await rows()).some((r) => r.trim() === '42 user'))
    await shot('terminal')
  })

  it('opens a port’s public URL, and a private sandbox’s with its token', { timeout: 120_000 }, async () => {
    const marker = `sandbar-dashboard-${sandbox.sandboxId}`
    await sandbox.files.write('/home/user/site/index.html', `<!doctype html><title>${marker}</title><h1 id="m">${marker}</h1>`)
    await sandbox.commands.run('python3 -m http.server 3000', { background: true, cwd: '/home/user/site' })
    const ready = await fetchUntil(`https://${sandbox.getHost(3000)}/`, (r) => r.status === 200)
    assert.equal(ready.status, 200)

    await page.click('#tab-ports')
    await until('port 3000 in the list', async () => {
      if (await page.$('tr[data-port="3000"]')) return true
      await page.click('#ports-refresh')
      await sleep(500)
      return false
    })
    assert.ok(await page.$('tr[data-port="49983"]'), 'envd is listed too')
    await shot('ports')
    const [tab] = await Promise.all([context.waitForEvent('page'), page.click('tr[data-port="3000"] a.open-port')])
    await tab.waitForSelector('#m')
    assert.equal(await tab.textContent('#m'), marker)
    await shot('port-page', tab)

    // A sandbox's page is the dashboard's site but not its origin: its
    // requests to the dashboard carry the cookie (SameSite is per site) and
    // must still be refused.
    const forged = await tab.evaluate(async ({ base, id }) => {
      const out = {}
      try {
        await fetch(`${base}api/sandboxes/${id}/pause`, { method: 'POST', mode: 'no-cors', credentials: 'include', body: '{}' })
        out.sent = true
      } catch (e) {
        out.sent = String(e)
      }
      try {
        const r = await fetch(`${base}api/v2/sandboxes`, { credentials: 'include' })
        out.read = r.status
      } catch (e) {
        out.read = 'blocked'
      }
      return out
    }, { base, id: sandbox.sandboxId })
    assert.equal(forged.read, 'blocked', 'no cross-origin read of the API')
    await sleep(500)
    assert.equal((await Sandbox.getInfo(sandbox.sandboxId)).state, 'running', `a forged pause did nothing (${JSON.stringify(forged)})`)
    await tab.close()

    // A private sandbox: the link carries its traffic token once.
    const priv = await create({ network: { allowPublicTraffic: false }, metadata: { dash: 'private' } })
    await priv.files.write('/home/user/site/index.html', `<!doctype html><h1 id="m">private-${priv.sandboxId}</h1>`)
    await priv.commands.run('python3 -m http.server 3001', { background: true, cwd: '/home/user/site' })
    const plain = await fetchUntil(`https://${priv.getHost(3001)}/`, (r) => r.status === 403)
    assert.equal(plain.status, 403, 'without its token the private port is refused')
    await page.goto(`${base}#/sandboxes/${priv.sandboxId}?tab=ports`)
    await until('port 3001 in the list', async () => {
      if (await page.$('tr[data-port="3001"]')) return true
      if (await page.$('#ports-refresh')) await page.click('#ports-refresh')
      await sleep(500)
      return false
    })
    const [ptab] = await Promise.all([context.waitForEvent('page'), page.click('tr[data-port="3001"] a.open-port')])
    await ptab.waitForSelector('#m')
    assert.equal(await ptab.textContent('#m'), `private-${priv.sandboxId}`)
    assert.ok(!new URL(ptab.url()).search.includes('token'), 'the token left the address bar')
    await shot('private-port-page', ptab)
    await ptab.close()
    await Sandbox.kill(priv.sandboxId)
  })

  it('draws CPU, memory and disk charts from the metrics samples', { timeout: 90_000 }, async () => {
    await page.goto(`${base}#/sandboxes/${sandbox.sandboxId}`)
    await page.waitForSelector('#svg-cpu')
    // Samples come every 5 s: wait for a line of at least three.
    await until('three samples on the charts', async () => {
      const n = await page.getAttribute('#svg-cpu', 'data-points').catch(() => '0')
      return Number(n) >= 3
    }, 60_000)
    for (const id of ['#svg-cpu', '#svg-memory', '#svg-disk']) {
      const d = await page.getAttribute(`${id} path.line`, 'd')
      assert.ok(d && (d.match(/L/g) ?? []).length >= 2, `${id} draws a line: ${d}`)
    }
    assert.match(await page.textContent('#chart-memory .legend'), /used: \d/)
    await shot('charts')
  })

  it('lists, downloads and uploads files', { timeout: 60_000 }, async () => {
    await sandbox.files.write('/home/user/dash-download.txt', `from the sandbox ${RUN_ID}\n`)
    await page.click('#tab-files')
    await page.waitForSelector('tr[data-file="dash-download.txt"]')
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.click('tr[data-file="dash-download.txt"] button'),
    ])
    assert.equal(readFileSync(await download.path(), 'utf8'), `from the sandbox ${RUN_ID}\n`)
    await page.setInputFiles('#files-upload', { name: 'dash-upload.txt', mimeType: 'text/plain', buffer: Buffer.from(`from the browser ${RUN_ID}`) })
    await page.waitForSelector('tr[data-file="dash-upload.txt"]')
    assert.equal(await sandbox.files.read('/home/user/dash-upload.txt'), `from the browser ${RUN_ID}`)
    await shot('files')
  })

  it('shows in its Logs tab a name the sandbox resolved', { timeout: 60_000 }, async () => {
    // The suite's test zone answers allowed.e2e.test with the suite's own
    // web host; the DNS forwarder logs the question.
    await sandbox.commands.run('getent ahostsv4 allowed.e2e.test || true')
    await page.goto(`${base}#/sandboxes/${sandbox.sandboxId}?tab=logs`)
    await page.waitForSelector('#logs')
    const line = await until('the name in the logs', async () => {
      const text = (await page.textContent('#logs')) ?? ''
      const found = text.split('\n').find((l) => /dns allowed\.e2e\.test A: /.test(l))
      if (!found) await page.click('#logs-refresh')
      return found
    })
    // Its verdict and the address the test zone gave.
    assert.match(line, /dns allowed\.e2e\.test A: allowed -> \d+\.\d+\.\d+\.\d+/)
    await shot('logs')
  })

  it('pauses, resumes, snapshots and kills it', { timeout: 120_000 }, async () => {
    await page.click('#tab-overview')
    await page.click('#btn-pause')
    await page.waitForSelector('#sandbox-state [data-state="paused"]', { timeout: 30_000 })
    assert.equal((await Sandbox.getInfo(sandbox.sandboxId)).state, 'paused')
    await page.click('#tab-terminal')
    assert.match(await page.textContent('#panel-terminal'), /paused: resume it/)
    await shot('paused')

    await page.click('#btn-resume')
    await page.waitForSelector('#sandbox-state [data-state="running"]', { timeout: 30_000 })
    assert.equal((await Sandbox.getInfo(sandbox.sandboxId)).state, 'running')
    assert.equal((await sandbox.commands.run('echo back')).stdout.trim(), 'back', 'it runs again')
    // A shell again after the resume.
    await page.waitForSelector('#terminal .xterm-rows', { timeout: 30_000 })

    page.once('dialog', (d) => d.accept(`dash-${RUN_ID}`))
    await page.click('#btn-snapshot')
    await until('the snapshot toast', async () => (await page.textContent('#toasts').catch(() => ''))?.includes('Snapshot'))
    await page.goto(`${base}#/snapshots`)
    await page.waitForSelector(`#snapshot-rows tr:has-text("dash-${RUN_ID}")`)
    await shot('snapshots')
    const row = await page.$(`#snapshot-rows tr:has-text("dash-${RUN_ID}")`)
    const snapshotId = await row.getAttribute('data-snapshot')
    page.once('dialog', (d) => d.accept())
    await page.click(`tr[data-snapshot="${snapshotId}"] button`)
    await until('the deleted snapshot to leave the list', async () => !(await page.$(`tr[data-snapshot="${snapshotId}"]`)))

    await page.goto(`${base}#/sandboxes/${sandbox.sandboxId}`)
    await page.waitForSelector('#sandbox-state [data-state="running"]')
    // What the page's kill did, said if the list does not come back.
    const seen = []
    const onResponse = (r) => r.request().method() === 'DELETE' && seen.push(`${r.status()} ${r.url()}`)
    const onFailed = (r) => seen.push(`failed ${r.method()} ${r.url()}: ${r.failure()?.errorText}`)
    page.on('response', onResponse)
    page.on('requestfailed', onFailed)
    page.once('dialog', (d) => d.accept())
    await page.click('#btn-kill')
    try {
      await page.waitForSelector('#sandbox-rows')
    } catch (e) {
      await shot('kill-failed')
      const toasts = await page.textContent('#toasts').catch(() => '(no toasts)')
      throw new Error(`${e.message}\nat ${page.url()}; toasts: ${toasts}; requests: ${JSON.stringify(seen)}`)
    } finally {
      page.off('response', onResponse)
      page.off('requestfailed', onFailed)
    }
    await until('the SDK to see it gone', async () => {
      try {
        await Sandbox.getInfo(sandbox.sandboxId)
        return false
      } catch {
        return true
      }
    })
  })

  it("lists the team's templates with their builds and logs, and signs out", { timeout: 60_000 }, async () => {
    const name = `dash-${RUN_ID}`.toLowerCase()
    const built = await Template.build(Template().fromTemplate('base').runCmd(`echo dashboard-build-${RUN_ID}`), name)
    await page.goto(`${base}#/templates`)
    const row = `tr[data-template="${built.templateId}"]`
    await page.waitForSelector(row)
    assert.match(await page.textContent(row), new RegExp(`${name}.*ready`))
    await page.click(`${row} button.link`)
    await page.waitForSelector(`#template-builds tr[data-build="${built.buildId}"]`)
    await page.waitForFunction((want) => document.querySelector('#build-log')?.textContent?.includes(want), `dashboard-build-${RUN_ID}`)
    assert.match(await page.textContent('#build-reason'), /Status: ready/)
    await shot('templates')
    await fetch(`${process.env.E2B_API_URL}/templates/${built.templateId}`, { method: 'DELETE', headers: { 'X-API-Key': process.env.E2B_API_KEY } })
    await page.click('#sign-out')
    await page.waitForSelector('#sign-in')
    assert.deepEqual((await context.cookies()).filter((c) => c.name === SESSION_COOKIE), [], 'the cookie is gone')
    const status = await page.evaluate(async () => (await fetch('api/v2/sandboxes')).status)
    assert.equal(status, 401, 'the relay answers 401 once signed out')

    assert.deepEqual(cspViolations, [], 'the page runs within its content security policy')
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page')
  })
})
