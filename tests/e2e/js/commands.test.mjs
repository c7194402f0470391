// process.Process through the official JS SDK: foreground and background
// runs, re-attaching, killing, stdin, timeouts, environment, cwd and users.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { CommandExitError, InvalidArgumentError, NotFoundError, TimeoutError } from 'e2b'
import { DEFAULT_HOME, DEFAULT_USER, SANDBOX_ENVS, killSandbox, newSandbox, rejection, uniqueName, waitFor, explain } from './helpers.mjs'

describe('commands', () => {
  let sandbox
  before(async () => {
    sandbox = await newSandbox()
  })
  after(async () => {
    await killSandbox(sandbox)
  })

  const runningPids = async () => (await sandbox.commands.list()).map((p) => p.pid)

  it('runs in the foreground and streams stdout and stderr to callbacks', async () => {
    const out = []
    const err = []
    const result = await sandbox.commands.run('echo out-1; echo err-1 >&2; echo out-2', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => err.push(d),
    })
    assert.equal(result.exitCode, 0)
    assert.equal(result.stdout, 'out-1\nout-2\n')
    assert.equal(result.stderr, 'err-1\n')
    assert.equal(out.join(''), 'out-1\nout-2\n')
    assert.equal(err.join(''), 'err-1\n')
  })

  it('delivers output while the command still runs', async () => {
    const seen = []
    const handle = await sandbox.commands.run('echo first; sleep 2; echo second', {
      background: true,
      onStdout: (d) => seen.push({ d, at: Date.now() }),
    })
    const started = Date.now()
    await waitFor(() => seen.some((s) => s.d.includes('first')), { what: 'first line', timeoutMs: 1500 })
    assert.ok(Date.now() - started < 1500, 'first line arrived only when the command ended: envd buffers output')
    const result = await handle.wait()
    assert.equal(result.stdout, 'first\nsecond\n')
  })

  it('raises CommandExitError with exit code and stderr for a non-zero exit', async () => {
    const err = await rejection(() => sandbox.commands.run('echo partial; echo broken >&2; exit 3'))
    assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${explain(err)}`)
    assert.equal(err.exitCode, 3)
    assert.equal(err.stdout, 'partial\n')
    assert.equal(err.stderr, 'broken\n')
    assert.match(err.error ?? '', /exit status 3/)
  })

  it('runs in the background, lists, re-attaches with connect and kills', async () => {
    const marker = uniqueName('bg')
    const cmd = `echo ${marker}-start; while true; do echo tick; sleep 0.1; done`
    const handle = await sandbox.commands.run(cmd, { background: true })
    assert.ok(Number.isInteger(handle.pid) && handle.pid > 0)

    const listed = (await sandbox.commands.list()).find((p) => p.pid === handle.pid)
    assert.ok(listed, 'background command missing from list()')
    assert.equal(listed.cmd, '/bin/bash')
    assert.deepEqual(listed.args, ['-l', '-c', cmd])

    // Dropping our stream must not stop the process.
    await handle.disconnect()
    await sleep(300)
    assert.ok((await runningPids()).includes(handle.pid), 'process died when the client disconnected')

    const ticks = []
    const again = await sandbox.commands.connect(handle.pid, { onStdout: (d) => ticks.push(d) })
    assert.equal(again.pid, handle.pid)
    await waitFor(() => ticks.join('').includes('tick'), { what: 'output after connect' })

    assert.equal(await sandbox.commands.kill(handle.pid), true)
    const err = await rejection(() => again.wait())
    assert.ok(err instanceof CommandExitError, `expected CommandExitError after kill, got ${explain(err)}`)
    assert.notEqual(err.exitCode, 0)
    await waitFor(async () => !(await runningPids()).includes(handle.pid), { what: 'killed process to leave list()' })
    assert.equal(await sandbox.commands.kill(handle.pid), false, 'kill of a dead pid must return false')
  })

  it('lists a process with its cwd and per-call envs', async () => {
    const handle = await sandbox.commands.run('sleep 20', {
      background: true,
      cwd: '/tmp',
      envs: { LISTED_VAR: 'listed-value' },
    })
    try {
      const listed = (await sandbox.commands.list()).find((p) => p.pid === handle.pid)
      assert.ok(listed, 'process missing from list()')
      assert.equal(listed.cwd, '/tmp')
      assert.equal(listed.envs.LISTED_VAR, 'listed-value')
    } finally {
      await handle.kill()
    }
  })

  it('streams large output completely and in order', async () => {
    const result = await sandbox.commands.run('seq 1 200000; seq 1 1000 >&2')
    const lines = result.stdout.split('\n')
    assert.equal(lines.length, 200001)
    assert.equal(lines[0], '1')
    assert.equal(lines[199999], '200000')
    assert.equal(result.stderr.split('\n').length, 1001)
  })

  it('runs commands concurrently', async () => {
    const started = Date.now()
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => sandbox.commands.run(`sleep 0.5; echo ${i}`)),
    )
    assert.deepEqual(results.map((r) => r.stdout), Array.from({ length: 10 }, (_, i) => `${i}\n`))
    const elapsed = Date.now() - started
    assert.ok(elapsed < 3000, `10 parallel 0.5 s sleeps took ${elapsed} ms: commands ran one after another`)
  })

  it('re-attaches to a process that has just ended', async () => {
    const handle = await sandbox.commands.run('echo bye; exit 0', { background: true })
    const first = await handle.wait()
    assert.equal(first.stdout, 'bye\n')
    const again = await sandbox.commands.connect(handle.pid)
    assert.equal(again.pid, handle.pid)
    const second = await again.wait()
    assert.equal(second.exitCode, 0)
  })

  it('feeds stdin and closes it', async () => {
    const handle = await sandbox.commands.run('cat', { background: true, stdin: true })
    await sandbox.commands.sendStdin(handle.pid, 'hello ')
    await handle.sendStdin(new TextEncoder().encode('stdin\n'))
    await sandbox.commands.closeStdin(handle.pid)
    const result = await handle.wait()
    assert.equal(result.exitCode, 0)
    assert.equal(result.stdout, 'hello stdin\n')
  })

  it('gives a command without stdin an empty stdin', async () => {
    // With stdin off, `cat` must see EOF at once rather than hang.
    const result = await sandbox.commands.run('cat; echo done', { timeoutMs: 5000 })
    assert.equal(result.stdout, 'done\n')
  })

  it('kills a command when timeoutMs expires', async () => {
    const marker = uniqueName('timeout')
    const started = Date.now()
    const err = await rejection(() => sandbox.commands.run(`sleep 30 # ${marker}`, { timeoutMs: 1000 }))
    const elapsed = Date.now() - started
    assert.ok(elapsed < 5000, `timeoutMs 1000 took ${elapsed} ms`)
    assert.ok(
      err instanceof TimeoutError || err instanceof CommandExitError,
      `expected TimeoutError or CommandExitError, got ${explain(err)}`,
    )
    // The process itself must be gone, not only our stream.
    await waitFor(
      async () => !(await sandbox.commands.list()).some((p) => p.args.join(' ').includes(marker)),
      { what: 'timed-out process to be killed', timeoutMs: 3000 },
    )
  })

  it('merges sandbox-wide and per-call env vars, the call winning', async () => {
    const [key] = Object.keys(SANDBOX_ENVS)
    const r1 = await sandbox.commands.run(`echo "$${key}|$SANDBAR_E2E_OVERRIDE"`)
    assert.equal(r1.stdout, `${SANDBOX_ENVS[key]}|${SANDBOX_ENVS.SANDBAR_E2E_OVERRIDE}\n`)

    const r2 = await sandbox.commands.run('echo "$SANDBAR_E2E_OVERRIDE|$CALL_ONLY"', {
      envs: { SANDBAR_E2E_OVERRIDE: 'call-level', CALL_ONLY: 'x y z' },
    })
    assert.equal(r2.stdout, 'call-level|x y z\n')

    const r3 = await sandbox.commands.run('echo "$USER|$HOME|$LOGNAME"; test -n "$PATH" && echo path-set')
    assert.equal(r3.stdout, `${DEFAULT_USER}|${DEFAULT_HOME}|${DEFAULT_USER}\npath-set\n`)
  })

  it('runs in the home directory by default and in the given cwd', async () => {
    assert.equal((await sandbox.commands.run('pwd')).stdout, `${DEFAULT_HOME}\n`)
    assert.equal((await sandbox.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n')
    assert.equal((await sandbox.commands.run('pwd', { cwd: '~' })).stdout, `${DEFAULT_HOME}\n`)
  })

  it('rejects a missing cwd with InvalidArgumentError', async () => {
    const missing = `/tmp/${uniqueName('no-such-dir')}`
    const err = await rejection(() => sandbox.commands.run('pwd', { cwd: missing }))
    assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${explain(err)}`)
    assert.ok(err.message.includes(missing), `message should name the cwd: ${err.message}`)
  })

  it('runs as the default user, or as root when asked', async () => {
    assert.equal((await sandbox.commands.run('whoami')).stdout, `${DEFAULT_USER}\n`)
    assert.notEqual((await sandbox.commands.run('id -u')).stdout.trim(), '0')
    const root = await sandbox.commands.run('whoami; echo $HOME; pwd', { user: 'root' })
    assert.equal(root.stdout, 'root\n/root\n/root\n')
  })

  it('reports unknown pids: kill false, connect and sendStdin NotFoundError', async () => {
    const unknown = 2 ** 22 + 12345 // above the kernel's pid_max ceiling
    assert.equal(await sandbox.commands.kill(unknown), false)
    const c = await rejection(() => sandbox.commands.connect(unknown))
    assert.ok(c instanceof NotFoundError, `connect: expected NotFoundError, got ${explain(c)}`)
    const s = await rejection(() => sandbox.commands.sendStdin(unknown, 'x'))
    assert.ok(s instanceof NotFoundError, `sendStdin: expected NotFoundError, got ${explain(s)}`)
  })

  it('runs many short commands back to back', async () => {
    const started = Date.now()
    for (let i = 0; i < 20; i++) {
      const r = await sandbox.commands.run(`echo ${i}`)
      assert.equal(r.stdout, `${i}\n`)
    }
    const perRun = (Date.now() - started) / 20
    assert.ok(perRun < 500, `one run took ${perRun} ms on average`)
  })
})
