// The code-interpreter SDK against the kernel server (port 49999) of a
// code-interpreter-v1 sandbox: results in every MIME form, streaming output,
// errors, contexts (python and bash), env vars, timeouts and kernel death.
// It needs a sandbar server, so it is skipped against a standalone envd.
//
// One sandbox serves the whole file; tests that could disturb the default
// context (timeouts, restarts, a dying kernel) work in contexts of their own.
import { describe, it, before, after, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import {
  Sandbox,
  InvalidArgumentError,
  NotFoundError,
  SandboxError,
  TimeoutError,
} from '@e2b/code-interpreter'
import { SANDBOX_ENVS, TARGET, DEFAULT_HOME, explain, rejection, waitFor } from './helpers.mjs'

const JUPYTER_PORT = 49999
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
// Any CSI sequence: IPython colours tracebacks unless told not to.
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/

const skip = TARGET !== 'sandbar' && 'needs E2E_TARGET=sandbar (a code-interpreter-v1 sandbox)'

/** The kernel server's URL for `path`, through the same public host the SDK uses. */
function serverUrl(sandbox, path) {
  return `https://${sandbox.getHost(JUPYTER_PORT)}${path}`
}

/** The headers the SDK sends to the kernel server. */
function serverHeaders(sandbox) {
  const headers = {
    'Content-Type': 'application/json',
    'E2b-Sandbox-Id': sandbox.sandboxId,
    'E2b-Sandbox-Port': String(JUPYTER_PORT),
  }
  if (sandbox.trafficAccessToken) headers['E2B-Traffic-Access-Token'] = sandbox.trafficAccessToken
  if (sandbox.envdAccessToken) headers['X-Access-Token'] = sandbox.envdAccessToken
  return headers
}

// runCode leaves its request timer (60 s by default) running when the server
// answers an error status, which keeps node alive that long after the last
// test: calls expected to fail get a short one.
const FAILING_CALL = { requestTimeoutMs: 5000 }

/** Asserts the execution ended without an error, showing the error when it did not. */
function assertNoError(execution, what) {
  assert.equal(
    execution.error,
    undefined,
    `${what}: ${execution.error?.name}: ${execution.error?.value}\n${execution.error?.traceback ?? ''}`,
  )
}

describe('code interpreter', { skip }, () => {
  let sandbox
  // Contexts the current test made. Every kernel holds tens of MiB (more
  // with pandas loaded), so they go after each test, or the sandbox's
  // memory limit would start killing kernels midway through the file.
  const contexts = []

  async function newContext(opts) {
    const context = await sandbox.createCodeContext(opts)
    contexts.push(context)
    return context
  }

  before(async () => {
    sandbox = await Sandbox.create({ envs: SANDBOX_ENVS, timeoutMs: 5 * 60_000 })
  })
  afterEach(async () => {
    for (const c of contexts.splice(0)) await sandbox.removeCodeContext(c)
  })
  after(async () => {
    await sandbox?.kill()
  })

  it('lists the default python context from the start', async () => {
    const listed = await sandbox.listCodeContexts()
    const python = listed.filter((c) => c.language === 'python')
    assert.ok(python.length >= 1, `no python context in ${JSON.stringify(listed)}`)
    assert.ok(python.some((c) => c.cwd === DEFAULT_HOME), JSON.stringify(listed))
    for (const c of listed) assert.equal(typeof c.id, 'string')
  })

  it('keeps state between runs in the default context', async () => {
    const first = await sandbox.runCode('x = 1')
    assertNoError(first, 'x = 1')
    assert.equal(first.text, undefined, 'an assignment has no main result')
    assert.deepEqual(first.results, [])
    const second = await sandbox.runCode('x + 1')
    assertNoError(second, 'x + 1')
    assert.equal(second.text, '2')
  })

  it('runs kernels as root in /home/user', async () => {
    const execution = await sandbox.runCode('import os\n(os.getuid(), os.getcwd())')
    assertNoError(execution, 'uid and cwd')
    assert.equal(execution.text, "(0, '/home/user')")
  })

  it('streams stdout while the code runs', async () => {
    const start = Date.now()
    const seen = []
    const execution = await sandbox.runCode(
      'import time\nprint("first", flush=True)\ntime.sleep(1.5)\nprint("second", flush=True)',
      { onStdout: (m) => seen.push({ line: m.line, at: Date.now() }) },
    )
    const done = Date.now()
    assertNoError(execution, 'print, sleep, print')
    assert.deepEqual(
      seen.map((s) => s.line),
      ['first\n', 'second\n'],
    )
    assert.deepEqual(execution.logs.stdout, ['first\n', 'second\n'])
    // The sleep sits between the two lines: a server that buffers until the
    // cell ends delivers "first" at about the same time as the result.
    const early = done - seen[0].at
    assert.ok(
      early >= 1000,
      `"first" arrived ${early} ms before runCode resolved (after ${seen[0].at - start} ms); expected >= 1000 ms`,
    )
  })

  it('reports stderr lines', async () => {
    const lines = []
    const execution = await sandbox.runCode('import sys\nprint("to stderr", file=sys.stderr, flush=True)', {
      onStderr: (m) => lines.push(m),
    })
    assertNoError(execution, 'print to stderr')
    assert.deepEqual(execution.logs.stderr, ['to stderr\n'])
    assert.deepEqual(execution.logs.stdout, [])
    assert.equal(lines.length, 1)
    assert.equal(lines[0].error, true)
    assert.equal(lines[0].line, 'to stderr\n')
  })

  it('returns a matplotlib figure as a PNG', async () => {
    const execution = await sandbox.runCode(
      'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title("squares")\nplt.show()',
    )
    assertNoError(execution, 'plot')
    const withPng = execution.results.filter((r) => r.png)
    assert.equal(withPng.length, 1, `results: ${JSON.stringify(execution.results.map((r) => r.formats()))}`)
    const png = Buffer.from(withPng[0].png, 'base64')
    assert.ok(png.length > 1000, `a ${png.length}-byte PNG is too small for a plot`)
    assert.deepEqual(png.subarray(0, 8), PNG_MAGIC)
  })

  it('reports an exception with its name, value and a plain traceback', async () => {
    assertNoError(await sandbox.runCode('before_error = 3'), 'set')
    const execution = await sandbox.runCode(
      'def fails():\n    raise ValueError("bad value 17")\n\nfails()',
    )
    assert.ok(execution.error, 'expected an error')
    assert.equal(execution.error.name, 'ValueError')
    assert.equal(execution.error.value, 'bad value 17')
    const tb = execution.error.traceback
    assert.equal(typeof tb, 'string')
    assert.ok(tb.includes('raise ValueError("bad value 17")'), `the failing line is not named:\n${tb}`)
    assert.ok(tb.includes('ValueError'), tb)
    assert.doesNotMatch(tb, ANSI, 'the traceback carries ANSI escapes')
    assert.deepEqual(execution.results, [])
    // The kernel is still usable and the error did not eat earlier state.
    assert.equal((await sandbox.runCode('before_error')).text, '3')
  })

  it('counts executions', async () => {
    const a = await sandbox.runCode('1')
    const b = await sandbox.runCode('2')
    assert.equal(typeof a.executionCount, 'number')
    assert.equal(b.executionCount, a.executionCount + 1)
  })

  it('tells display() results from the main result', async () => {
    const execution = await sandbox.runCode(
      'from IPython.display import display\ndisplay(123)\ndisplay([4, 5])\n"the last expression"',
    )
    assertNoError(execution, 'display')
    assert.deepEqual(
      execution.results.map((r) => [r.text, r.isMainResult]),
      [
        ['123', false],
        ['[4, 5]', false],
        // A str's text is its content, not its repr, as with E2B's server.
        ['the last expression', true],
      ],
    )
    assert.equal(execution.text, 'the last expression')
  })

  it('returns every MIME form of a result', async () => {
    const bundle = {
      'text/plain': 'plain text',
      'text/html': '<b>bold</b>',
      'text/markdown': '**bold**',
      'image/svg+xml': '<svg xmlns="http://www.w3.org/2000/svg"/>',
      'image/jpeg': '/9j/AA==',
      'text/latex': '$x^2$',
      'application/json': { answer: 42 },
      'application/javascript': 'console.log(1)',
      'application/x-sandbar-e2e': 'custom',
    }
    const execution = await sandbox.runCode(
      `from IPython.display import display\ndisplay(${JSON.stringify(bundle)}, raw=True)`,
    )
    assertNoError(execution, 'display a MIME bundle')
    assert.equal(execution.results.length, 1)
    const r = execution.results[0]
    assert.equal(r.isMainResult, false)
    assert.equal(r.text, 'plain text')
    assert.equal(r.html, '<b>bold</b>')
    assert.equal(r.markdown, '**bold**')
    assert.equal(r.svg, '<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert.equal(r.jpeg, '/9j/AA==')
    assert.equal(r.latex, '$x^2$')
    assert.deepEqual(r.json, { answer: 42 })
    assert.equal(r.javascript, 'console.log(1)')
    // The SDK keeps the wire's `extra` object as it came, in raw.
    assert.deepEqual(r.raw.extra, { 'application/x-sandbar-e2e': 'custom' })
  })

  it('returns a pandas DataFrame as html and data', async () => {
    const execution = await sandbox.runCode(
      'import pandas as pd\npd.DataFrame({"alpha": [1, 2], "beta": [3, 4]})',
    )
    assertNoError(execution, 'DataFrame')
    const main = execution.results.find((r) => r.isMainResult)
    assert.ok(main, 'no main result')
    assert.match(main.html ?? '', /<table/)
    assert.match(main.html, /alpha/)
    assert.ok(main.text?.includes('alpha'), main.text)
    assert.equal(typeof main.data, 'object')
    assert.ok(main.data !== null, 'data is null')
    assert.match(JSON.stringify(main.data), /alpha/)
    assert.ok(main.formats().includes('data'), JSON.stringify(main.formats()))
  })

  it('passes per-call env vars to that call only, over the sandbox-wide ones', async () => {
    const read = 'import os\n(os.environ.get("SANDBAR_E2E_CALL", "<unset>"), os.environ.get("SANDBAR_E2E_OVERRIDE"))'
    const during = await sandbox.runCode(read, {
      envs: { SANDBAR_E2E_CALL: 'per-call', SANDBAR_E2E_OVERRIDE: 'call-level' },
    })
    assertNoError(during, 'per-call envs')
    assert.equal(during.text, "('per-call', 'call-level')")
    const afterwards = await sandbox.runCode(read)
    assert.equal(afterwards.text, "('<unset>', 'sandbox-level')")
  })

  it('shows sandbox-wide env vars to the kernel', async () => {
    const execution = await sandbox.runCode('import os\nos.environ["SANDBAR_E2E_SANDBOX_VAR"]')
    assertNoError(execution, 'sandbox-wide env')
    assert.equal(execution.text, 'from-sandbox')
  })

  it('keeps contexts apart', async () => {
    const a = await newContext()
    const b = await newContext()
    assert.notEqual(a.id, b.id)
    assert.equal(a.language, 'python')
    assertNoError(await sandbox.runCode('only_in_a = 99', { context: a }), 'set in a')
    assert.equal((await sandbox.runCode('only_in_a', { context: a })).text, '99')
    const inB = await sandbox.runCode('only_in_a', { context: b })
    assert.equal(inB.error?.name, 'NameError')
    const inDefault = await sandbox.runCode('only_in_a')
    assert.equal(inDefault.error?.name, 'NameError')
  })

  it('restarting a context clears its state', async () => {
    const c = await newContext()
    assertNoError(await sandbox.runCode('elsewhere = 5'), 'set in the default context')
    assertNoError(await sandbox.runCode('kept = "before restart"', { context: c }), 'set')
    await sandbox.restartCodeContext(c)
    const afterRestart = await sandbox.runCode('kept', { context: c })
    assert.equal(afterRestart.error?.name, 'NameError')
    assert.equal((await sandbox.runCode('6 * 7', { context: c })).text, '42')
    // Other contexts are untouched.
    assert.equal((await sandbox.runCode('elsewhere')).text, '5')
  })

  it('starts a context in the cwd it is given', async () => {
    const c = await newContext({ cwd: '/tmp' })
    assert.equal(c.cwd, '/tmp')
    const execution = await sandbox.runCode('import os\nos.getcwd()', { context: c })
    assert.equal(execution.text, '/tmp')
    const bash = await newContext({ language: 'bash', cwd: '/tmp' })
    assert.equal(bash.cwd, '/tmp')
    assert.deepEqual((await sandbox.runCode('pwd', { context: bash })).logs.stdout.join(''), '/tmp\n')
  })

  it('refuses a cwd that does not exist and an unknown language', async () => {
    const badCwd = await rejection(() => sandbox.createCodeContext({ cwd: '/no/such/dir' }))
    assert.ok(badCwd instanceof SandboxError, explain(badCwd))
    assert.match(badCwd.message, /400/)
    const badLang = await rejection(() => sandbox.createCodeContext({ language: 'cobol' }))
    assert.ok(badLang instanceof SandboxError, explain(badLang))
    assert.match(badLang.message, /400/)
    // The SDK drops the body; the server still explains itself.
    const res = await fetch(serverUrl(sandbox, '/contexts'), {
      method: 'POST',
      headers: serverHeaders(sandbox),
      body: JSON.stringify({ language: 'cobol' }),
    })
    assert.equal(res.status, 400)
    assert.match(await res.text(), /cobol/)
  })

  it('runs shell in a bash context', async () => {
    const c = await newContext({ language: 'bash' })
    assert.equal(c.language, 'bash')
    const ok = await sandbox.runCode('echo $((6*7))', { context: c })
    assertNoError(ok, 'echo')
    assert.equal(ok.logs.stdout.join(''), '42\n')
    // A bash context keeps its shell state too.
    await sandbox.runCode('GREETING=hello', { context: c })
    assert.equal((await sandbox.runCode('echo "$GREETING"', { context: c })).logs.stdout.join(''), 'hello\n')
    const failed = await sandbox.runCode('ls /no/such/dir', { context: c })
    assert.ok(failed.error, `a failing command gave no error: ${JSON.stringify(failed.toJSON())}`)
  })

  it('runs bash by language, without a context', async () => {
    const execution = await sandbox.runCode('echo $((2+3))', { language: 'bash' })
    assertNoError(execution, 'bash by language')
    assert.equal(execution.logs.stdout.join(''), '5\n')
  })

  it('passes per-call env vars to a bash context', async () => {
    const c = await newContext({ language: 'bash' })
    const during = await sandbox.runCode('echo "${SANDBAR_E2E_CALL:-unset} $SANDBAR_E2E_SANDBOX_VAR"', {
      context: c,
      envs: { SANDBAR_E2E_CALL: 'per-call' },
    })
    assert.equal(during.logs.stdout.join(''), 'per-call from-sandbox\n')
    const afterwards = await sandbox.runCode('echo "${SANDBAR_E2E_CALL:-unset}"', { context: c })
    assert.equal(afterwards.logs.stdout.join(''), 'unset\n')
  })

  it('interrupts a run the client timed out, and keeps the state', async () => {
    const c = await newContext()
    assertNoError(await sandbox.runCode('survivor = "still here"', { context: c }), 'set')
    const start = Date.now()
    const err = await rejection(() => sandbox.runCode('import time\ntime.sleep(60)', { context: c, timeoutMs: 2000 }))
    assert.ok(err instanceof TimeoutError, explain(err))
    assert.ok(Date.now() - start < 10_000, `the timeout took ${Date.now() - start} ms`)
    const t0 = Date.now()
    const next = await sandbox.runCode('1 + 1', { context: c, timeoutMs: 20_000 })
    const took = Date.now() - t0
    assertNoError(next, '1 + 1 after the timeout')
    assert.equal(next.text, '2')
    assert.ok(took < 5000, `the next run took ${took} ms: the sleep was not interrupted`)
    assert.equal((await sandbox.runCode('survivor', { context: c })).text, 'still here')
  })

  it('replaces a kernel that ignores the interrupt', async () => {
    const c = await newContext()
    assertNoError(await sandbox.runCode('lost = 1', { context: c }), 'set')
    // SIGINT ignored: the interrupt cannot stop this sleep.
    const stubborn = 'import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(120)'
    const err = await rejection(() => sandbox.runCode(stubborn, { context: c, timeoutMs: 1500 }))
    assert.ok(err instanceof TimeoutError, explain(err))
    // The server gives the kernel 10 s to stop, then replaces it.
    const t0 = Date.now()
    const next = await sandbox.runCode('1 + 1', { context: c, timeoutMs: 40_000 })
    assertNoError(next, '1 + 1 after the hung run')
    assert.equal(next.text, '2')
    assert.ok(Date.now() - t0 < 30_000, `the context took ${Date.now() - t0} ms to recover`)
    const gone = await sandbox.runCode('lost', { context: c })
    assert.equal(gone.error?.name, 'NameError', 'a replaced kernel starts with fresh state')
  })

  it('lists and removes contexts', async () => {
    const c = await sandbox.createCodeContext({ language: 'python' })
    const before = await sandbox.listCodeContexts()
    const listed = before.find((x) => x.id === c.id)
    assert.deepEqual(listed, { id: c.id, language: 'python', cwd: DEFAULT_HOME })
    await sandbox.removeCodeContext(c)
    const afterwards = await sandbox.listCodeContexts()
    assert.equal(afterwards.find((x) => x.id === c.id), undefined)
    const err = await rejection(() => sandbox.runCode('1', { context: c, ...FAILING_CALL }))
    assert.ok(err instanceof NotFoundError, explain(err))
  })

  it('answers an unknown context with NotFoundError', async () => {
    const ghost = { id: 'no-such-context', language: 'python', cwd: DEFAULT_HOME }
    const err = await rejection(() => sandbox.runCode('1', { context: ghost, ...FAILING_CALL }))
    assert.ok(err instanceof NotFoundError, explain(err))
  })

  it('refuses a context and a language together', async () => {
    const [defaultContext] = (await sandbox.listCodeContexts()).filter((c) => c.language === 'python')
    const err = await rejection(() => sandbox.runCode('1', { context: defaultContext, language: 'python' }))
    assert.ok(err instanceof InvalidArgumentError, explain(err))
    // The server holds the same rule for clients that skip the SDK's check.
    const res = await fetch(serverUrl(sandbox, '/execute'), {
      method: 'POST',
      headers: serverHeaders(sandbox),
      body: JSON.stringify({ code: '1', context_id: defaultContext.id, language: 'python' }),
    })
    assert.equal(res.status, 400, await res.text())
  })

  it('runs code only for callers with the access token of a secure sandbox', async () => {
    assert.ok(sandbox.envdAccessToken, 'the SDK default is a secure sandbox')
    const run = (headers) =>
      fetch(serverUrl(sandbox, '/execute'), { method: 'POST', headers, body: JSON.stringify({ code: '6 * 7' }) })
    const { 'X-Access-Token': _token, ...without } = serverHeaders(sandbox)
    const missing = await run(without)
    assert.equal(missing.status, 401, await missing.text())
    const wrong = await run({ ...without, 'X-Access-Token': 'not-the-token' })
    assert.equal(wrong.status, 401, await wrong.text())
    const right = await run(serverHeaders(sandbox))
    assert.equal(right.status, 200)
    assert.match(await right.text(), /"text":"42"/)
    // Context calls, which the SDKs send without the token, still work.
    const listed = await fetch(serverUrl(sandbox, '/contexts'), { headers: without })
    assert.equal(listed.status, 200, await listed.text())
  })

  it('reports a kernel that died, then restarts it with fresh state', async () => {
    const c = await newContext()
    assertNoError(await sandbox.runCode('bystander = 8'), 'set in the default context')
    assertNoError(await sandbox.runCode('doomed = 1', { context: c }), 'set')
    const died = await sandbox.runCode('import os\nos.kill(os.getpid(), 9)', { context: c, timeoutMs: 30_000 })
    assert.equal(died.error?.name, 'KernelDied', JSON.stringify(died.toJSON()))
    assert.ok(died.error.value, 'KernelDied says nothing about what happened')
    const recovered = await waitFor(
      async () => {
        const e = await sandbox.runCode('1 + 1', { context: c, timeoutMs: 10_000 }).catch(() => undefined)
        return e?.text === '2' && e
      },
      { timeoutMs: 15_000, intervalMs: 250, what: 'the context to run code again after its kernel died' },
    )
    assert.equal(recovered.text, '2')
    const fresh = await sandbox.runCode('doomed', { context: c })
    assert.equal(fresh.error?.name, 'NameError')
    // The default context never noticed.
    assert.equal((await sandbox.runCode('bystander')).text, '8')
  })

  it('still offers the base SDK: commands and files', async () => {
    await sandbox.files.write('/home/user/ci.txt', 'ci')
    assert.equal((await sandbox.commands.run('cat /home/user/ci.txt')).stdout, 'ci')
  })
})
