// The Connect wire format itself, spoken with plain fetch: what the SDKs rely
// on beneath their clients (envelopes, end-of-stream frame, keepalives, error
// codes). Complements the SDK-level tests.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { envdBaseUrl, killSandbox, newSandbox } from './helpers.mjs'

/** One Connect envelope: flags byte, big-endian length, JSON payload. */
function envelope(message, flags = 0) {
  const payload = Buffer.from(JSON.stringify(message))
  const head = Buffer.alloc(5)
  head.writeUInt8(flags, 0)
  head.writeUInt32BE(payload.length, 1)
  return Buffer.concat([head, payload])
}

/** Reads a server stream's envelopes as they arrive, with arrival times. */
async function* frames(res) {
  let buf = Buffer.alloc(0)
  for await (const chunk of res.body) {
    buf = Buffer.concat([buf, Buffer.from(chunk)])
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1)
      if (buf.length < 5 + len) break
      yield { flags: buf[0], message: JSON.parse(buf.subarray(5, 5 + len).toString() || '{}'), at: Date.now() }
      buf = buf.subarray(5 + len)
    }
  }
  assert.equal(buf.length, 0, 'stream ended inside an envelope')
}

describe('Connect protocol', () => {
  let sandbox
  let base
  let token
  before(async () => {
    sandbox = await newSandbox()
    base = envdBaseUrl(sandbox)
    token = sandbox.envdAccessToken
  })
  after(async () => {
    await killSandbox(sandbox)
  })

  const stream = (method, message, headers = {}) =>
    fetch(new URL(`/process.Process/${method}`, base), {
      method: 'POST',
      headers: {
        'Content-Type': 'application/connect+json',
        'Connect-Protocol-Version': '1',
        'X-Access-Token': token,
        ...headers,
      },
      body: envelope(message),
    })

  it('streams start, data and end events, then an end-of-stream frame', async () => {
    const res = await stream('Start', { process: { cmd: '/bin/bash', args: ['-l', '-c', 'echo hi; echo oops >&2; exit 4'] } })
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^application\/connect\+json/)
    const all = []
    for await (const f of frames(res)) all.push(f)
    const events = all.filter((f) => f.flags === 0).map((f) => f.message.event)
    assert.ok(events[0].start?.pid > 0, `first event must be start: ${JSON.stringify(events[0])}`)
    const out = events.filter((e) => e.data?.stdout).map((e) => Buffer.from(e.data.stdout, 'base64').toString()).join('')
    const err = events.filter((e) => e.data?.stderr).map((e) => Buffer.from(e.data.stderr, 'base64').toString()).join('')
    assert.equal(out, 'hi\n')
    assert.equal(err, 'oops\n')
    const end = events.at(-1).end
    assert.ok(end, `last event must be end: ${JSON.stringify(events.at(-1))}`)
    assert.equal(end.exitCode, 4)
    assert.equal(end.exited, true)
    assert.equal(end.status, 'exit status 4')
    const last = all.at(-1)
    assert.equal(last.flags, 0x02, 'the stream must close with an end-of-stream frame')
    assert.equal(last.message.error, undefined)
  })

  it('sends keepalive events at the requested interval while a process is silent', async () => {
    const res = await stream(
      'Start',
      { process: { cmd: '/bin/bash', args: ['-l', '-c', 'sleep 2.5; echo late'] } },
      { 'Keepalive-Ping-Interval': '1' },
    )
    assert.equal(res.status, 200)
    const events = []
    for await (const f of frames(res)) if (f.flags === 0) events.push(f.message.event)
    const keepalives = events.filter((e) => e.keepalive !== undefined).length
    assert.ok(keepalives >= 1, `no keepalive in ${events.length} events over 2.5 s with a 1 s interval`)
    assert.ok(events.at(-1).end, 'the stream still ends with the end event')
  })

  it('flushes each event at once', async () => {
    const res = await stream('Start', { process: { cmd: '/bin/bash', args: ['-c', 'echo early; sleep 1.5; echo late'] } })
    const started = Date.now()
    let first
    for await (const f of frames(res)) {
      if (f.message.event?.data?.stdout) {
        first = f
        break
      }
    }
    await res.body?.cancel().catch(() => {})
    assert.ok(first, 'no stdout event at all')
    assert.equal(Buffer.from(first.message.event.data.stdout, 'base64').toString(), 'early\n')
    assert.ok(first.at - started < 1000, `first output arrived after ${first.at - started} ms`)
  })

  it('reports stream errors with a Connect error code', async () => {
    const res = await stream('Connect', { process: { pid: 2 ** 22 + 12345 } })
    if (res.status === 200) {
      // Errors after the headers travel in the end-of-stream frame.
      const all = []
      for await (const f of frames(res)) all.push(f)
      const last = all.at(-1)
      assert.equal(last.flags & 0x02, 0x02)
      assert.equal(last.message.error?.code, 'not_found')
    } else {
      assert.equal(res.status, 404)
      assert.equal((await res.json()).code, 'not_found')
    }
  })

  it('maps unary errors to HTTP statuses with JSON bodies', async () => {
    const stat = (path, headers) =>
      fetch(new URL('/filesystem.Filesystem/Stat', base), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...headers },
        body: JSON.stringify({ path }),
      })
    const missing = await stat('/nonexistent-e2e-path', { 'X-Access-Token': token })
    assert.equal(missing.status, 404)
    assert.equal((await missing.json()).code, 'not_found')
    const denied = await stat('/', {})
    assert.equal(denied.status, 401)
    assert.equal((await denied.json()).code, 'unauthenticated')
    const ok = await stat('/', { 'X-Access-Token': token })
    assert.equal(ok.status, 200)
    const { entry } = await ok.json()
    assert.equal(entry.type, 'FILE_TYPE_DIRECTORY')
    assert.equal(entry.path, '/')
  })
})
