// Access-token checks and envd's plain HTTP endpoints.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { AuthenticationError } from 'e2b'
import { SANDBOX_ENVS, envdBaseUrl, killSandbox, newSandbox, rejection, withAccessToken, explain } from './helpers.mjs'

describe('auth and plain HTTP', () => {
  let sandbox
  let intruder
  before(async () => {
    sandbox = await newSandbox()
    intruder = withAccessToken(sandbox, 'not-the-token')
  })
  after(async () => {
    await killSandbox(sandbox)
  })

  it('rejects RPCs with a wrong access token as AuthenticationError', async () => {
    for (const [what, call] of [
      ['commands.run', () => intruder.commands.run('echo should-not-run')],
      ['commands.list', () => intruder.commands.list()],
      ['files.list', () => intruder.files.list('/')],
      ['files.read', () => intruder.files.read('/etc/hostname')],
      ['files.write', () => intruder.files.write('/tmp/should-not-exist', 'x')],
    ]) {
      const err = await rejection(call)
      assert.ok(err instanceof AuthenticationError, `${what}: expected AuthenticationError, got ${explain(err)}`)
    }
  })

  it('answers /health without a token', async () => {
    const res = await fetch(new URL('/health', envdBaseUrl(sandbox)))
    assert.equal(res.status, 204)
  })

  it('serves /envs with the token and 401 without', async () => {
    const url = new URL('/envs', envdBaseUrl(sandbox))
    const ok = await fetch(url, { headers: { 'X-Access-Token': sandbox.envdAccessToken } })
    assert.equal(ok.status, 200)
    const envs = await ok.json()
    for (const [k, v] of Object.entries(SANDBOX_ENVS)) assert.equal(envs[k], v)
    const denied = await fetch(url)
    assert.equal(denied.status, 401)
    const wrong = await fetch(url, { headers: { 'X-Access-Token': 'nope' } })
    assert.equal(wrong.status, 401)
  })

  it('answers CORS preflights for browser clients', async () => {
    const res = await fetch(new URL('/process.Process/Start', envdBaseUrl(sandbox)), {
      method: 'OPTIONS',
      headers: {
        Origin: 'https://example.test',
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'content-type,x-access-token,connect-protocol-version',
      },
    })
    assert.ok(res.status >= 200 && res.status < 300, `preflight status ${res.status}`)
    const origin = res.headers.get('access-control-allow-origin')
    assert.ok(origin === '*' || origin === 'https://example.test', `allow-origin: ${origin}`)
  })
})
