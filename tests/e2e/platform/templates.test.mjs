// Custom templates through the official JS SDK's builder: every step type
// and builder method, files uploaded and copied, the step cache (an
// unchanged rebuild runs nothing, a changed last step runs only it,
// skipCache runs everything), start and ready commands, tags, exists,
// background builds, a failing step, bad input, a template rebuilt while a
// sandbox of it runs, delete; then sandboxes of the templates.
import { after, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { BuildError, Sandbox, Template, waitForFile, waitForPort, waitForTimeout, waitForURL } from 'e2b'
import { RUN_ID, fetchUntil, killAll } from './helpers.mjs'

after(killAll)

const context = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'template')
const api = process.env.E2B_API_URL
const auth = { 'X-API-Key': process.env.E2B_API_KEY, 'content-type': 'application/json' }
const made = []
after(async () => {
  for (const id of made) await fetch(`${api}/templates/${id}`, { method: 'DELETE', headers: auth }).catch(() => {})
})

/** A unique template name of this run. */
const nameOf = (what) => `${what}-${RUN_ID}`.toLowerCase()

/** Builds `t` as `name`, collecting its log lines. */
async function build(t, name, opts = {}) {
  const logs = []
  const info = await Template.build(t, name, { ...opts, onBuildLogs: (l) => logs.push(l.message) })
  made.push(info.templateId)
  return { info, logs }
}

const sandboxes = []
after(async () => Promise.all(sandboxes.map((s) => s.kill().catch(() => false))))
async function sandboxOf(name) {
  const s = await Sandbox.create(name, { timeoutMs: 120_000, metadata: { run: RUN_ID } })
  sandboxes.push(s)
  return s
}
const sh = async (s, cmd, opts) => (await s.commands.run(cmd, opts)).stdout

const appTemplate = () =>
  Template({ fileContextPath: context })
    .fromTemplate('base')
    // Unique to the run: a server reused across runs has the team's step
    // cache from before.
    .runCmd(`echo ${RUN_ID} > /home/user/run-id`)
    .copy('app', '/srv/app/')
    .copy('hello.txt', '/home/user/hello.txt', { mode: 0o640 })
    .copy('setup.sh', '/opt/setup/', { user: 'root' })
    .runCmd('bash /opt/setup/setup.sh > /home/user/setup.out')
    .runCmd(['id -un > /tmp/who-root', 'touch /etc/made-by-root'], { user: 'root' })
    .setEnvs({ GREETING: 'hi there', SECOND: 'two' })
    .makeDir('/home/user/data/nested')
    .makeSymlink('/home/user/hello.txt', '/home/user/hello-link')
    .runCmd('echo gone > /home/user/old.txt && echo renamed > /home/user/before.txt')
    .remove('/home/user/old.txt')
    .rename('/home/user/before.txt', '/home/user/after.txt')
    .runCmd('git init -q /tmp/origin && git -C /tmp/origin -c user.email=a@b -c user.name=a commit -q --allow-empty -m first')
    .gitClone('/tmp/origin', '/home/user/clone')
    .setWorkdir('/srv/app')
    .setStartCmd('python3 -m http.server 3000', waitForPort(3000))

describe('a template from base with every step', () => {
  const name = nameOf('app')
  let first

  test('builds, with a log line per step', async () => {
    first = await build(appTemplate(), name, { cpuCount: 1, memoryMB: 512 })
    assert.ok(first.info.templateId, 'a template id')
    assert.ok(first.info.buildId, 'a build id')
    const steps = first.logs.filter((l) => /^\[\d+\/\d+\] /.test(l))
    assert.ok(steps.length >= 14, `a line per step:\n${first.logs.join('\n')}`)
    assert.ok(first.logs.some((l) => l.startsWith('Start command ready')), first.logs.join('\n'))
    assert.equal(await Template.exists(name), true)
    assert.equal(await Template.exists(nameOf('never-built')), false)
  })

  test('its sandboxes have the files, owners, env vars, workdir and running server', async () => {
    const s = await sandboxOf(name)
    const info = await Sandbox.getInfo(s.sandboxId)
    assert.equal(info.cpuCount, 1, "the build's cpuCount is its sandboxes'")
    assert.equal(info.memoryMB, 512)
    assert.equal(info.templateId, first.info.templateId, 'the sandbox names its template')
    assert.equal((await sh(s, 'pwd')).trim(), '/srv/app', 'the template workdir is the default cwd')
    assert.equal((await sh(s, 'whoami')).trim(), 'user')
    assert.equal(await sh(s, 'cat /srv/app/index.html'), '<h1>templated app</h1>\n')
    assert.equal(await sh(s, 'cat /srv/app/static/data.txt'), 'kept by COPY\n', 'a directory copies its contents')
    assert.equal((await sh(s, 'stat -c "%U %a" /home/user/hello.txt')).trim(), 'user 640', 'owner and mode of a copy')
    assert.equal((await sh(s, 'stat -c %U /opt/setup/setup.sh')).trim(), 'root', 'a copy as another user')
    assert.equal(await sh(s, 'cat /home/user/setup.out'), 'run from the copied script\n')
    assert.equal(await sh(s, 'cat /tmp/who-root'), 'root\n')
    assert.equal((await sh(s, 'stat -c %U /etc/made-by-root')).trim(), 'root')
    assert.equal(await sh(s, 'echo "$GREETING/$SECOND"'), 'hi there/two\n')
    assert.equal((await sh(s, 'test -d /home/user/data/nested && readlink /home/user/hello-link')).trim(), '/home/user/hello.txt')
    assert.equal(await sh(s, 'ls /home/user/old.txt 2>/dev/null; cat /home/user/after.txt'), 'renamed\n')
    assert.equal((await sh(s, 'git -C /home/user/clone log --format=%s')).trim(), 'first')
    // The start command serves the workdir, and is up when create returns.
    const res = await fetch(`https://${s.getHost(3000)}`)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), '<h1>templated app</h1>\n')
    // A caller's env vars win over the template's.
    const own = await Sandbox.create(name, { envs: { GREETING: 'mine' }, metadata: { run: RUN_ID } })
    sandboxes.push(own)
    assert.equal(await sh(own, 'echo $GREETING $SECOND'), 'mine two\n')
  })

  test("a snapshot's copies run as their source: workdir, user, env vars, and the start command on a boot", async () => {
    const s = await Sandbox.create(name, { envs: { OWN: 'kept' } })
    sandboxes.push(s)
    await sh(s, 'echo written > /srv/app/later.txt', { user: 'root' })
    const headers = { 'X-API-KEY': process.env.E2B_API_KEY, 'content-type': 'application/json' }
    for (const memory of [undefined, false]) {
      const res = await fetch(`${process.env.E2B_API_URL}/sandboxes/${s.sandboxId}/snapshots`, {
        method: 'POST',
        headers,
        body: JSON.stringify(memory === undefined ? {} : { memory }),
      })
      assert.equal(res.status, 201, await res.clone().text())
      const snap = (await res.json()).snapshotID
      const copy = await Sandbox.create(snap)
      sandboxes.push(copy)
      const what = `copy (memory: ${memory})`
      assert.equal((await sh(copy, 'pwd')).trim(), '/srv/app', `${what}: the template's workdir`)
      assert.equal((await sh(copy, 'whoami')).trim(), 'user', what)
      assert.equal(await sh(copy, 'echo "$GREETING/$SECOND/$OWN"'), 'hi there/two/kept\n', `${what}: env vars`)
      assert.equal(await sh(copy, 'cat later.txt'), 'written\n', what)
      // Its server: the one restored, or started again on a boot.
      const served = await fetchUntil(`https://${copy.getHost(3000)}/later.txt`, (r) => r.status === 200)
      assert.equal(served.status, 200, `${what}: its server`)
      assert.equal(served.body, 'written\n', what)
    }
  })

  test('an unchanged rebuild runs nothing; a changed last step runs only it', async () => {
    const again = await build(appTemplate(), name)
    const ran = again.logs.filter((l) => /^\[\d+\/\d+\] /.test(l))
    assert.deepEqual(ran, [], `nothing runs:\n${again.logs.join('\n')}`)
    assert.ok(again.logs.filter((l) => l.startsWith('CACHED [')).length >= 14)
    assert.equal(again.info.templateId, first.info.templateId, 'the same template')
    assert.notEqual(again.info.buildId, first.info.buildId, 'a new build')

    const changed = appTemplate().runCmd('echo last > /home/user/last.txt')
    const third = await build(changed, name)
    const ranNow = third.logs.filter((l) => /^\[\d+\/\d+\] /.test(l))
    assert.equal(ranNow.length, 1, third.logs.join('\n'))
    assert.match(ranNow[0], /echo last/)
    const s = await sandboxOf(name)
    assert.equal(await sh(s, 'cat /home/user/last.txt'), 'last\n')
  })

  test('skipCache runs every step again', async () => {
    const t = Template().fromTemplate('base').runCmd(`date +%s%N > /home/user/stamp # ${RUN_ID}`).runCmd('true')
    const n = nameOf('skip')
    await build(t, n)
    const s1 = await sandboxOf(n)
    const stamp1 = await sh(s1, 'cat /home/user/stamp')
    const cached = await build(t, n)
    assert.equal(cached.logs.filter((l) => /^\[\d+\/\d+\] /.test(l)).length, 0)
    const forced = await build(Template().fromTemplate('base').skipCache().runCmd(`date +%s%N > /home/user/stamp # ${RUN_ID}`).runCmd('true'), n)
    assert.equal(forced.logs.filter((l) => /^\[\d+\/\d+\] /.test(l)).length, 2, forced.logs.join('\n'))
    const option = await build(t, n, { skipCache: true })
    assert.equal(option.logs.filter((l) => /^\[\d+\/\d+\] /.test(l)).length, 2, `the skipCache build option too:\n${option.logs.join('\n')}`)
    const s2 = await sandboxOf(n)
    assert.notEqual(await sh(s2, 'cat /home/user/stamp'), stamp1, 'the step ran again')
    assert.equal(await sh(s1, 'cat /home/user/stamp'), stamp1, 'a sandbox of the old build keeps its files')
  })
})

describe('start and ready commands', () => {
  test('waitForURL, waitForFile and a template built from another', async () => {
    const web = nameOf('web')
    await build(
      Template().fromTemplate('base').runCmd(`mkdir -p /home/user/site && echo ok > /home/user/site/health # ${RUN_ID}`)
        .setStartCmd('cd /home/user/site && python3 -m http.server 8080', waitForURL('http://localhost:8080/health')),
      web,
    )
    const s = await sandboxOf(web)
    const res = await fetchUntil(`https://${s.getHost(8080)}/health`, (r) => r.status === 200, { timeoutMs: 1000 })
    assert.equal(res.body, 'ok\n', 'up when create returns')

    const child = nameOf('child')
    await build(
      Template().fromTemplate(web).runCmd('echo child > /home/user/child.txt')
        .setStartCmd('sleep 0.3; touch /tmp/started; sleep infinity', waitForFile('/tmp/started')),
      child,
    )
    const c = await sandboxOf(child)
    assert.equal(await sh(c, 'cat /home/user/site/health /home/user/child.txt'), 'ok\nchild\n', 'the parent template\'s files')
    assert.equal((await sh(c, 'test -f /tmp/started && echo yes')).trim(), 'yes')
  })

  test('waitForTimeout, fromBaseImage', async () => {
    const n = nameOf('timeout')
    const { logs } = await build(
      Template().fromBaseImage().runCmd(`echo ${RUN_ID} > /home/user/base-image`).setStartCmd('sleep infinity', waitForTimeout(1000)),
      n,
    )
    assert.ok(logs.some((l) => l.includes("e2bdev/base is the built-in template 'base'")), logs.join('\n'))
    assert.ok(logs.some((l) => l.includes('ready after 1 check(s) of `sleep 1`')), logs.join('\n'))
    const s = await sandboxOf(n)
    assert.equal(await sh(s, 'cat /home/user/base-image'), `${RUN_ID}\n`)
    assert.equal((await s.commands.run('pgrep -x sleep')).exitCode, 0, 'the start command runs')
  })

  test('a start command that never gets ready fails the build at finalize', async () => {
    const t = Template().fromTemplate('base').setStartCmd('exit 4', waitForPort(3999))
    await assert.rejects(build(t, nameOf('never-ready')), (e) => {
      assert.ok(e instanceof BuildError, `${e}`)
      assert.match(e.message, /start command exited with code 4/)
      return true
    })
  })
})

describe('tags, background builds, failures', () => {
  test('tags: build with one, assign, list, remove', async () => {
    const n = nameOf('tagged')
    const { info } = await build(Template().fromTemplate('base').runCmd('echo v1 > /home/user/v'), `${n}:v1`)
    assert.deepEqual(info.tags, ['v1'])
    const s = await sandboxOf(`${n}:v1`)
    assert.equal(await sh(s, 'cat /home/user/v'), 'v1\n')
    const assigned = await Template.assignTags(`${n}:v1`, ['prod', 'stable'])
    assert.deepEqual(assigned.tags, ['prod', 'stable'])
    assert.equal(assigned.buildId, info.buildId)
    const tags = (await Template.getTags(info.templateId)).map((t) => t.tag).sort()
    assert.deepEqual(tags, ['prod', 'stable', 'v1'])
    await sandboxOf(`${n}:prod`)
    await Template.removeTags(n, 'prod')
    await assert.rejects(Sandbox.create(`${n}:prod`), /no ready build tagged 'prod'/)
    await assert.rejects(Sandbox.create(n), /no ready build tagged 'default'/, 'no default tag was given')
  })

  test('builds run at once, each on its own', async () => {
    const names = [nameOf('par-a'), nameOf('par-b'), nameOf('par-c')]
    await Promise.all(names.map((n, i) => build(Template().fromTemplate('base').runCmd(`sleep 1; echo ${i} > /home/user/which # ${RUN_ID}`), n)))
    for (const [i, n] of names.entries()) {
      const s = await sandboxOf(n)
      assert.equal(await sh(s, 'cat /home/user/which'), `${i}\n`)
    }
  })

  test('a team runs at most 4 builds at once; one more is told to wait', async () => {
    const slow = (i) => Template().fromTemplate('base').runCmd(`sleep 3; echo ${i} # ${RUN_ID}`)
    const running = []
    for (let i = 0; i < 4; i++) {
      const info = await Template.buildInBackground(slow(i), nameOf(`busy-${i}`))
      made.push(info.templateId)
      running.push(info)
    }
    // A fifth, asked for raw: 429 with Retry-After (the SDKs retry after it).
    const r = await fetch(`${api}/v3/templates`, { method: 'POST', headers: auth, body: JSON.stringify({ name: nameOf('busy-4') }) })
    const { templateID, buildID } = await r.json()
    made.push(templateID)
    const refused = await fetch(`${api}/v2/templates/${templateID}/builds/${buildID}`, {
      method: 'POST', headers: auth, body: JSON.stringify({ fromTemplate: 'base', steps: [{ type: 'RUN', args: ['true'] }] }),
    })
    assert.equal(refused.status, 429)
    assert.ok(Number(refused.headers.get('retry-after')) > 0, 'Retry-After')
    assert.match((await refused.json()).message, /runs 4 template builds already/)
    // Through the SDK it waits its turn: accepted once a build has ended.
    const fifth = await Template.buildInBackground(slow(4), nameOf('busy-sdk'))
    made.push(fifth.templateId)
    const ended = await Promise.all(running.map(async (info) => (await Template.getBuildStatus(info)).status))
    assert.ok(ended.some((st) => st === 'ready'), `accepted only after one of the four ended: ${ended}`)
    running.push(fifth)
    for (const info of running) {
      for (let i = 0; i < 300; i++) {
        const st = await Template.getBuildStatus(info)
        if (st.status === 'ready' || st.status === 'error') {
          assert.equal(st.status, 'ready')
          break
        }
        await sleep(100)
      }
    }
  })

  test('registries sandbar cannot log in to answer why', async () => {
    const t = Template().fromAWSRegistry('123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1', {
      accessKeyId: 'AKIA0000000000000000', secretAccessKey: 'x', region: 'us-east-1',
    }).runCmd('true')
    await assert.rejects(build(t, nameOf('aws')), /400.*fromImageRegistry type 'aws' is not supported/)
    const g = Template().fromGCPRegistry('europe-docker.pkg.dev/p/r/app:1', { serviceAccountJSON: { type: 'service_account' } }).runCmd('true')
    await assert.rejects(build(g, nameOf('gcp')), /400.*fromImageRegistry type 'gcp' is not supported/)
  })

  test('aptInstall, pipInstall, npmInstall from the package registries', { skip: !process.env.E2E_REGISTRY_AUTH && 'needs the runner (its server opens the registries)' }, async () => {
    const n = nameOf('packages')
    const t = Template()
      .fromTemplate('base')
      .runCmd(`echo ${RUN_ID}`)
      .aptInstall(['cowsay'], { noInstallRecommends: true })
      .pipInstall(['tomli-w==1.0.0'])
      .npmInstall(['left-pad@1.3.0'], { g: true })
    const { logs } = await build(t, n)
    assert.ok(logs.some((l) => /^\[2\/4\] RUN \(as root\) apt-get update/.test(l)), logs.join('\n'))
    const s = await sandboxOf(n)
    assert.equal((await s.commands.run('test -x /usr/games/cowsay && echo apt')).stdout, 'apt\n')
    assert.equal((await s.commands.run('python3 -c "import tomli_w; print(tomli_w.dumps({\'a\': 1}).strip())"')).stdout, 'a = 1\n')
    assert.equal((await s.commands.run('test -d "$(npm root -g)/left-pad" && echo npm')).stdout, 'npm\n')
  })

  test('buildInBackground and getBuildStatus', async () => {
    const n = nameOf('bg')
    const info = await Template.buildInBackground(Template().fromTemplate('base').runCmd(`sleep 1; echo from-background # ${RUN_ID}`), n)
    made.push(info.templateId)
    let status
    const lines = []
    for (let i = 0; i < 600; i++) {
      status = await Template.getBuildStatus(info, { logsOffset: lines.length })
      lines.push(...status.logEntries.map((l) => l.message))
      if (status.status === 'ready' || status.status === 'error') break
      await sleep(100)
    }
    assert.equal(status.status, 'ready', lines.join('\n'))
    status = await Template.getBuildStatus(info, { logsOffset: lines.length })
    lines.push(...status.logEntries.map((l) => l.message))
    assert.ok(lines.includes('from-background'), lines.join('\n'))
  })

  test('a failing step raises BuildError naming the step, with its output', async () => {
    const logs = []
    const t = Template().fromTemplate('base').runCmd(`echo fine # ${RUN_ID}`).runCmd('echo about to fail >&2; exit 3').runCmd('echo never')
    await assert.rejects(Template.build(t, nameOf('fails'), { onBuildLogs: (l) => logs.push(l.message) }), (e) => {
      assert.ok(e instanceof BuildError, `${e}`)
      assert.match(e.message, /step 2: `echo about to fail >&2; exit 3` failed with exit code 3/)
      return true
    })
    assert.ok(logs.includes('about to fail'), logs.join('\n'))
    assert.ok(!logs.includes('never'))
  })

  test('bad input is a 400 with a message', async () => {
    await assert.rejects(build(Template().fromTemplate('base').runCmd('true'), 'Not A Name'), /400.*template name/)
    await assert.rejects(build(Template().fromTemplate('no-such-template-x').runCmd('true'), nameOf('nobase')), /400.*no such template/)
    await assert.rejects(build(Template().fromTemplate('base').runCmd('true'), 'base'), /400.*built-in/)
    // Raw: a bad step type, a COPY whose files were never uploaded.
    const r = await fetch(`${api}/v3/templates`, { method: 'POST', headers: auth, body: JSON.stringify({ name: nameOf('raw') }) })
    assert.equal(r.status, 202)
    const { templateID, buildID } = await r.json()
    made.push(templateID)
    const start = (body) => fetch(`${api}/v2/templates/${templateID}/builds/${buildID}`, { method: 'POST', headers: auth, body: JSON.stringify(body) })
    let res = await start({ fromTemplate: 'base', steps: [{ type: 'FROB', args: [] }] })
    assert.equal(res.status, 400)
    assert.match((await res.json()).message, /unknown step type 'FROB'/)
    res = await start({ fromTemplate: 'base', steps: [{ type: 'COPY', args: ['a', '/b'], filesHash: 'f'.repeat(64) }] })
    assert.equal(res.status, 400)
    assert.match((await res.json()).message, /step 1 \(COPY\): its files .* were not uploaded/)
    res = await fetch(`${api}/templates/${templateID}/files/not-a-hash`, { headers: auth })
    assert.equal(res.status, 400)
    res = await fetch(`${api}/templates/${templateID}/builds/${buildID}/status`, { headers: { 'X-API-Key': 'e2b_0000000000000000000000000000000000000000' } })
    assert.equal(res.status, 401)
  })
})

describe('the REST view of templates', () => {
  test('list, get, delete', async () => {
    const n = nameOf('listed')
    const { info } = await build(Template().fromTemplate('base').runCmd('true'), n)
    const list = await (await fetch(`${api}/templates`, { headers: auth })).json()
    const item = list.find((t) => t.templateID === info.templateId)
    assert.ok(item, 'listed')
    assert.deepEqual(item.names, [n])
    assert.equal(item.buildStatus, 'ready')
    const one = await (await fetch(`${api}/templates/${info.templateId}`, { headers: auth })).json()
    assert.equal(one.builds[0].buildID, info.buildId)
    const del = await fetch(`${api}/templates/${info.templateId}`, { method: 'DELETE', headers: auth })
    assert.equal(del.status, 204)
    assert.equal(await Template.exists(n), false)
    await assert.rejects(Sandbox.create(n), /not found/)
  })

  test('fromDockerfile', async () => {
    const n = nameOf('docker')
    const dockerfile = [
      'FROM e2bdev/base:latest',
      'ENV MODE=docker',
      'WORKDIR /work',
      'COPY hello.txt /work/',
      `RUN echo "$MODE" > /work/mode.txt # ${RUN_ID}`,
      'USER worker',
    ].join('\n')
    await build(Template({ fileContextPath: context }).fromDockerfile(dockerfile), n)
    const s = await sandboxOf(n)
    assert.equal(await sh(s, 'cat /work/hello.txt /work/mode.txt'), 'hello from the context\ndocker\n')
    assert.equal((await sh(s, 'whoami')).trim(), 'worker', 'USER made the user and is the default one')
    assert.equal((await sh(s, 'pwd')).trim(), '/work')
  })
})

describe('images from a registry', { skip: !process.env.E2E_REGISTRY_AUTH && 'no test registry (run through run-platform.sh)' }, () => {
  // The runner's registries: docker.io is mirrored by an open one holding
  // a bare Debian 12 (plus a marker layer that whites out /etc/motd) as
  // library/debian:stable and library/python:3.12-test; another one needs
  // a password.
  test('fromDebianImage: layers, whiteouts, the image env, the user account', async () => {
    const n = nameOf('debian')
    const { logs } = await build(Template().fromDebianImage('stable').runCmd(`echo ${RUN_ID} > /home/user/run`), n)
    assert.ok(logs.some((l) => /applying layer 2\/2/.test(l)), logs.join('\n'))
    if (!logs.some((l) => l.startsWith('CACHED preparing'))) {
      assert.ok(logs.some((l) => l.includes('the image has no sudo')), 'a bare Debian has no sudo, and the log says so')
    }
    const s = await sandboxOf(n)
    assert.equal(await sh(s, 'cat /etc/sandbar-test-image'), 'made by the template suites\n', 'the second layer')
    assert.equal((await sh(s, 'test -e /etc/motd && echo present || echo gone')).trim(), 'gone', 'the whiteout removed it')
    assert.equal(await sh(s, 'echo $IMAGE_VAR'), 'from-the-image\n', "the image's Env")
    assert.equal((await sh(s, 'whoami; id -u; pwd')).trim(), 'user\n1000\n/home/user')
    assert.match(await sh(s, 'grep PRETTY_NAME /etc/os-release'), /Debian GNU\/Linux 12/)
    assert.equal((await sh(s, 'id -u', { user: 'root' })).trim(), '0')

    const again = await build(Template().fromDebianImage('stable').runCmd(`echo ${RUN_ID} > /home/user/run`), n)
    assert.ok(again.logs.some((l) => l.startsWith('CACHED image')), again.logs.join('\n'))
    assert.ok(again.logs.some((l) => l.startsWith('CACHED preparing')), again.logs.join('\n'))
    assert.equal(again.logs.filter((l) => /^\[\d+\/\d+\] /.test(l)).length, 0)
  })

  test('fromImage with credentials; a wrong password or a missing image fails the build with why', async () => {
    const image = `${process.env.E2E_REGISTRY_AUTH}/private/debian:1`
    const creds = { username: process.env.E2E_REGISTRY_USER, password: process.env.E2E_REGISTRY_PASSWORD }
    const n = nameOf('private')
    await build(Template().fromImage(image, creds).runCmd(`echo private-${RUN_ID} > /home/user/p`), n)
    const s = await sandboxOf(n)
    assert.equal(await sh(s, 'cat /home/user/p /etc/sandbar-test-image'), `private-${RUN_ID}\nmade by the template suites\n`)
    await assert.rejects(build(Template().fromImage(image, { ...creds, password: 'wrong' }).runCmd('true'), nameOf('wrong-pw')), (e) => {
      assert.ok(e instanceof BuildError, `${e}`)
      assert.match(e.message, /unauthorized/)
      return true
    })
    await assert.rejects(build(Template().fromImage(image).runCmd('true'), nameOf('no-pw')), /unauthorized|authentication required/)
    await assert.rejects(build(Template().fromImage('sandbar-test/no-such-image:1').runCmd('true'), nameOf('missing')), /manifest unknown|not found/)
  })

  test('fromPythonImage, fromUbuntuImage and fromNodeImage map to their images on the mirror', async () => {
    for (const [what, t] of [
      ['python', Template().fromPythonImage('3.12-test')],
      ['ubuntu', Template().fromUbuntuImage('test')],
      ['node', Template().fromNodeImage('test')],
    ]) {
      const n = nameOf(what)
      await build(t.runCmd('true'), n)
      const s = await sandboxOf(n)
      assert.equal(await sh(s, 'cat /etc/sandbar-test-image'), 'made by the template suites\n', what)
    }
  })
})
