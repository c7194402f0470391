import { Sandbox } from '@e2b/code-interpreter'
const sandbox = await Sandbox.create()
const process = await sandbox.commands.run('python -m http.server 3000', { background: true })
const host = sandbox.getHost(3000)
const url = `https://${host}`
console.log('Server started at:', url)
const response = await fetch(url)
console.log('Response from server inside sandbox:', await response.text())
await process.kill()
