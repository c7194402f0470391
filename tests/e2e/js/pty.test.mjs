// PTY sessions through the official JS SDK: create, input, resize, kill.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { CommandExitError } from 'e2b'
import { DEFAULT_USER, killSandbox, newSandbox, rejection, waitFor, explain } from './helpers.mjs'

const encoder = new TextEncoder()

/** A PTY whose output accumulates as text, with a helper to wait for a marker. */
async function openPty(sandbox, opts = {}) {
  const decoder = new TextDecoder()
  let output = ''
  const handle = await sandbox.pty.create({
    cols: 80,
    rows: 24,
    timeoutMs: 30_000,
    onData: (data) => {
      output += decoder.decode(data, { stream: true })
    },
    ...opts,
  })
  let n = 0
  return {
    handle,
    output: () => output,
    // Runs a line in the shell; resolves with what it printed between markers.
    // The marker is split in the command so that the terminal's echo of the
    // typed line never matches.
    async run(line) {
      const tag = `MK${++n}X${Date.now()}`
      const half = tag.length >> 1
      const open = `${tag.slice(0, half)}''${tag.slice(half)}`
      await sandbox.pty.sendInput(handle.pid, encoder.encode(`echo ${open}B; ${line}; echo ${open}E\n`))
      // An object, so that empty output still counts as found.
      const found = await waitFor(() => {
        const m = output.match(new RegExp(`${tag}B\\r?\\n([\\s\\S]*?)${tag}E`))
        return m && { text: m[1] }
      }, { what: `PTY output of ${JSON.stringify(line)}` })
      return found.text.replace(/\r/g, '')
    },
  }
}

describe('pty', () => {
  let sandbox
  before(async () => {
    sandbox = await newSandbox()
  })
  after(async () => {
    await killSandbox(sandbox)
  })

  it('creates a terminal with the requested size, takes input and resizes', async () => {
    const pty = await openPty(sandbox)
    try {
      assert.equal((await pty.run('stty size')).trim(), '24 80')
      assert.equal((await pty.run('echo $TERM; whoami; tty -s && echo is-a-tty')).trim(), `xterm-256color\n${DEFAULT_USER}\nis-a-tty`)
      await sandbox.pty.resize(pty.handle.pid, { cols: 132, rows: 40 })
      assert.equal((await pty.run('stty size')).trim(), '40 132')
    } finally {
      await sandbox.pty.kill(pty.handle.pid)
    }
  })

  it('kills a terminal: kill returns true, the session ends, a second kill returns false', async () => {
    const pty = await openPty(sandbox)
    assert.equal((await pty.run('echo alive')).trim(), 'alive')
    assert.equal(await sandbox.pty.kill(pty.handle.pid), true)
    const err = await rejection(() => pty.handle.wait())
    assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${explain(err)}`)
    await waitFor(async () => !(await sandbox.commands.list()).some((p) => p.pid === pty.handle.pid), {
      what: 'killed PTY to leave list()',
    })
    assert.equal(await sandbox.pty.kill(pty.handle.pid), false)
  })

  it('interrupts the foreground job with Ctrl-C, like a real terminal', async () => {
    const pty = await openPty(sandbox)
    try {
      await sandbox.pty.sendInput(pty.handle.pid, encoder.encode('sleep 30\n'))
      await new Promise((r) => setTimeout(r, 300))
      const started = Date.now()
      await sandbox.pty.sendInput(pty.handle.pid, new Uint8Array([3]))
      assert.equal((await pty.run('echo after-interrupt')).trim(), 'after-interrupt')
      assert.ok(Date.now() - started < 5000)
    } finally {
      await sandbox.pty.kill(pty.handle.pid)
    }
  })

  it('re-attaches to a running terminal with connect', async () => {
    const first = await openPty(sandbox)
    try {
      await first.run('export REATTACH=kept')
      await first.handle.disconnect()
      let output = ''
      const decoder = new TextDecoder()
      const again = await sandbox.pty.connect(first.handle.pid, {
        onData: (d) => {
          output += decoder.decode(d, { stream: true })
        },
      })
      assert.equal(again.pid, first.handle.pid)
      await sandbox.pty.sendInput(first.handle.pid, encoder.encode('echo "R=$REATTACH"\n'))
      await waitFor(() => output.includes('R=kept'), { what: 'output after re-attaching' })
    } finally {
      await sandbox.pty.kill(first.handle.pid)
    }
  })

  it('ends with the shell exit code when the shell exits', async () => {
    const pty = await openPty(sandbox)
    await pty.run('true')
    await sandbox.pty.sendInput(pty.handle.pid, encoder.encode('exit 7\n'))
    const err = await rejection(() => pty.handle.wait())
    assert.ok(err instanceof CommandExitError, `expected CommandExitError, got ${explain(err)}`)
    assert.equal(err.exitCode, 7)
  })

  it('opens a root terminal in the given cwd with extra envs', async () => {
    const pty = await openPty(sandbox, { user: 'root', cwd: '/tmp', envs: { PTY_VAR: 'pty-value' } })
    try {
      assert.equal((await pty.run('whoami; pwd; echo $PTY_VAR')).trim(), 'root\n/tmp\npty-value')
    } finally {
      await sandbox.pty.kill(pty.handle.pid)
    }
  })
})
