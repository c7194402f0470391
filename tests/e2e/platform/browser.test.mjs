// A real browser (Debian's headless Chromium) opens a sandbox's public HTTPS
// URL and renders the page the sandbox serves; the screenshot is kept.
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { X509Certificate, createHash } from 'node:crypto'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import tls from 'node:tls'
import { promisify } from 'node:util'
import { create, killAll, fetchUntil } from './helpers.mjs'

const run = promisify(execFile)
const CHROMIUM = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium'
const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '..', '.deps', 'artifacts')

/**
 * The base64 SHA-256 of the public key the proxy presents for `host`: the
 * browser is told to trust exactly that key (it does not read
 * NODE_EXTRA_CA_CERTS, and a fresh profile has no way to add our CA).
 */
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

describe('a browser', { skip: !existsSync(CHROMIUM) && `no ${CHROMIUM}` }, () => {
  after(killAll)

  it('renders a page served inside a sandbox at its public URL', async () => {
    const sandbox = await create()
    const marker = `sandbar-browser-${sandbox.sandboxId}`
    await sandbox.files.write('/home/user/site/index.html',
      `<!doctype html><html><head><title>${marker}</title></head>` +
      `<body style="background:#0b5;color:#fff;font:48px sans-serif"><h1 id="m">${marker}</h1></body></html>`)
    await sandbox.commands.run('python3 -m http.server 3000', { background: true, cwd: '/home/user/site' })
    const url = `https://${sandbox.getHost(3000)}/`
    const ready = await fetchUntil(url, (r) => r.status === 200)
    assert.equal(ready.status, 200, `the page is served: ${ready.body}`)

    const { hostname, port } = new URL(url)
    const pin = await spkiHash(hostname, Number(port || 443))
    const profile = mkdtempSync(join(tmpdir(), 'sandbar-chromium-'))
    mkdirSync(ARTIFACTS, { recursive: true })
    const shot = join(ARTIFACTS, 'browser-sandbox-page.png')
    rmSync(shot, { force: true })
    const flags = [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--user-data-dir=${profile}`, `--ignore-certificate-errors-spki-list=${pin}`,
      '--window-size=800,600',
    ]
    try {
      const dom = await run(CHROMIUM, [...flags, '--dump-dom', url], { timeout: 60_000 })
      assert.match(dom.stdout, new RegExp(`<h1 id="m">${marker}</h1>`), 'the browser rendered the sandbox page')
      await run(CHROMIUM, [...flags, `--screenshot=${shot}`, url], { timeout: 60_000 })
    } finally {
      rmSync(profile, { recursive: true, force: true })
    }
    const png = readFileSync(shot)
    assert.equal(png.subarray(1, 4).toString(), 'PNG', 'a PNG screenshot was written')
    assert.ok(statSync(shot).size > 1000, 'the screenshot is not empty')
  })
})
