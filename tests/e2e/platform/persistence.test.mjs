// Sandboxes that last, through the official JS SDK: pause in both modes and
// resume (connect), snapshots and sandboxes started from them, fork, list by
// state, auto-pause at the timeout and auto-resume on a request, the disk
// quota, and the error shapes.
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { Sandbox, SandboxNotFoundError } from 'e2b'
import { RUN_ID, TEMPLATE, create, fetchUntil, httpServer, killAll } from './helpers.mjs'

after(killAll)

const bootId = async (s) => (await s.commands.run('cat /proc/sys/kernel/random/boot_id')).stdout.trim()
const read = async (s, path) => (await s.commands.run(`cat ${path}`)).stdout
/** The server carries processes in snapshots and forks (criu works there). */
const CRIU = process.env.E2E_CRIU === '1'
/** Starts a background process (a python that sleeps) and waits until it runs. */
async function startKeeper(s) {
  await s.commands.run(`python3 -c "import time; open('/tmp/keeper','w').write('up'); time.sleep(10**6)"`, { background: true })
  await s.commands.run('for i in $(seq 100); do [ -s /tmp/keeper ] && exit 0; sleep 0.05; done; exit 1')
}
/** 'alive' when the keeper runs in `s` ([.]: the asking shell's own line must not match). */
const keeper = async (s) => (await s.commands.run('pgrep -f "time[.]sleep" >/dev/null && echo alive || echo none')).stdout.trim()

/** Waits until the API shows the sandbox in `state`. */
async function waitForState(id, state, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const info = await Sandbox.getInfo(id)
    if (info.state === state) return info
    if (Date.now() > deadline) assert.fail(`sandbox ${id} is ${info.state}, not ${state}, after ${timeoutMs} ms`)
    await sleep(200)
  }
}

describe('pause and resume', () => {
  test('a full pause keeps processes and the boot; connect resumes it', async () => {
    const sbx = await create()
    await sbx.files.write('/home/user/before.txt', 'written before the pause')
    await sbx.commands.run('sleep 600', { background: true })
    const boot = await bootId(sbx)

    assert.equal(await sbx.pause(), true)
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
    assert.equal(await Sandbox.pause(sbx.sandboxId), false, 'pausing twice answers 409, which pause() reports as false')
    const paused = await Sandbox.list({ query: { state: ['paused'], metadata: { run: RUN_ID } } }).nextItems()
    assert.ok(paused.some((s) => s.sandboxId === sbx.sandboxId), 'listed as paused')
    const running = await Sandbox.list({ query: { state: ['running'], metadata: { run: RUN_ID } } }).nextItems()
    assert.ok(!running.some((s) => s.sandboxId === sbx.sandboxId), 'not listed as running')

    const resumed = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running')
    assert.equal(await bootId(resumed), boot, 'the same boot')
    assert.equal(await read(resumed, '/home/user/before.txt'), 'written before the pause')
    assert.match((await resumed.commands.run('pgrep -x sleep')).stdout, /^\d+\n$/, 'the background process lives on')
  })

  test('a filesystem pause keeps the files and boots afresh', async () => {
    const sbx = await create()
    await sbx.files.write('/home/user/note.txt', 'kept')
    await sbx.commands.run('sleep 600', { background: true })
    const boot = await bootId(sbx)

    assert.equal(await sbx.pause({ keepMemory: false }), true)
    const info = await Sandbox.getInfo(sbx.sandboxId)
    assert.equal(info.state, 'paused')
    const resumed = await sbx.connect()
    assert.notEqual(await bootId(resumed), boot, 'a new boot')
    assert.equal(await read(resumed, '/home/user/note.txt'), 'kept')
    const procs = await resumed.commands.run('pgrep -x sleep || echo none')
    assert.equal(procs.stdout, 'none\n', 'processes do not survive a filesystem pause')
  })

  test('pause and connect of an unknown sandbox are not found', async () => {
    await assert.rejects(Sandbox.pause('nosuchsandbox0000000'), SandboxNotFoundError)
    await assert.rejects(Sandbox.connect('nosuchsandbox0000000'), SandboxNotFoundError)
  })
})

describe('snapshots and forks', () => {
  test('a snapshot feeds three independent sandboxes; the source runs on', async () => {
    const src = await create()
    await src.files.write('/home/user/state.txt', 'v1')
    await src.commands.run('mkdir -p /home/user/tree && seq 1 1000 > /home/user/tree/numbers')
    // /dev/shm is a tmpfs of its own: what is in it comes along too.
    await src.commands.run('echo shared > /dev/shm/kept')
    await startKeeper(src)
    const snap = await src.createSnapshot()
    assert.ok(snap.snapshotId, JSON.stringify(snap))
    assert.equal((await Sandbox.getInfo(src.sandboxId)).state, 'running')
    await src.files.write('/home/user/state.txt', 'v2 (after the snapshot)')

    const kids = []
    for (let i = 0; i < 3; i++) {
      const kid = await Sandbox.create(snap.snapshotId, { timeoutMs: 120_000, metadata: { run: RUN_ID } })
      kids.push(kid)
    }
    for (const kid of kids) {
      assert.equal(await read(kid, '/home/user/state.txt'), 'v1')
      assert.equal((await kid.commands.run('wc -l < /home/user/tree/numbers')).stdout, '1000\n')
      if (CRIU) assert.equal(await read(kid, '/dev/shm/kept'), 'shared\n', "a restored copy has the source's /dev/shm")
      assert.equal(await keeper(kid), CRIU ? 'alive' : 'none', CRIU ? "criu works here: the snapshot's processes come along" : 'without criu a snapshot keeps files only')
    }
    await kids[0].files.write('/home/user/state.txt', 'mine')
    assert.equal(await read(kids[1], '/home/user/state.txt'), 'v1', 'each is independent')
    assert.equal(await read(src, '/home/user/state.txt'), 'v2 (after the snapshot)')

    const listed = []
    const pages = Sandbox.listSnapshots({ sandboxId: src.sandboxId })
    while (pages.hasNext) listed.push(...(await pages.nextItems()))
    assert.ok(listed.some((s) => s.snapshotId === snap.snapshotId), JSON.stringify(listed))
    await Promise.all(kids.map((k) => k.kill()))
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false, 'a deleted snapshot is not found')
    await assert.rejects(Sandbox.create(snap.snapshotId), /not found/i)
  })

  test('a named snapshot is found by its name', async () => {
    const src = await create()
    await src.files.write('/home/user/named.txt', 'by name')
    const name = `snap-${RUN_ID}`
    const snap = await src.createSnapshot({ name })
    assert.match(snap.snapshotId, new RegExp(`/${name}:default$`))
    assert.ok(snap.names.some((n) => n.endsWith(`/${name}`)), JSON.stringify(snap))
    const kid = await Sandbox.create(name, { timeoutMs: 60_000, metadata: { run: RUN_ID } })
    assert.equal(await read(kid, '/home/user/named.txt'), 'by name')
    await kid.kill()
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
  })

  test('fork x3 inherits the files; each fork is a sandbox of its own', async () => {
    const src = await create({ envs: { FROM: 'the source' } })
    await src.files.write('/home/user/forked.txt', 'inherited')
    await startKeeper(src)
    const forks = await src.fork({ count: 3, timeoutMs: 60_000 })
    assert.equal(forks.length, 3)
    const ids = new Set()
    for (const f of forks) {
      assert.ok(f instanceof Sandbox, String(f))
      ids.add(f.sandboxId)
      assert.equal(await read(f, '/home/user/forked.txt'), 'inherited')
      assert.equal((await f.commands.run('echo $FROM')).stdout, 'the source\n', 'env vars come along')
      // An empty /dev/shm is not in the images: each copy gets a new one.
      assert.equal((await f.commands.run(`echo ${f.sandboxId} > /dev/shm/own && cat /dev/shm/own && stat -f -c %T /dev/shm`)).stdout, `${f.sandboxId}\ntmpfs\n`)
      assert.equal(await keeper(f), CRIU ? 'alive' : 'none', CRIU ? "criu works here: a fork has the source's processes" : 'without criu a fork has files only')
    }
    assert.equal(ids.size, 3)
    assert.ok(!ids.has(src.sandboxId))
    await forks[0].files.write('/home/user/forked.txt', 'changed in one fork')
    assert.equal(await read(forks[1], '/home/user/forked.txt'), 'inherited')
    assert.equal(await read(src, '/home/user/forked.txt'), 'inherited')
    await Promise.all(forks.map((f) => f.kill()))
  })
})

describe('lifecycle', () => {
  test('onTimeout pause, then a request to its URL resumes it (full pause)', async () => {
    const sbx = await Sandbox.create(TEMPLATE, {
      timeoutMs: 4_000,
      metadata: { run: RUN_ID },
      lifecycle: { onTimeout: 'pause', autoResume: true },
    })
    await httpServer(sbx, 8123)
    const url = `https://${sbx.getHost(8123)}`
    assert.equal((await fetchUntil(url, (r) => r.status === 200)).status, 200)
    const info = await waitForState(sbx.sandboxId, 'paused')
    assert.deepEqual(info.lifecycle, { autoResume: true, onTimeout: 'pause' })
    // The request wakes it and is served by the same server process.
    const res = await fetch(url)
    assert.equal(res.status, 200, await res.text())
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running')
    await sbx.kill()
  })

  test('a filesystem auto-pause resumes on a request too, once its start command serves', async (t) => {
    if (!process.env.E2E_CODE_INTERPRETER) return t.skip('needs the code-interpreter-v1 template (its start command serves port 49999)')
    // The SDK refuses filesystem + autoResume on the client (E2B refuses it);
    // sandbar does it, so this goes to the REST API itself.
    const res = await fetch(`${process.env.E2B_API_URL}/v2/sandboxes`, {
      method: 'POST',
      headers: { 'X-API-KEY': process.env.E2B_API_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({
        templateID: 'code-interpreter-v1',
        timeout: 3,
        autoPause: true,
        autoPauseMemory: false,
        autoResume: { enabled: true },
        metadata: { run: RUN_ID },
      }),
    })
    const created = await res.json()
    assert.equal(res.status, 201, JSON.stringify(created))
    const id = created.sandboxID
    try {
      const info = await waitForState(id, 'paused')
      assert.equal(info.lifecycle.onTimeout, 'pause')
      const host = `49999-${id}.${created.domain}`
      const health = await fetchUntil(`https://${host}/health`, (r) => r.status === 200, { timeoutMs: 30_000 })
      assert.equal(health.status, 200, health.body)
      assert.equal((await Sandbox.getInfo(id)).state, 'running')
    } finally {
      await Sandbox.kill(id)
    }
  })

  test('autoResume without autoPause is a 400', async () => {
    const res = await fetch(`${process.env.E2B_API_URL}/v2/sandboxes`, {
      method: 'POST',
      headers: { 'X-API-KEY': process.env.E2B_API_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ templateID: TEMPLATE, autoResume: { enabled: true } }),
    })
    assert.equal(res.status, 400)
    assert.equal((await res.json()).code, 400)
  })
})

describe('disk', () => {
  test('the disk size is a hard quota: ENOSPC inside, the sandbox lives on', async () => {
    const sbx = await create()
    const info = await Sandbox.getInfo(sbx.sandboxId)
    const detail = await (
      await fetch(`${process.env.E2B_API_URL}/sandboxes/${sbx.sandboxId}`, { headers: { 'X-API-KEY': process.env.E2B_API_KEY } })
    ).json()
    assert.ok(detail.diskSizeMB > 0, JSON.stringify(detail))
    const r = await sbx.commands.run(`fallocate -l ${detail.diskSizeMB + 100}M /home/user/huge 2>&1; echo rc=$?`)
    assert.match(r.stdout, /quota exceeded|No space left/i, r.stdout)
    assert.match(r.stdout, /rc=1/)
    // Files do not count against memory: write more than the memory limit.
    const w = await sbx.commands.run(`dd if=/dev/zero of=/home/user/f bs=1M count=${info.memoryMB + 64} 2>&1 | tail -1; sync; echo ok`, {
      timeoutMs: 120_000,
    })
    assert.match(w.stdout, /ok\n$/, w.stdout)
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n')
  })
})
