// Steps of run-restart.sh, through the official JS SDK. State between steps
// (sandbox ids, boot ids) is kept in the file named by RESTART_STATE.
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { Sandbox } from 'e2b'

const stateFile = process.env.RESTART_STATE
const load = () => JSON.parse(readFileSync(stateFile, 'utf8'))
const save = (s) => writeFileSync(stateFile, JSON.stringify(s))
const bootId = async (s) => (await s.commands.run('cat /proc/sys/kernel/random/boot_id')).stdout.trim()

const steps = {
  // Two sandboxes with files: one running, one paused with its memory.
  async before() {
    const a = await Sandbox.create('base', { timeoutMs: 600_000 })
    await a.files.write('/home/user/a.txt', 'written before the stop')
    // Its own session: not a command of envd's that ends with this client.
    await a.commands.run('setsid nohup sleep 600 >/dev/null 2>&1 </dev/null &')
    assert.equal((await a.commands.run('pgrep -x sleep >/dev/null && echo alive || echo none')).stdout.trim(), 'alive')
    const b = await Sandbox.create('base', { timeoutMs: 600_000 })
    await b.files.write('/home/user/b.txt', 'paused before the stop')
    assert.equal(await b.pause(), true)
    save({ a: a.sandboxId, b: b.sandboxId, bootA: await bootId(a) })
  },
  // After a clean stop: both paused, nothing written lost; A comes back with
  // its processes where criu works, else boots afresh on its files.
  async afterStop() {
    const s = load()
    const listed = await Sandbox.list({ query: { state: ['paused'] } }).nextItems()
    const ids = listed.map((x) => x.sandboxId)
    assert.ok(ids.includes(s.a) && ids.includes(s.b), `both paused after the stop: ${ids}`)
    const a = await Sandbox.connect(s.a)
    assert.equal(await a.files.read('/home/user/a.txt'), 'written before the stop')
    const sleeping = (await a.commands.run('pgrep -x sleep >/dev/null && echo alive || echo none')).stdout.trim()
    if (process.env.E2E_CRIU === '1') {
      // The stop checkpointed it: the same boot goes on, its process too.
      assert.equal(await bootId(a), s.bootA, 'the same boot, restored with its processes')
      assert.equal(sleeping, 'alive', 'its background process came back')
    } else {
      assert.notEqual(await bootId(a), s.bootA, 'a fresh boot on the kept files')
      assert.equal(sleeping, 'none', 'a boot on the files has none of the old processes')
    }
    await a.files.write('/home/user/a2.txt', 'written before the crash')
    await a.commands.run('sync')
    const b = await Sandbox.connect(s.b)
    assert.equal(await b.files.read('/home/user/b.txt'), 'paused before the stop')
    await b.kill()
  },
  // After kill -9 of the server: A's files are still there.
  async afterCrash() {
    const s = load()
    const info = await Sandbox.getInfo(s.a)
    assert.equal(info.state, 'paused', 'a sandbox found on disk after a crash comes back paused')
    const a = await Sandbox.connect(s.a)
    assert.equal(await a.files.read('/home/user/a.txt'), 'written before the stop')
    assert.equal(await a.files.read('/home/user/a2.txt'), 'written before the crash')
    assert.equal(await Sandbox.getInfo(s.b).then(() => 'found', () => 'gone'), 'gone', 'the killed one stays killed')
    await a.kill()
  },
}

const step = process.argv[2]
if (!steps[step]) throw new Error(`unknown step ${step}`)
await steps[step]()
console.log(`ok - ${step}`)
