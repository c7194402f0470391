// WatchDir through the official JS SDK.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { FileNotFoundError, FilesystemEventType } from 'e2b'
import { killSandbox, newSandbox, rejection, scratchDir, waitFor, explain } from './helpers.mjs'

describe('watchDir', () => {
  let sandbox
  let scratch
  before(async () => {
    sandbox = await newSandbox()
    scratch = await scratchDir(sandbox, 'watch')
  })
  after(async () => {
    await scratch?.cleanup()
    await killSandbox(sandbox)
  })

  const has = (events, type, name) => events.some((e) => e.type === type && e.name === name)

  it('reports create, write and remove events', async () => {
    const dir = `${scratch.dir}/flat`
    await sandbox.files.makeDir(dir)
    const events = []
    const handle = await sandbox.files.watchDir(dir, (e) => events.push(e))
    try {
      await sandbox.files.write(`${dir}/a.txt`, 'one')
      await waitFor(() => has(events, FilesystemEventType.CREATE, 'a.txt'), { what: 'create event' })
      await waitFor(() => has(events, FilesystemEventType.WRITE, 'a.txt'), { what: 'write event' })
      await sandbox.commands.run(`echo more >> ${dir}/a.txt`)
      await sandbox.files.rename(`${dir}/a.txt`, `${dir}/b.txt`)
      await waitFor(() => has(events, FilesystemEventType.RENAME, 'a.txt') || has(events, FilesystemEventType.CREATE, 'b.txt'), {
        what: 'rename event',
      })
      await sandbox.files.remove(`${dir}/b.txt`)
      await waitFor(() => has(events, FilesystemEventType.REMOVE, 'b.txt'), { what: 'remove event' })
    } finally {
      await handle.stop()
    }
    // Nothing arrives after stop().
    const seen = events.length
    await sandbox.files.write(`${dir}/after-stop.txt`, 'x')
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(events.length, seen)
  })

  it('watches subdirectories when recursive, with entry info when asked', async () => {
    const dir = `${scratch.dir}/rec`
    await sandbox.files.makeDir(`${dir}/sub`)
    const events = []
    const handle = await sandbox.files.watchDir(dir, (e) => events.push(e), { recursive: true, includeEntry: true })
    try {
      await sandbox.files.write(`${dir}/sub/nested.txt`, 'nested')
      const ev = await waitFor(
        () => events.find((e) => e.type === FilesystemEventType.CREATE && e.name === 'sub/nested.txt'),
        { what: 'recursive create event' },
      )
      assert.equal(ev.entry?.path, `${dir}/sub/nested.txt`)
    } finally {
      await handle.stop()
    }
  })

  it('fails with FileNotFoundError for a missing directory', async () => {
    const err = await rejection(() => sandbox.files.watchDir(`${scratch.dir}/missing`, () => {}))
    assert.ok(err instanceof FileNotFoundError, `expected FileNotFoundError, got ${explain(err)}`)
  })
})
