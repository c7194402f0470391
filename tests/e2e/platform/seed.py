import httpx
from e2b_code_interpreter import Sandbox

sandbox = Sandbox.create()
process = sandbox.commands.run("python -m http.server 3000", background=True)
host = sandbox.get_host(3000)
url = f"https://{host}"
print("Server started at:", url)
response = httpx.get(url)
print("Response from server inside sandbox:", response.text)
process.kill()
