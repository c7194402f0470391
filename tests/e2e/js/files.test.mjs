// filesystem.Filesystem and /files through the official JS SDK.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { FileNotFoundError, FileType, InvalidArgumentError, NotFoundError } from 'e2b'
import { DEFAULT_USER, killSandbox, newSandbox, rejection, scratchDir, explain } from './helpers.mjs'

describe('files', () => {
  let sandbox
  let scratch
  before(async () => {
    sandbox = await newSandbox()
    scratch = await scratchDir(sandbox, 'files')
  })
  after(async () => {
    await scratch?.cleanup()
    await killSandbox(sandbox)
  })

  it('writes and reads text', async () => {
    const path = `${scratch.dir}/hello.txt`
    const info = await sandbox.files.write(path, 'Hello, sandbar ✓\n')
    assert.equal(info.path, path)
    assert.equal(info.name, 'hello.txt')
    assert.equal(info.type, FileType.FILE)
    assert.equal(await sandbox.files.read(path), 'Hello, sandbar ✓\n')
    // Writing again truncates.
    await sandbox.files.write(path, 'short')
    assert.equal(await sandbox.files.read(path), 'short')
  })

  it('writes and reads bytes unchanged', async () => {
    const path = `${scratch.dir}/bytes.bin`
    const data = new Uint8Array(70_000).map((_, i) => (i * 31 + 7) % 256)
    await sandbox.files.write(path, data.buffer)
    const back = await sandbox.files.read(path, { format: 'bytes' })
    assert.ok(back instanceof Uint8Array)
    assert.equal(back.length, data.length)
    assert.deepEqual(Buffer.from(back), Buffer.from(data))
    const sum = await sandbox.commands.run(`wc -c < ${path}`)
    assert.equal(sum.stdout.trim(), String(data.length))
  })

  it('writes as octet-stream, plain and gzip-encoded', async () => {
    const plain = `${scratch.dir}/octet.txt`
    await sandbox.files.write(plain, 'octet body', { useOctetStream: true })
    assert.equal(await sandbox.files.read(plain), 'octet body')
    const gz = `${scratch.dir}/gzip.txt`
    const text = 'gzip body '.repeat(1000)
    await sandbox.files.write(gz, text, { gzip: true })
    assert.equal(await sandbox.files.read(gz), text)
    assert.equal(await sandbox.files.read(gz, { gzip: true }), text)
  })

  it('streams uploads and downloads', async () => {
    const path = `${scratch.dir}/streamed.txt`
    const chunks = Array.from({ length: 50 }, (_, i) => `chunk ${i}\n`)
    const body = new ReadableStream({
      start(controller) {
        for (const c of chunks) controller.enqueue(new TextEncoder().encode(c))
        controller.close()
      },
    })
    await sandbox.files.write(path, body)
    const stream = await sandbox.files.read(path, { format: 'stream' })
    let text = ''
    const decoder = new TextDecoder()
    for await (const part of stream) text += decoder.decode(part, { stream: true })
    assert.equal(text, chunks.join(''))
    assert.equal((await sandbox.files.getInfo(path)).owner, DEFAULT_USER)
  })

  it('creates missing parent directories on write, owned by the user', async () => {
    const path = `${scratch.dir}/deep/er/file.txt`
    await sandbox.files.write(path, 'x')
    const parent = await sandbox.files.getInfo(`${scratch.dir}/deep/er`)
    assert.equal(parent.type, FileType.DIR)
    assert.equal(parent.owner, DEFAULT_USER)
    assert.equal((await sandbox.files.getInfo(`${scratch.dir}/deep`)).owner, DEFAULT_USER)
  })

  it('writes many files in one request', async () => {
    const files = Array.from({ length: 25 }, (_, i) => ({
      path: `${scratch.dir}/many/${i % 5}/f${i}.txt`,
      data: `content ${i}`,
    }))
    const infos = await sandbox.files.write(files)
    assert.equal(infos.length, files.length)
    assert.deepEqual(infos.map((i) => i.path).sort(), files.map((f) => f.path).sort())
    for (const f of [files[0], files[12], files[24]]) {
      assert.equal(await sandbox.files.read(f.path), f.data)
    }
    const count = await sandbox.commands.run(`find ${scratch.dir}/many -type f | wc -l`)
    assert.equal(count.stdout.trim(), '25')
  })

  it('lists a directory, deeper with depth', async () => {
    const base = `${scratch.dir}/tree`
    await sandbox.files.write([
      { path: `${base}/top.txt`, data: 'top' },
      { path: `${base}/sub/inner.txt`, data: 'inner' },
      { path: `${base}/sub/subsub/deepest.txt`, data: 'deepest' },
    ])
    const one = await sandbox.files.list(base)
    assert.deepEqual(one.map((e) => e.name).sort(), ['sub', 'top.txt'])
    const top = one.find((e) => e.name === 'top.txt')
    assert.equal(top.path, `${base}/top.txt`)
    assert.equal(top.type, FileType.FILE)
    assert.equal(top.size, 3)
    assert.equal(one.find((e) => e.name === 'sub').type, FileType.DIR)

    const two = await sandbox.files.list(base, { depth: 2 })
    assert.deepEqual(two.map((e) => e.path).sort(), [
      `${base}/sub`,
      `${base}/sub/inner.txt`,
      `${base}/sub/subsub`,
      `${base}/top.txt`,
    ])
    const three = await sandbox.files.list(base, { depth: 3 })
    assert.ok(three.some((e) => e.path === `${base}/sub/subsub/deepest.txt`))
  })

  it('tells whether paths exist', async () => {
    const path = `${scratch.dir}/exists.txt`
    assert.equal(await sandbox.files.exists(path), false)
    await sandbox.files.write(path, '1')
    assert.equal(await sandbox.files.exists(path), true)
    assert.equal(await sandbox.files.exists(scratch.dir), true)
  })

  it('makes directories with parents; an existing one gives false', async () => {
    const dir = `${scratch.dir}/made/with/parents`
    assert.equal(await sandbox.files.makeDir(dir), true)
    assert.equal(await sandbox.files.makeDir(dir), false)
    const info = await sandbox.files.getInfo(dir)
    assert.equal(info.type, FileType.DIR)
    assert.equal(info.owner, DEFAULT_USER)
  })

  it('renames files and directories', async () => {
    const from = `${scratch.dir}/old-name.txt`
    const to = `${scratch.dir}/new-name.txt`
    await sandbox.files.write(from, 'moving')
    const entry = await sandbox.files.rename(from, to)
    assert.equal(entry.path, to)
    assert.equal(entry.name, 'new-name.txt')
    assert.equal(await sandbox.files.exists(from), false)
    assert.equal(await sandbox.files.read(to), 'moving')

    await sandbox.files.write(`${scratch.dir}/dir-a/x.txt`, 'x')
    const moved = await sandbox.files.rename(`${scratch.dir}/dir-a`, `${scratch.dir}/dir-b`)
    assert.equal(moved.type, FileType.DIR)
    assert.equal(await sandbox.files.read(`${scratch.dir}/dir-b/x.txt`), 'x')
  })

  it('removes files and whole directories', async () => {
    const file = `${scratch.dir}/doomed.txt`
    await sandbox.files.write(file, 'bye')
    await sandbox.files.remove(file)
    assert.equal(await sandbox.files.exists(file), false)
    await sandbox.files.write(`${scratch.dir}/doomed-dir/a/b.txt`, 'bye')
    await sandbox.files.remove(`${scratch.dir}/doomed-dir`)
    assert.equal(await sandbox.files.exists(`${scratch.dir}/doomed-dir`), false)
  })

  it('describes entries: type, size, mode, permissions, owner, group, mtime, symlink target', async () => {
    const path = `${scratch.dir}/info.txt`
    const before = Date.now()
    await sandbox.files.write(path, '12345')
    await sandbox.commands.run(`chmod 640 ${path}`)
    const info = await sandbox.files.getInfo(path)
    assert.equal(info.name, 'info.txt')
    assert.equal(info.path, path)
    assert.equal(info.type, FileType.FILE)
    assert.equal(info.size, 5)
    assert.equal(info.mode & 0o777, 0o640)
    assert.equal(info.permissions, '-rw-r-----')
    assert.equal(info.owner, DEFAULT_USER)
    assert.equal(info.group, DEFAULT_USER)
    assert.ok(info.modifiedTime instanceof Date)
    assert.ok(Math.abs(info.modifiedTime.getTime() - before) < 60_000, `mtime ${info.modifiedTime.toISOString()} is not recent`)

    const dir = await sandbox.files.getInfo(scratch.dir)
    assert.equal(dir.type, FileType.DIR)
    assert.match(dir.permissions, /^d/)

    await sandbox.commands.run(`ln -s ${path} ${scratch.dir}/link`)
    const link = await sandbox.files.getInfo(`${scratch.dir}/link`)
    assert.equal(link.symlinkTarget, path)
  })

  it('stores file metadata on write and reports it from getInfo, list and rename', async () => {
    const path = `${scratch.dir}/meta/tagged.txt`
    const written = await sandbox.files.write(path, 'tagged', { metadata: { Author: 'Mish', purpose: 'e2e test' } })
    // Keys come back lowercase: they travel as X-Metadata-<key> headers.
    const expected = { author: 'Mish', purpose: 'e2e test' }
    assert.deepEqual({ ...written.metadata }, expected)
    assert.deepEqual({ ...(await sandbox.files.getInfo(path)).metadata }, expected)
    const listed = await sandbox.files.list(`${scratch.dir}/meta`)
    assert.deepEqual({ ...listed.find((e) => e.name === 'tagged.txt').metadata }, expected)
    // Stored as user.e2b.* extended attributes, visible to tools in the
    // sandbox (checked where the template has python3; getfattr is rarer).
    const xattr = await sandbox.commands.run(
      `if command -v python3 >/dev/null; then python3 -c "import os,sys; print(os.getxattr(sys.argv[1], 'user.e2b.author').decode())" ${path}; else echo no-python; fi`,
    )
    assert.ok(['Mish', 'no-python'].includes(xattr.stdout.trim()), xattr.stdout)

    const renamed = await sandbox.files.rename(path, `${scratch.dir}/meta/renamed.txt`)
    assert.deepEqual({ ...renamed.metadata }, expected)

    // The octet-stream upload carries it too, and each write replaces the set.
    const octet = await sandbox.files.write(`${scratch.dir}/meta/renamed.txt`, 'again', {
      useOctetStream: true,
      metadata: { stage: 'second' },
    })
    assert.deepEqual({ ...octet.metadata }, { stage: 'second' })
    const second = await sandbox.files.getInfo(`${scratch.dir}/meta/renamed.txt`)
    assert.deepEqual({ ...second.metadata }, { stage: 'second' })

    // A write without metadata clears it.
    const plain = await sandbox.files.write(`${scratch.dir}/meta/renamed.txt`, 'plain')
    assert.equal(plain.metadata, undefined)
    assert.equal((await sandbox.files.getInfo(`${scratch.dir}/meta/renamed.txt`)).metadata, undefined)

    // The SDK refuses keys that cannot be header names; envd refuses what
    // cannot be stored (over the 4 KiB per-file budget) with a 400.
    const badKey = await rejection(() =>
      sandbox.files.write(`${scratch.dir}/meta/bad.txt`, 'x', { metadata: { 'no spaces': '1' } }),
    )
    assert.ok(badKey instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${explain(badKey)}`)
    const tooBig = await rejection(() =>
      sandbox.files.write(`${scratch.dir}/meta/big.txt`, 'x', { metadata: { big: 'v'.repeat(5000) } }),
    )
    assert.ok(tooBig instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${explain(tooBig)}`)
    assert.match(tooBig.message, /limit is 4096/)
    assert.equal(await sandbox.files.exists(`${scratch.dir}/meta/big.txt`), false)
  })

  it('owns written files by the requesting user', async () => {
    const mine = `${scratch.dir}/owned-by-user.txt`
    await sandbox.files.write(mine, 'u')
    assert.equal((await sandbox.files.getInfo(mine)).owner, DEFAULT_USER)
    const rootFile = `${scratch.dir}/owned-by-root.txt`
    await sandbox.files.write(rootFile, 'r', { user: 'root' })
    const info = await sandbox.files.getInfo(rootFile)
    assert.equal(info.owner, 'root')
    assert.equal(info.group, 'root')
    const ls = await sandbox.commands.run(`stat -c %U ${mine} ${rootFile}`)
    assert.equal(ls.stdout, `${DEFAULT_USER}\nroot\n`)
  })

  it('reports missing files with FileNotFoundError', async () => {
    const missing = `${scratch.dir}/does-not-exist.txt`
    for (const [what, call] of [
      ['read', () => sandbox.files.read(missing)],
      ['getInfo', () => sandbox.files.getInfo(missing)],
      ['list', () => sandbox.files.list(`${missing}/`)],
      ['rename', () => sandbox.files.rename(missing, `${missing}.2`)],
    ]) {
      const err = await rejection(call)
      assert.ok(err instanceof FileNotFoundError, `${what}: expected FileNotFoundError, got ${explain(err)}`)
      assert.ok(err instanceof NotFoundError)
    }
  })

  it('refuses to read a directory as a file', async () => {
    const err = await rejection(() => sandbox.files.read(scratch.dir))
    assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${explain(err)}`)
  })
})
