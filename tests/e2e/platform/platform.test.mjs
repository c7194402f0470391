// The control plane and public URLs through the official JS SDK: the seed
// program, the sandbox lifecycle, list filters and paging, the proxy's
// answers, private sandboxes, egress and timeouts.
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { CommandExitError, InvalidArgumentError, RateLimitError, Sandbox, SandboxError, SandboxNotFoundError } from 'e2b'
import { RUN_ID, TEMPLATE, create, escapeRegExp, fetchUntil, httpServer, killAll, sandbarEnvOnly } from './helpers.mjs'

const run = promisify(execFile)
const here = (p) => fileURLToPath(new URL(p, import.meta.url))

after(killAll)

describe('seed program', () => {
  test('runs verbatim under Node with only the exports of `sandbar env`', async () => {
    const env = sandbarEnvOnly()
    const { stdout } = await run(process.execPath, [here('./seed.mjs')], { env, timeout: 60_000 })
    const domain = escapeRegExp(env.E2B_DOMAIN)
    const m = stdout.match(new RegExp(`Server started at: https://3000-([a-z0-9]+)\\.${domain}\\n`))
    assert.ok(m, `unexpected output:\n${stdout}`)
    try {
      for (const name of ['.bash_logout', '.bashrc', '.profile']) {
        assert.ok(stdout.includes(name), `listing lacks ${name}:\n${stdout}`)
      }
      assert.match(stdout, /Response from server inside sandbox: <!DOCTYPE HTML/i)
    } finally {
      await Sandbox.kill(m[1])
    }
  })
})

describe('sandbox lifecycle', () => {
  test('create, get, metadata and envVars', async () => {
    const sandbox = await create({ metadata: { purpose: 'get' }, envs: { FOO: 'bar baz', QUOTE: "it's" } })
    assert.match(sandbox.sandboxId, /^[a-z0-9]{20}$/)
    const out = await sandbox.commands.run('printf "%s|%s" "$FOO" "$QUOTE"')
    assert.equal(out.stdout, "bar baz|it's")

    const info = await Sandbox.getInfo(sandbox.sandboxId)
    assert.equal(info.sandboxId, sandbox.sandboxId)
    assert.equal(info.templateId, 'base')
    assert.equal(info.state, 'running')
    assert.deepEqual(info.metadata, { run: RUN_ID, purpose: 'get' })
    assert.ok(info.cpuCount > 0 && info.memoryMB > 0)
    const ttl = (info.endAt - info.startedAt) / 1000
    assert.ok(Math.abs(ttl - 120) <= 1, `timeout ${ttl}s`)
  })

  test('list filters by metadata and state and pages with a limit', async () => {
    const group = `g${Math.random().toString(36).slice(2, 8)}`
    const made = await Promise.all([0, 1, 2].map((i) => create({ metadata: { group, i: String(i) } })))
    const ids = made.map((s) => s.sandboxId).sort()

    const paginator = Sandbox.list({ query: { metadata: { run: RUN_ID, group } }, limit: 2 })
    const first = await paginator.nextItems()
    assert.equal(first.length, 2)
    assert.ok(paginator.hasNext)
    const second = await paginator.nextItems()
    assert.equal(second.length, 1)
    assert.equal(paginator.hasNext, false)
    assert.deepEqual([...first, ...second].map((s) => s.sandboxId).sort(), ids)
    for (const s of [...first, ...second]) assert.equal(s.metadata.group, group)

    const one = await Sandbox.list({ query: { metadata: { group, i: '1' } } }).nextItems()
    assert.deepEqual(one.map((s) => s.sandboxId), [made[1].sandboxId])
    const paused = await Sandbox.list({ query: { metadata: { group }, state: ['paused'] } }).nextItems()
    assert.deepEqual(paused, [])
    const none = await Sandbox.list({ query: { metadata: { group: 'no-such-group' } } }).nextItems()
    assert.deepEqual(none, [])
  })

  test('setTimeout replaces the end time; connect reaches a running sandbox', async () => {
    const sandbox = await create()
    await sandbox.setTimeout(30_000)
    const info = await Sandbox.getInfo(sandbox.sandboxId)
    const left = (info.endAt - Date.now()) / 1000
    assert.ok(left > 25 && left <= 31, `end in ${left}s`)

    const again = await Sandbox.connect(sandbox.sandboxId)
    assert.equal(again.sandboxId, sandbox.sandboxId)
    assert.equal((await again.commands.run('echo connected')).stdout, 'connected\n')
  })

  test('kill: gone from the API, and its URL answers 502 "The sandbox was not found"', async () => {
    const sandbox = await create()
    await httpServer(sandbox, 3000)
    const url = `https://${sandbox.getHost(3000)}`
    assert.equal((await fetchUntil(url, (r) => r.status === 200)).status, 200)

    await sandbox.kill()
    await assert.rejects(Sandbox.getInfo(sandbox.sandboxId), /not found/i)
    assert.equal(await Sandbox.kill(sandbox.sandboxId), false)
    const res = await fetch(url)
    assert.equal(res.status, 502)
    const body = await res.json()
    assert.equal(body.message, 'The sandbox was not found')
    assert.equal(body.sandboxId, sandbox.sandboxId)
    assert.equal(body.code, 502)
  })

  test('the timeout kills the sandbox', async () => {
    const sandbox = await create({ timeoutMs: 3_000 })
    const started = Date.now()
    let gone = false
    while (Date.now() - started < 15_000) {
      try {
        await Sandbox.getInfo(sandbox.sandboxId)
      } catch {
        gone = true
        break
      }
      await sleep(250)
    }
    assert.ok(gone, 'still alive 15 s after a 3 s timeout')
    const elapsed = (Date.now() - started) / 1000
    assert.ok(elapsed >= 2, `killed after only ${elapsed}s`)
    const res = await fetch(`https://${sandbox.getHost(49983)}/health`)
    assert.equal(res.status, 502)
  })
})

describe('public URLs', () => {
  test('a closed port answers 502 "The sandbox is running but port is not open"', async () => {
    const sandbox = await create()
    const res = await fetch(`https://${sandbox.getHost(3999)}`)
    assert.equal(res.status, 502)
    const body = await res.json()
    assert.equal(body.message, 'The sandbox is running but port is not open')
    assert.equal(body.port, 3999)
  })

  test('a server bound to 127.0.0.1 inside is reachable', async () => {
    const sandbox = await create()
    await httpServer(sandbox, 3001, '127.0.0.1')
    const res = await fetchUntil(`https://${sandbox.getHost(3001)}`, (r) => r.status === 200)
    assert.equal(res.status, 200)
    assert.ok(res.body.includes('.bashrc'), res.body)
  })

  test('a private sandbox needs its traffic token; envd still works', async () => {
    const sandbox = await create({ network: { allowPublicTraffic: false } })
    assert.ok(sandbox.trafficAccessToken, 'no trafficAccessToken returned')
    await httpServer(sandbox, 3002)
    const url = `https://${sandbox.getHost(3002)}`
    const token = { 'e2b-traffic-access-token': sandbox.trafficAccessToken }
    assert.equal((await fetchUntil(url, (r) => r.status === 200, { headers: token })).status, 200)

    const without = await fetch(url)
    assert.equal(without.status, 403)
    assert.match((await without.json()).message, /traffic access token/)
    const wrong = await fetch(url, { headers: { 'e2b-traffic-access-token': 'nope' } })
    assert.equal(wrong.status, 403)
    assert.equal((await sandbox.commands.run('echo ok')).stdout, 'ok\n')
  })

  test('allow_internet_access: false blocks the internet but not the sandbox URL', async () => {
    // -k: what is tested is reachability; networks that intercept TLS (a
    // corporate egress proxy) would otherwise fail the control for a CA the
    // template does not carry.
    const curl = 'curl -sS -m 10 -o /dev/null -w "%{http_code}" https://pypi.org/simple/six/'
    // Control: the same command works from a default sandbox.
    const open = await create()
    assert.equal((await open.commands.run(curl, { timeoutMs: 30_000 })).stdout, '200')

    const closed = await create({ allowInternetAccess: false })
    await assert.rejects(closed.commands.run(curl, { timeoutMs: 30_000 }), CommandExitError)
    assert.equal((await Sandbox.getInfo(closed.sandboxId)).allowInternetAccess, false)
    await httpServer(closed, 3003)
    const res = await fetchUntil(`https://${closed.getHost(3003)}`, (r) => r.status === 200)
    assert.equal(res.status, 200)
  })
})

describe('network policies', () => {
  test('a blocked range in allowOut is refused with a 400 that says why', async () => {
    for (const entry of ['169.254.169.254/32', '10.0.0.0/8', '127.0.0.1']) {
      const err = await create({ network: { allowOut: [entry] } }).then(
        () => undefined,
        (e) => e,
      )
      assert.ok(err, `allowOut ${entry} was accepted`)
      assert.ok(err instanceof SandboxError || err instanceof InvalidArgumentError, String(err))
      assert.match(String(err.message), /400/, String(err))
      assert.match(String(err.message), /never reach/, String(err))
    }
    // updateNetwork holds the same rule on a running sandbox.
    const sandbox = await create()
    const bad = await fetch(`${process.env.E2B_API_URL}/sandboxes/${sandbox.sandboxId}/network`, {
      method: 'PUT',
      headers: { 'X-API-KEY': process.env.E2B_API_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ allowOut: ['169.254.169.254'] }),
    })
    const text = await bad.text()
    assert.equal(bad.status, 400, text)
    assert.equal(JSON.parse(text).code, 400, text)
    assert.match(text, /never reach/)
  })
})

describe('teams', () => {
  const other = { apiKey: process.env.E2E_OTHER_TEAM_KEY }
  const small = { apiKey: process.env.E2E_SMALL_TEAM_KEY }

  test("another team's key sees nothing of this team's sandboxes", async () => {
    assert.ok(other.apiKey, 'run through run-platform.sh (E2E_OTHER_TEAM_KEY)')
    const mine = await create()
    const theirs = await Sandbox.list({ ...other }).nextItems()
    assert.deepEqual(theirs, [], 'the other team lists nothing')
    await assert.rejects(Sandbox.getInfo(mine.sandboxId, other), SandboxNotFoundError)
    assert.equal(await Sandbox.kill(mine.sandboxId, other), false, 'kill by another team: not found')
    await assert.rejects(Sandbox.connect(mine.sandboxId, other), SandboxNotFoundError)
    // Still alive, and still the owner's.
    assert.equal((await mine.commands.run('echo alive')).stdout, 'alive\n')
    const listed = await Sandbox.list({ query: { metadata: { run: RUN_ID } } }).nextItems()
    assert.ok(listed.some((s) => s.sandboxId === mine.sandboxId))
  })

  test("a team past its limit gets a 429 that says which limit", async () => {
    assert.ok(small.apiKey, 'run through run-platform.sh (E2E_SMALL_TEAM_KEY)')
    const first = await Sandbox.create(TEMPLATE, { ...small, timeoutMs: 60_000 })
    try {
      const err = await Sandbox.create(TEMPLATE, { ...small, timeoutMs: 60_000 }).then(
        (s) => (s.kill(), undefined),
        (e) => e,
      )
      assert.ok(err instanceof RateLimitError, String(err))
      assert.match(err.message, /limit of 1 running sandboxes/)
      // Another team is not held back by it.
      const free = await create()
      assert.ok(free.sandboxId)
    } finally {
      await first.kill()
    }
    // The place is free again.
    const again = await Sandbox.create(TEMPLATE, { ...small, timeoutMs: 60_000 })
    await again.kill()
  })

  test('a paused sandbox runs again only within its team limit (connect and auto-resume)', async () => {
    const a = await Sandbox.create(TEMPLATE, { ...small, timeoutMs: 60_000, lifecycle: { onTimeout: 'pause', autoResume: true } })
    let b
    try {
      await httpServer(a, 8124)
      const url = `https://${a.getHost(8124)}`
      assert.equal((await fetchUntil(url, (r) => r.status === 200)).status, 200)
      await a.pause()
      // The paused one holds no place: another may run.
      b = await Sandbox.create(TEMPLATE, { ...small, timeoutMs: 60_000 })
      const err = await Sandbox.connect(a.sandboxId, small).then(() => undefined, (e) => e)
      assert.ok(err instanceof RateLimitError, String(err))
      assert.match(err.message, /limit of 1 running sandboxes/)
      // A request to it does not wake it past the limit either.
      const refused = await fetch(url)
      assert.notEqual(refused.status, 200, await refused.text())
      assert.equal((await Sandbox.getInfo(a.sandboxId, small)).state, 'paused')
      const running = await Sandbox.list({ ...small, query: { state: ['running'] } }).nextItems()
      assert.deepEqual(running.map((s) => s.sandboxId), [b.sandboxId])
      // With the place free, the request wakes it and is served.
      await b.kill()
      b = undefined
      const res = await fetchUntil(url, (r) => r.status === 200)
      assert.equal(res.status, 200, res.body)
      assert.equal((await Sandbox.getInfo(a.sandboxId, small)).state, 'running')
    } finally {
      await b?.kill()
      await a.kill()
    }
  })
})
