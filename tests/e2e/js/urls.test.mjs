// Signed upload and download URLs (GET/POST /files without the token header).
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { DEFAULT_USER, killSandbox, newSandbox, scratchDir } from './helpers.mjs'

async function upload(url, path, body) {
  const form = new FormData()
  form.append('file', new Blob([body]), path)
  return fetch(url, { method: 'POST', body: form })
}

describe('signed file URLs', () => {
  let sandbox
  let scratch
  before(async () => {
    sandbox = await newSandbox()
    scratch = await scratchDir(sandbox, 'urls')
  })
  after(async () => {
    await scratch?.cleanup()
    await killSandbox(sandbox)
  })

  it('uploads through an upload URL and downloads through a download URL', async () => {
    const path = `${scratch.dir}/uploaded.txt`
    const url = await sandbox.uploadUrl(path)
    assert.match(url, /[?&]signature=v1_/)
    const res = await upload(url, path, 'via upload url')
    assert.equal(res.status, 200, await res.clone().text())
    const written = await res.json()
    assert.equal(written.length, 1)
    assert.equal(written[0].path, path)
    assert.equal(written[0].type, 'file')
    assert.equal((await sandbox.files.getInfo(path)).owner, DEFAULT_USER)

    const down = await fetch(await sandbox.downloadUrl(path))
    assert.equal(down.status, 200)
    assert.equal(await down.text(), 'via upload url')
    assert.match(down.headers.get('content-disposition') ?? '', /uploaded\.txt/)
  })

  it('honours the user named in the URL', async () => {
    const path = `${scratch.dir}/root-upload.txt`
    const res = await upload(await sandbox.uploadUrl(path, { user: 'root' }), path, 'root data')
    assert.equal(res.status, 200, await res.clone().text())
    assert.equal((await sandbox.files.getInfo(path)).owner, 'root')
    const down = await fetch(await sandbox.downloadUrl(path, { user: 'root' }))
    assert.equal(await down.text(), 'root data')
  })

  it('accepts a signature with an expiry in the future', async () => {
    const path = `${scratch.dir}/expiring.txt`
    await sandbox.files.write(path, 'still valid')
    const url = await sandbox.downloadUrl(path, { useSignatureExpiration: 120 })
    assert.match(url, /signature_expiration=\d+/)
    const res = await fetch(url)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), 'still valid')
  })

  it('rejects an expired signature with 401', async () => {
    const path = `${scratch.dir}/expired.txt`
    await sandbox.files.write(path, 'too late')
    const res = await fetch(await sandbox.downloadUrl(path, { useSignatureExpiration: -60 }))
    assert.equal(res.status, 401)
    const body = await res.json()
    assert.equal(body.code, 401)
    assert.match(body.message, /expired/)
    const up = await upload(await sandbox.uploadUrl(path, { useSignatureExpiration: -60 }), path, 'nope')
    assert.equal(up.status, 401)
    assert.equal(await sandbox.files.read(path), 'too late')
  })

  it('rejects a tampered or missing signature with 401', async () => {
    const path = `${scratch.dir}/guarded.txt`
    await sandbox.files.write(path, 'secret')
    const url = new URL(await sandbox.downloadUrl(path))
    // A signature for one path must not open another.
    url.searchParams.set('path', `${scratch.dir}/other.txt`)
    assert.equal((await fetch(url)).status, 401)
    url.searchParams.set('path', path)
    url.searchParams.set('signature', 'v1_AAAA')
    assert.equal((await fetch(url)).status, 401)
    url.searchParams.delete('signature')
    assert.equal((await fetch(url)).status, 401)
    // A read signature does not allow a write.
    const readUrl = await sandbox.downloadUrl(path)
    assert.equal((await upload(readUrl, path, 'overwrite')).status, 401)
    assert.equal(await sandbox.files.read(path), 'secret')
  })

  it('answers 404 with a JSON body for a missing file', async () => {
    const path = `${scratch.dir}/absent.txt`
    const res = await fetch(await sandbox.downloadUrl(path))
    assert.equal(res.status, 404)
    const body = await res.json()
    assert.equal(body.code, 404)
    assert.ok(body.message.includes(path), body.message)
  })
})
