// The code-interpreter SDK with every language of a code-interpreter-v1
// sandbox besides Python and bash: JavaScript and TypeScript (Deno's kernel,
// a default context like Python's), R (IRkernel) and Java (JJava). For each:
// hello world, state across cells, errors with a traceback, env vars
// (sandbox-wide and per call), cwd, contexts, an interrupt on a client
// timeout and a restart. It needs a sandbar server, so it is skipped against
// a standalone envd.
//
// One sandbox per language: a Deno kernel holds about 200 MiB and a JVM
// about 180 MiB, so the languages do not share the 512 MiB of one sandbox;
// tests that make contexts remove them when they end.
import { describe, it, before, after, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, TimeoutError } from '@e2b/code-interpreter'
import { SANDBOX_ENVS, TARGET, DEFAULT_HOME, explain, rejection, uniqueName } from './helpers.mjs'

const skip = TARGET !== 'sandbar' && 'needs E2E_TARGET=sandbar (a code-interpreter-v1 sandbox)'
// Any CSI sequence: kernels colour their tracebacks unless told not to.
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/

/** Asserts the execution ended without an error, showing the error when it did not. */
function assertNoError(execution, what) {
  assert.equal(
    execution.error,
    undefined,
    `${what}: ${execution.error?.name}: ${execution.error?.value}\n${execution.error?.traceback ?? ''}`,
  )
}

/** The text of an execution's only result (R's values are display results, as on E2B). */
function onlyText(execution, what) {
  assertNoError(execution, what)
  assert.equal(execution.results.length, 1, `${what}: ${JSON.stringify(execution.toJSON())}`)
  return execution.results[0].text
}

/**
 * One language's sandbox and the contexts its tests make, removed after
 * each test.
 */
function languageSuite() {
  const state = { sandbox: undefined, contexts: [] }
  before(async () => {
    state.sandbox = await Sandbox.create({ envs: SANDBOX_ENVS, timeoutMs: 5 * 60_000 })
  })
  afterEach(async () => {
    for (const c of state.contexts.splice(0)) await state.sandbox.removeCodeContext(c)
  })
  after(async () => {
    await state.sandbox?.kill()
  })
  state.newContext = async (opts) => {
    const context = await state.sandbox.createCodeContext(opts)
    state.contexts.push(context)
    return context
  }
  return state
}

/**
 * The tests every language gets, given how to say things in it. `value`
 * turns a run into the text of its value.
 */
function commonTests(t, lang) {
  it('says hello world', async () => {
    const execution = await t.sandbox.runCode(lang.hello, { language: lang.name })
    assertNoError(execution, 'hello world')
    assert.deepEqual(execution.logs.stdout, ['Hello, World!\n'])
  })

  it('keeps state across cells', async () => {
    assertNoError(await t.sandbox.runCode(lang.setState, { language: lang.name }), 'set')
    const execution = await t.sandbox.runCode(lang.readState, { language: lang.name })
    assert.equal(lang.value(execution, 'read'), lang.stateValue)
  })

  it('reports an error with its name, value and a plain traceback', async () => {
    const execution = await t.sandbox.runCode(lang.failing, { language: lang.name })
    assert.ok(execution.error, `expected an error: ${JSON.stringify(execution.toJSON())}`)
    assert.match(execution.error.name, lang.errorName)
    assert.match(execution.error.value, /bad value 17/)
    const tb = execution.error.traceback
    assert.equal(typeof tb, 'string')
    assert.match(tb, lang.tracebackNames, `the traceback does not name the failing code:\n${tb}`)
    assert.doesNotMatch(tb, ANSI, 'the traceback carries ANSI escapes')
    // The kernel goes on, with its state.
    const after = await t.sandbox.runCode(lang.readState, { language: lang.name })
    assert.equal(lang.value(after, 'read after the error'), lang.stateValue)
  })

  it('sees the sandbox-wide env vars', async () => {
    const execution = await t.sandbox.runCode(lang.readEnv('SANDBAR_E2E_SANDBOX_VAR'), { language: lang.name })
    assert.equal(lang.value(execution, 'sandbox-wide env'), 'from-sandbox')
  })

  it('passes per-call env vars to that call only, over the sandbox-wide ones', async () => {
    const during = await t.sandbox.runCode(lang.readEnv('SANDBAR_E2E_CALL'), {
      language: lang.name,
      envs: { SANDBAR_E2E_CALL: 'per-call' },
    })
    assert.equal(lang.value(during, 'per-call env'), 'per-call')
    const overridden = await t.sandbox.runCode(lang.readEnv('SANDBAR_E2E_OVERRIDE'), {
      language: lang.name,
      envs: { SANDBAR_E2E_OVERRIDE: 'call-level' },
    })
    assert.equal(lang.value(overridden, 'overriding env'), 'call-level')
    const unset = await t.sandbox.runCode(lang.readEnv('SANDBAR_E2E_CALL'), { language: lang.name })
    assert.equal(lang.value(unset, 'after the call'), lang.unsetValue)
    const restored = await t.sandbox.runCode(lang.readEnv('SANDBAR_E2E_OVERRIDE'), { language: lang.name })
    assert.equal(lang.value(restored, 'restored'), 'sandbox-level')
  })

  it('passes env vars to processes the code starts', async () => {
    const execution = await t.sandbox.runCode(lang.childEnv('SANDBAR_E2E_CHILD'), {
      language: lang.name,
      envs: { SANDBAR_E2E_CHILD: 'seen-by-child' },
    })
    assertNoError(execution, 'child process env')
    assert.match(execution.logs.stdout.join('') + (execution.results[0]?.text ?? ''), /seen-by-child/)
  })

  it('starts the default context in /home/user and a new one in its cwd', async () => {
    const home = await t.sandbox.runCode(lang.cwd, { language: lang.name })
    assert.equal(lang.value(home, 'default cwd'), DEFAULT_HOME)
    const dir = `${DEFAULT_HOME}/${uniqueName(`cwd-${lang.name}`)}`
    await t.sandbox.files.makeDir(dir)
    try {
      const c = await t.newContext({ language: lang.name, cwd: dir })
      assert.equal(c.language, lang.name)
      assert.equal(c.cwd, dir)
      assert.equal(lang.value(await t.sandbox.runCode(lang.cwd, { context: c }), 'context cwd'), dir)
      // Relative paths resolve there too.
      assertNoError(await t.sandbox.runCode(lang.writeRelative('relative.txt'), { context: c }), 'write')
      assert.equal((await t.sandbox.files.read(`${dir}/relative.txt`)).trim(), 'relative')
    } finally {
      await t.sandbox.files.remove(dir)
    }
  })

  it('keeps contexts apart, and lists them', async () => {
    const c = await t.newContext({ language: lang.name })
    assertNoError(await t.sandbox.runCode(lang.setOther, { context: c }), 'set in the context')
    assert.equal(lang.value(await t.sandbox.runCode(lang.readOther, { context: c }), 'read'), '99')
    const inDefault = await t.sandbox.runCode(lang.readOther, { language: lang.name })
    assert.ok(inDefault.error, `the default context sees the other's state: ${JSON.stringify(inDefault.toJSON())}`)
    const listed = await t.sandbox.listCodeContexts()
    assert.deepEqual(
      listed.find((x) => x.id === c.id),
      { id: c.id, language: lang.name, cwd: DEFAULT_HOME },
    )
  })

  it('interrupts a run the client timed out, and keeps the state', async () => {
    const c = await t.newContext({ language: lang.name })
    assertNoError(await t.sandbox.runCode(lang.setState, { context: c }), 'set')
    const start = Date.now()
    const err = await rejection(() => t.sandbox.runCode(lang.busy, { context: c, timeoutMs: 2000 }))
    assert.ok(err instanceof TimeoutError, explain(err))
    assert.ok(Date.now() - start < 10_000, `the timeout took ${Date.now() - start} ms`)
    const t0 = Date.now()
    const next = await t.sandbox.runCode(lang.readState, { context: c, timeoutMs: 20_000 })
    const took = Date.now() - t0
    assert.equal(lang.value(next, 'read after the interrupt'), lang.stateValue)
    assert.ok(took < 5000, `the next run took ${took} ms: the busy code was not interrupted`)
  })

  it('restarting a context clears its state', async () => {
    const c = await t.newContext({ language: lang.name })
    assertNoError(await t.sandbox.runCode(lang.setOther, { context: c }), 'set')
    await t.sandbox.restartCodeContext(c)
    const gone = await t.sandbox.runCode(lang.readOther, { context: c })
    assert.ok(gone.error, `state survived the restart: ${JSON.stringify(gone.toJSON())}`)
    assert.equal(lang.value(await t.sandbox.runCode(lang.readState, { language: lang.name }), 'default'), lang.stateValue)
  })
}

const JAVASCRIPT = {
  name: 'javascript',
  hello: 'console.log("Hello, World!")',
  setState: 'let answer = 41 + 1',
  readState: 'answer',
  stateValue: '42',
  setOther: 'var onlyHere = 99',
  readOther: 'onlyHere',
  failing: 'function fails() {\n  throw new TypeError("bad value 17")\n}\nfails()',
  errorName: /^TypeError$/,
  tracebackNames: /fails/,
  readEnv: (name) => `process.env.${name} ?? "<unset>"`,
  childEnv: (name) =>
    `new TextDecoder().decode(new Deno.Command("sh", { args: ["-c", "echo $${name}"] }).outputSync().stdout)`,
  unsetValue: '<unset>',
  cwd: 'process.cwd()',
  writeRelative: (file) => `Deno.writeTextFileSync(${JSON.stringify(file)}, "relative\\n")`,
  busy: 'while (true) {}',
  value: (execution, what) => {
    assertNoError(execution, what)
    return execution.text
  },
}

/** TypeScript: the same kernel (Deno) with types in the code. */
const TYPESCRIPT = {
  ...JAVASCRIPT,
  name: 'typescript',
  // Names of its own: the default contexts may share one kernel.
  setState: 'let tsAnswer: number = 41 + 1',
  readState: 'tsAnswer',
  setOther: 'var tsOnlyHere: number = 99',
  readOther: 'tsOnlyHere',
  failing: 'function fails(n: number): never {\n  throw new TypeError(`bad value ${n}`)\n}\nfails(17)',
  readEnv: (name) => `(process.env.${name} as string | undefined) ?? "<unset>"`,
  busy: 'while (true as boolean) {}',
}

describe('code interpreter: JavaScript and TypeScript', { skip }, () => {
  const t = languageSuite()

  // First, right after create: the SDKs' users rely on both defaults.
  it('lists the default python and javascript contexts right after create', async () => {
    const listed = await t.sandbox.listCodeContexts()
    for (const language of ['python', 'javascript']) {
      const found = listed.filter((c) => c.language === language)
      assert.equal(found.length, 1, `${language} contexts in ${JSON.stringify(listed)}`)
      assert.equal(found[0].cwd, DEFAULT_HOME)
    }
  })

  commonTests(t, JAVASCRIPT)
  describe('typescript', () => commonTests(t, TYPESCRIPT))

  it('runs under every name the SDKs give JavaScript and TypeScript', async () => {
    for (const language of ['js', 'javascript', 'ts', 'typescript']) {
      const execution = await t.sandbox.runCode('console.log("Hello, World!")', { language })
      assertNoError(execution, language)
      assert.deepEqual(execution.logs.stdout, ['Hello, World!\n'], language)
    }
  })

  it('strips TypeScript types, in a typescript context too', async () => {
    const code = 'interface Point { x: number; y: number }\nconst p: Point = { x: 20, y: 22 }\np.x + p.y'
    assert.equal((await t.sandbox.runCode(code, { language: 'ts' })).text, '42')
    const c = await t.newContext({ language: 'typescript' })
    assert.equal(c.language, 'typescript')
    const inContext = await t.sandbox.runCode('const n: number = 6\nn * 7', { context: c })
    assertNoError(inContext, 'typescript context')
    assert.equal(inContext.text, '42')
    // Its env vars are set as for JavaScript.
    const env = await t.sandbox.runCode('process.env.SANDBAR_E2E_CALL', {
      context: c,
      envs: { SANDBAR_E2E_CALL: 'typed' },
    })
    assert.equal(env.text, 'typed')
  })

  it('awaits at the top level and returns the last expression', async () => {
    const execution = await t.sandbox.runCode(
      'const later = await new Promise((resolve) => setTimeout(() => resolve("resolved"), 50))\nlater.toUpperCase()',
      { language: 'js' },
    )
    assertNoError(execution, 'top-level await')
    assert.equal(execution.text, 'RESOLVED')
    assert.equal((await t.sandbox.runCode('await Promise.resolve("Hello World!")', { language: 'js' })).text, 'Hello World!')
  })

  it('imports node built-ins', async () => {
    const execution = await t.sandbox.runCode(
      'import { readFileSync } from "node:fs"\nimport os from "os"\n[typeof readFileSync, typeof os.hostname()].join(" ")',
      { language: 'js' },
    )
    assertNoError(execution, 'imports')
    assert.equal(execution.text, 'function string')
  })

  it('streams console.log while the code runs', async () => {
    const seen = []
    const execution = await t.sandbox.runCode(
      'console.log("first")\nawait new Promise((r) => setTimeout(r, 1500))\nconsole.log("second")',
      { language: 'js', onStdout: (m) => seen.push({ line: m.line, at: Date.now() }) },
    )
    const done = Date.now()
    assertNoError(execution, 'log, wait, log')
    assert.deepEqual(
      seen.map((s) => s.line),
      ['first\n', 'second\n'],
    )
    const early = done - seen[0].at
    assert.ok(early >= 1000, `"first" arrived only ${early} ms before the run ended`)
  })

  it('reports console.error on stderr', async () => {
    const execution = await t.sandbox.runCode('console.error("to stderr")', { language: 'js' })
    assertNoError(execution, 'console.error')
    assert.deepEqual(execution.logs.stderr, ['to stderr\n'])
  })
})

describe('code interpreter: R', { skip }, () => {
  const t = languageSuite()
  // R prints values as `[1] "text"`; the string inside is the value.
  const rValue = (execution, what) => {
    const text = onlyText(execution, what)
    const m = /^\[1\] "(.*)"$/.exec(text) ?? /^\[1\] (.*)$/.exec(text)
    assert.ok(m, `${what}: not an R vector of one: ${text}`)
    return m[1]
  }

  it('starts R on first use, not with the sandbox', async () => {
    const listed = await t.sandbox.listCodeContexts()
    assert.deepEqual(listed.map((c) => c.language).sort(), ['javascript', 'python'])
  })

  commonTests(t, {
    name: 'r',
    hello: 'cat("Hello, World!\\n")',
    setState: 'answer <- 41 + 1',
    readState: 'answer',
    stateValue: '42',
    setOther: 'only_here <- 99',
    readOther: 'only_here',
    failing: 'fails <- function() stop("bad value 17")\nfails()',
    errorName: /.+/,
    tracebackNames: /fails\(\)/,
    readEnv: (name) => `Sys.getenv("${name}", unset = "<unset>")`,
    childEnv: (name) => `system("echo $${name}", intern = TRUE)`,
    unsetValue: '<unset>',
    cwd: 'getwd()',
    writeRelative: (file) => `writeLines("relative", ${JSON.stringify(file)})`,
    busy: 'Sys.sleep(60)',
    value: rValue,
  })

  it('returns a data frame as html and text', async () => {
    const execution = await t.sandbox.runCode('data.frame(alpha = 1:2, beta = c("x", "y"))', { language: 'r' })
    assertNoError(execution, 'data.frame')
    const [r] = execution.results
    assert.match(r.html ?? '', /<table/)
    assert.match(r.text ?? '', /alpha/)
  })
})

describe('code interpreter: Java', { skip }, () => {
  const t = languageSuite()

  commonTests(t, {
    name: 'java',
    hello: 'System.out.println("Hello, World!");',
    setState: 'int answer = 41 + 1;',
    readState: 'answer',
    stateValue: '42',
    setOther: 'int onlyHere = 99;',
    readOther: 'onlyHere',
    failing: 'void fails() { throw new IllegalStateException("bad value 17"); }\nfails();',
    // JJava names an exception thrown from a snippet's method RuntimeException;
    // the traceback has the real one.
    errorName: /Exception$/,
    tracebackNames: /IllegalStateException: bad value 17/,
    readEnv: (name) => `java.util.Objects.requireNonNullElse(System.getenv("${name}"), "<unset>")`,
    // A ProcessBuilder whose environment() is read passes the JVM's map on;
    // one that is not read inherits the JVM's native environment, which
    // Java cannot change (see the interpreter's envvars.rs).
    childEnv: (name) =>
      `var pb = new ProcessBuilder("sh", "-c", "echo $${name}");\npb.environment().size();\nnew String(pb.start().getInputStream().readAllBytes())`,
    unsetValue: '<unset>',
    cwd: 'System.getProperty("user.dir")',
    writeRelative: (file) => `java.nio.file.Files.writeString(java.nio.file.Path.of(${JSON.stringify(file)}).toAbsolutePath(), "relative\\n")`,
    busy: 'while (true) { Thread.onSpinWait(); }',
    value: (execution, what) => onlyText(execution, what),
  })

  it('also sets env vars as system properties, as E2B does', async () => {
    const during = await t.sandbox.runCode('System.getProperty("SANDBAR_E2E_CALL")', {
      language: 'java',
      envs: { SANDBAR_E2E_CALL: 'as-property' },
    })
    assert.equal(onlyText(during, 'property'), 'as-property')
    const cleared = await t.sandbox.runCode('System.getProperty("SANDBAR_E2E_CALL", "default")', { language: 'java' })
    assert.equal(onlyText(cleared, 'cleared'), 'default')
    const sandboxWide = await t.sandbox.runCode('System.getProperty("SANDBAR_E2E_SANDBOX_VAR")', { language: 'java' })
    assert.equal(onlyText(sandboxWide, 'sandbox-wide property'), 'from-sandbox')
  })
})
