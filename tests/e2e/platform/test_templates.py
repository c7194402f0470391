"""Custom templates through the official Python SDK's builder (sync and
async): files, steps, env vars, a start command with its ready command,
the step cache, tags, exists, a background build, a failing step."""

import asyncio
import os
import time
import uuid

import pytest
import httpx

from e2b import (
    AsyncSandbox,
    AsyncTemplate,
    BuildException,
    Sandbox,
    Template,
    wait_for_port,
    wait_for_process,
)

RUN_ID = "t" + uuid.uuid4().hex[:10]
CONTEXT = os.path.join(os.path.dirname(__file__), "fixtures", "template")
API = os.environ["E2B_API_URL"]
AUTH = {"X-API-Key": os.environ["E2B_API_KEY"]}


def name_of(what: str) -> str:
    return f"py-{what}-{RUN_ID}"


@pytest.fixture(scope="module", autouse=True)
def cleanup():
    yield
    for t in httpx.get(f"{API}/templates", headers=AUTH, timeout=30).json():
        if any(RUN_ID in n for n in t["names"]):
            httpx.delete(f"{API}/templates/{t['templateID']}", headers=AUTH, timeout=30)


@pytest.fixture
def made():
    ids = []
    yield ids
    for sandbox_id in ids:
        Sandbox.kill(sandbox_id)


def sandbox_of(made, name):
    s = Sandbox.create(name, metadata={"run": RUN_ID}, timeout=120)
    made.append(s.sandbox_id)
    return s


def app_template():
    return (
        Template(file_context_path=CONTEXT)
        .from_template("base")
        # Unique to the run: a server reused across runs has the team's
        # step cache from before.
        .run_cmd(f"echo {RUN_ID} > /home/user/run-id")
        .copy("app", "/srv/app/")
        .copy("hello.txt", "/home/user/")
        .run_cmd("echo py > /home/user/py.txt")
        .run_cmd("id -un > /tmp/who", user="root")
        .set_envs({"FROM_PY": "yes"})
        .make_dir("/home/user/made")
        .set_workdir("/srv/app")
        .set_start_cmd("python3 -m http.server 3000", wait_for_port(3000))
    )


def test_build_then_a_sandbox_has_it_all(made):
    name = name_of("app")
    logs = []
    info = Template.build(app_template(), name, cpu_count=1, memory_mb=512,
                          on_build_logs=lambda l: logs.append(l.message))
    assert info.template_id and info.build_id
    assert any(m.startswith("[1/") for m in logs), logs
    assert Template.exists(name)
    assert not Template.exists(name_of("never"))

    s = sandbox_of(made, name)
    assert s.commands.run("pwd").stdout.strip() == "/srv/app"
    assert s.commands.run("cat /srv/app/index.html").stdout == "<h1>templated app</h1>\n"
    assert s.commands.run("cat /home/user/hello.txt /home/user/py.txt /tmp/who").stdout == \
        "hello from the context\npy\nroot\n"
    assert s.commands.run("echo $FROM_PY").stdout == "yes\n"
    assert s.commands.run("test -d /home/user/made && echo ok").stdout == "ok\n"
    res = httpx.get(f"https://{s.get_host(3000)}", timeout=10)
    assert res.status_code == 200 and res.text == "<h1>templated app</h1>\n"

    again = []
    Template.build(app_template(), name, on_build_logs=lambda l: again.append(l.message))
    assert not [m for m in again if m.startswith("[")], again
    assert sum(m.startswith("CACHED [") for m in again) == 8, again


def test_tags_and_a_background_build(made):
    name = name_of("tags")
    info = Template.build(Template().from_template("base").run_cmd("echo v1 > /home/user/v"), f"{name}:v1")
    assert info.tags == ["v1"]
    assigned = Template.assign_tags(f"{name}:v1", ["prod"])
    assert assigned.build_id == info.build_id
    assert sorted(t.tag for t in Template.get_tags(info.template_id)) == ["prod", "v1"]
    s = sandbox_of(made, f"{name}:prod")
    assert s.commands.run("cat /home/user/v").stdout == "v1\n"
    Template.remove_tags(name, ["prod"])
    assert [t.tag for t in Template.get_tags(info.template_id)] == ["v1"]

    bg = Template.build_in_background(
        Template().from_template("base").run_cmd(f"sleep 1; echo in-background # {RUN_ID}"), name_of("bg"))
    lines = []
    for _ in range(600):
        st = Template.get_build_status(bg, logs_offset=len(lines))
        lines += [e.message for e in st.log_entries]
        if st.status.value in ("ready", "error"):
            break
        time.sleep(0.1)
    assert st.status.value == "ready", lines
    st = Template.get_build_status(bg, logs_offset=len(lines))
    lines += [e.message for e in st.log_entries]
    assert "in-background" in lines


def test_a_failing_step_raises_build_exception():
    t = Template().from_template("base").run_cmd(f"echo first # {RUN_ID}").run_cmd("exit 7")
    with pytest.raises(BuildException) as e:
        Template.build(t, name_of("fails"))
    assert "step 2: `exit 7` failed with exit code 7" in str(e.value)


def test_the_async_builder():
    async def main():
        name = name_of("async")
        t = (AsyncTemplate().from_template("base").run_cmd(f"echo async > /home/user/a # {RUN_ID}")
             .set_start_cmd("sleep infinity", wait_for_process("sleep")))
        await AsyncTemplate.build(t, name)
        assert await AsyncTemplate.exists(name)
        s = await AsyncSandbox.create(name, metadata={"run": RUN_ID}, timeout=60)
        try:
            assert (await s.commands.run("cat /home/user/a")).stdout == "async\n"
            assert (await s.commands.run("pgrep -x sleep")).exit_code == 0
        finally:
            await s.kill()

    asyncio.run(main())


@pytest.mark.skipif(not os.environ.get("E2E_REGISTRY_AUTH"), reason="no test registry (run through run-platform.sh)")
def test_from_image_with_credentials(made):
    name = name_of("image")
    image = f"{os.environ['E2E_REGISTRY_AUTH']}/private/debian:1"
    t = (Template().from_image(image, username=os.environ["E2E_REGISTRY_USER"],
                               password=os.environ["E2E_REGISTRY_PASSWORD"])
         .run_cmd(f"echo {RUN_ID} > /home/user/run"))
    Template.build(t, name)
    s = sandbox_of(made, name)
    assert s.commands.run("cat /etc/sandbar-test-image").stdout == "made by the template suites\n"
    assert s.commands.run("whoami").stdout == "user\n"
    with pytest.raises(BuildException):
        Template.build(Template().from_image(image).run_cmd("true"), name_of("image-nopw"))
