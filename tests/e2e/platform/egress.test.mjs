// Egress by name through the official JS SDK, against a test host of this
// run (run-platform.sh: a web server in a namespace of its own, named
// allowed.e2e.test and denied.e2e.test by a test zone the server's DNS
// forwarder asks). Nothing here leaves this machine.
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { InvalidArgumentError, Sandbox, SandboxError } from 'e2b'
import { create, killAll } from './helpers.mjs'

after(killAll)

const WEB = process.env.E2E_EGRESS_WEB
const skip = WEB ? false : 'needs the egress test host of run-platform.sh (E2E_EGRESS_WEB)'

/** `curl` in the sandbox: the body, or null when it failed. */
async function get(sandbox, url, extra = '') {
  const out = await sandbox.commands.run(`curl -sS -m 5 ${extra} ${url}`, { timeoutMs: 20_000 }).catch((e) => e)
  return out.exitCode === 0 ? out.stdout : null
}

async function resolves(sandbox, name) {
  const out = await sandbox.commands.run(`getent ahostsv4 ${name}`).catch((e) => e)
  return out.exitCode === 0
}

async function egressLog(sandboxId) {
  const res = await fetch(`${process.env.E2B_API_URL}/sandboxes/${sandboxId}/logs`, {
    headers: { 'X-API-KEY': process.env.E2B_API_KEY },
  })
  assert.equal(res.status, 200)
  const body = await res.json()
  // What the E2B CLI reads: each line a JSON object with a level.
  return body.logs.map((l) => JSON.parse(l.line))
}

describe('egress by name', { skip }, () => {
  test('allowOut names: only they resolve and connect, and updateNetwork replaces them live', async () => {
    const sandbox = await create({
      network: { allowOut: ['allowed.e2e.test'], denyOut: ['0.0.0.0/0'] },
    })
    assert.equal(await get(sandbox, 'http://allowed.e2e.test/'), 'hello allowed.e2e.test')
    assert.equal(await resolves(sandbox, 'denied.e2e.test'), false, 'a name not allowed resolved')
    // The same address under the other name (a shared address): refused by its Host.
    assert.equal(await get(sandbox, 'http://denied.e2e.test/', `--resolve denied.e2e.test:80:${WEB}`), null)
    // The raw address: refused too.
    assert.equal(await get(sandbox, `http://${WEB}/`), null)
    // And the registries: everything else is denied.
    assert.equal(await resolves(sandbox, 'pypi.org'), false)

    const info = await Sandbox.getInfo(sandbox.sandboxId)
    assert.deepEqual(info.network?.allowOut, ['allowed.e2e.test'])

    // Swap the names: the other one works now, the first one no longer.
    await sandbox.updateNetwork({ allowOut: ['denied.e2e.test'], denyOut: ['0.0.0.0/0'] })
    assert.equal(await get(sandbox, 'http://denied.e2e.test/'), 'hello denied.e2e.test')
    assert.equal(await resolves(sandbox, 'allowed.e2e.test'), false)

    // An empty update clears every rule: all of it is open again.
    await sandbox.updateNetwork({})
    assert.equal(await get(sandbox, 'http://allowed.e2e.test/'), 'hello allowed.e2e.test')
    assert.equal(await resolves(sandbox, 'pypi.org'), true)
    assert.equal((await Sandbox.getInfo(sandbox.sandboxId)).allowInternetAccess, true)

    // allowInternetAccess: false is deny-all, and allowOut still applies.
    await sandbox.updateNetwork({ allowInternetAccess: false, allowOut: ['allowed.e2e.test'] })
    assert.equal(await get(sandbox, 'http://allowed.e2e.test/'), 'hello allowed.e2e.test')
    assert.equal(await resolves(sandbox, 'pypi.org'), false)
    assert.equal((await Sandbox.getInfo(sandbox.sandboxId)).allowInternetAccess, false)

    // The egress log shows the names asked and what the policy said.
    const log = await egressLog(sandbox.sandboxId)
    assert.ok(log.some((l) => l.kind === 'dns' && l.name === 'denied.e2e.test' && l.verdict === 'denied'), JSON.stringify(log))
    assert.ok(log.some((l) => l.kind === 'dns' && l.name === 'allowed.e2e.test' && l.verdict === 'allowed' && l.answers === WEB))
    assert.ok(log.some((l) => l.kind === 'connect' && l.verdict === 'denied' && l.level === 'warn'))
    assert.ok(log.every((l) => typeof l.level === 'string' && l.logger === 'egress'))
  })

  test('a name denied beside allow-all', async () => {
    const sandbox = await create({ network: { denyOut: ['denied.e2e.test'] } })
    assert.equal(await get(sandbox, 'http://allowed.e2e.test/'), 'hello allowed.e2e.test')
    assert.equal(await resolves(sandbox, 'denied.e2e.test'), false)
    assert.equal(await get(sandbox, 'http://denied.e2e.test/', `--resolve denied.e2e.test:80:${WEB}`), null)
  })

  test('bad rules are 400s that say what is wrong', async () => {
    const cases = [
      [{ allowOut: ['*'], denyOut: ['0.0.0.0/0'] }, /bare "\*"/],
      [{ allowOut: ['exa mple.com'], denyOut: ['0.0.0.0/0'] }, /not a valid domain name/],
      [{ allowOut: ['a.*.example.com'], denyOut: ['0.0.0.0/0'] }, /leading/],
      [{ denyOut: ['2001:db8::/32'] }, /IPv6/],
      [{ allowOut: ['allowed.e2e.test'] }, /0\.0\.0\.0\/0/],
      [{ egressProxy: { address: '127.0.0.1:1080' } }, /never reach/],
    ]
    for (const [network, why] of cases) {
      const err = await create({ network }).then(
        () => undefined,
        (e) => e,
      )
      assert.ok(err instanceof SandboxError || err instanceof InvalidArgumentError, `${JSON.stringify(network)}: ${err}`)
      assert.match(String(err.message), /400/, String(err))
      assert.match(String(err.message), why, String(err))
    }
    const sandbox = await create()
    const err = await sandbox.updateNetwork({ allowOut: ['*.'], denyOut: ['0.0.0.0/0'] }).then(
      () => undefined,
      (e) => e,
    )
    assert.ok(err, 'updateNetwork took a bare wildcard')
    assert.match(String(err.message), /400/)
  })
})
