//! What each step does inside the build sandbox, through envd as any
//! client would: `RUN` is the command as the step's user in the workdir
//! with the build's env vars; `COPY` uploads the step's tar and unpacks it
//! with Docker's rules (a directory's contents into the destination, a
//! file into a destination directory or as the destination); `WORKDIR`
//! makes the directory; `USER` makes the user if the image lacks it.

use sandbar_runtime::ENVD_PORT;
use sandbar_sandbox_client::process::{self, Command, Event};

use super::plan::{Settings, Step, StepKind};
use super::{Failure, Logger};
use crate::AppState;

/// Unpacks `$SB_TAR` and copies what `$SB_SRC` (a glob, relative to the
/// build context) matches to `$SB_DEST` as `docker build` would; then the
/// owner and mode of what it copied. Values come in the environment, never
/// in the script's text.
const COPY_SCRIPT: &str = r#"set -euo pipefail
shopt -s nullglob dotglob globstar
ctx=$(mktemp -d /tmp/.sandbar-context.XXXXXX)
trap 'rm -rf "$ctx" "$SB_TAR"' EXIT
tar -xf "$SB_TAR" -C "$ctx" --no-same-owner
cd "$ctx"
IFS=
matches=( $SB_SRC )
unset IFS
if [ ${#matches[@]} -eq 0 ]; then
  echo "COPY: nothing in the uploaded files matches '$SB_SRC'" >&2
  exit 1
fi
dest=$SB_DEST
if [ ${#matches[@]} -gt 1 ] || [[ "$dest" == */ ]]; then mkdir -p "$dest"; fi
targets=()
for m in "${matches[@]}"; do
  if [ -d "$m" ] && [ ! -L "$m" ]; then
    mkdir -p "$dest"
    cp -a "$m"/. "$dest"/
    while IFS= read -r -d '' f; do targets+=("$dest/${f#./}"); done < <(cd "$m" && find . -mindepth 1 -print0)
  elif [ -d "$dest" ]; then
    cp -a "$m" "$dest"/
    targets+=("${dest%/}/$(basename "$m")")
  else
    mkdir -p "$(dirname "$dest")"
    cp -a "$m" "$dest"
    targets+=("$dest")
  fi
done
if [ ${#targets[@]} -gt 0 ]; then
  owner=$SB_OWNER
  [[ "$owner" == *:* ]] || owner="$owner:"
  chown -h "$owner" "${targets[@]}"
  if [ -n "$SB_MODE" ]; then
    for t in "${targets[@]}"; do [ -L "$t" ] || chmod "$SB_MODE" "$t"; done
  fi
fi
echo "copied ${#targets[@]} file(s) to $dest"
"#;

/// `WORKDIR`: the directory, owned by the build's user when made here.
const WORKDIR_SCRIPT: &str = r#"set -eu
if [ ! -d "$SB_DIR" ]; then mkdir -p "$SB_DIR"; chown "$SB_OWNER:" "$SB_DIR"; fi"#;

/// `USER`: the user, with a home and passwordless sudo as `user` has,
/// unless the image has it.
const USER_SCRIPT: &str = r#"set -eu
if ! id -u "$SB_USER" >/dev/null 2>&1; then
  useradd -m -s /bin/bash "$SB_USER"
  echo "made user $SB_USER"
fi"#;

/// The built-in template an image reference stands for: E2B's own base
/// images are sandbar's built-in templates.
pub(super) fn builtin_for_image(reference: &str) -> Option<&'static str> {
    let bare = reference
        .strip_prefix("docker.io/")
        .unwrap_or(reference)
        .split([':', '@'])
        .next()
        .unwrap_or_default();
    match bare {
        "e2bdev/base" => Some("base"),
        "e2bdev/code-interpreter" => Some("code-interpreter-v1"),
        _ => None,
    }
}

/// What an image needs to be a sandbox's root: the `user` account (uid
/// 1000 where free) with its home, and passwordless sudo where the image
/// has sudo. Run as root once per image (a cached step).
pub(super) const PREPARE_IMAGE: &str = r#"set -e
if ! id -u user >/dev/null 2>&1; then
  if getent passwd 1000 >/dev/null; then useradd -m -s /bin/bash user; else useradd -m -u 1000 -s /bin/bash user; fi
  echo "made the user 'user'"
fi
mkdir -p /home/user && chown user: /home/user
if command -v sudo >/dev/null 2>&1; then
  mkdir -p /etc/sudoers.d
  echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/sandbar-user
  chmod 0440 /etc/sudoers.d/sandbar-user
else
  echo "the image has no sudo: 'user' cannot become root (add aptInstall(['sudo']) to the template)"
fi"#;

/// A base from a registry image: its root filesystem (pulled unless this
/// team pulled that exact digest before), its env vars, and the step that
/// prepares it.
pub(super) async fn image_base(
    state: &AppState,
    team: &sandbar_store::TemplateRecord,
    plan: &super::plan::Plan,
    log: &Logger,
) -> Result<super::Base, Failure> {
    let super::plan::From::Image {
        reference,
        username,
        password,
    } = &plan.from
    else {
        unreachable!("called for images only")
    };
    let base = |m: String| Failure::at("base", m);
    let src = super::image::source(
        &state.config.registry_mirrors,
        reference,
        username,
        password,
    )
    .map_err(base)?;
    log.line(
        "info",
        Some("base"),
        format!("Resolving {reference} ({})", src.reference),
    );
    let digest = state
        .backend
        .image_digest(&src)
        .await
        .map_err(|e| base(format!("image '{reference}': {e}")))?;
    let name = super::image::rootfs_name(&team.team_id, &digest);
    // Leased until the build ends: the sweep leaves it alone meanwhile.
    let lease = state.leases.hold(&name);
    if state.backend.has_template(&name) {
        log.line(
            "info",
            Some("base"),
            format!("CACHED image {reference} ({digest})"),
        );
    } else {
        let log2 = log.clone();
        state
            .backend
            .import_image(
                &name,
                &src,
                &digest,
                std::sync::Arc::new(move |line: &str| log2.line("info", Some("base"), line)),
            )
            .await
            .map_err(|e| base(format!("image '{reference}': {e}")))?;
    }
    let env = state.backend.template_env(&name).into_iter().collect();
    let identity = format!(
        "image:{digest}@{}",
        state.backend.template_version(&name).unwrap_or_default()
    );
    Ok(super::Base {
        template: name,
        layer: None,
        settings: Settings {
            envs: env,
            ..Settings::default()
        },
        // Layers made on one import of the image are only valid on it.
        identity,
        prepare: Some(PREPARE_IMAGE.to_string()),
        lease: Some(lease),
    })
}

/// A connection to envd in sandbox `id`.
async fn envd(state: &AppState, id: &str) -> Result<tokio::net::TcpStream, String> {
    state
        .backend
        .dial(id, ENVD_PORT)
        .await
        .map_err(|e| format!("reaching the sandbox's envd: {e}"))
}

/// Runs `command` in the sandbox, its output into the build log under
/// `step`; its exit code.
async fn exec(
    state: &AppState,
    id: &str,
    token: &str,
    command: &Command,
    log: &Logger,
    step: &str,
) -> Result<i32, String> {
    let stream = envd(state, id).await?;
    let code = process::run(stream, Some(token), command, |event| match event {
        Event::Stdout(b) | Event::Pty(b) => log.output("stdout", step, b),
        Event::Stderr(b) => log.output("stderr", step, b),
        Event::Started { .. } | Event::Exited { .. } => {}
    })
    .await;
    log.end_output(step);
    code
}

/// A command as the build's settings say (env vars, workdir, user).
fn command_in(line: &str, settings: &Settings, user: Option<&str>) -> Command {
    let mut c = Command::shell(line);
    c.envs = settings.envs.clone();
    c.cwd = Some(settings.workdir.clone());
    c.user = Some(user.unwrap_or(&settings.user).to_string());
    c
}

/// A script as root with `envs` (values stay out of the script's text).
fn root_script(script: &str, envs: &[(&str, &str)]) -> Command {
    let mut c = Command::shell(script);
    c.envs = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c.cwd = Some("/".into());
    c.user = Some("root".into());
    c
}

pub(super) async fn run_step(
    state: &AppState,
    id: &str,
    token: &str,
    team_id: &str,
    step: &Step,
    settings: &Settings,
    log: &Logger,
) -> Result<(), String> {
    let n = step.number.to_string();
    let (command, what) = match &step.kind {
        StepKind::Run { cmd, user } => (
            command_in(cmd, settings, user.as_deref()),
            format!("`{cmd}`"),
        ),
        StepKind::Copy {
            src,
            dest,
            user,
            mode,
            files_hash,
        } => {
            let files = state
                .builds
                .files()
                .ok_or_else(|| "this server keeps no build files".to_string())?;
            let bytes = files
                .read_for_build(team_id, files_hash)
                .await
                .map_err(|e| {
                    format!("the files of this step (hash {files_hash}) were not uploaded: {e}")
                })?;
            let tar = format!("/tmp/.sandbar-copy-{files_hash}.tar");
            let stream = envd(state, id).await?;
            process::upload(stream, Some(token), &tar, "root", bytes.into()).await?;
            let dest = settings.resolve(dest);
            // A destination that names a directory keeps its slash.
            let dest = if step_dest_is_dir(&step.kind) && !dest.ends_with('/') {
                format!("{dest}/")
            } else {
                dest
            };
            let owner = user.clone().unwrap_or_else(|| settings.user.clone());
            (
                root_script(
                    COPY_SCRIPT,
                    &[
                        ("SB_TAR", &tar),
                        ("SB_SRC", src),
                        ("SB_DEST", &dest),
                        ("SB_OWNER", &owner),
                        ("SB_MODE", mode.as_deref().unwrap_or("")),
                    ],
                ),
                format!("copying {src} to {dest}"),
            )
        }
        StepKind::Workdir(d) => {
            let dir = settings.resolve(d);
            (
                root_script(
                    WORKDIR_SCRIPT,
                    &[("SB_DIR", &dir), ("SB_OWNER", &settings.user)],
                ),
                format!("making {dir}"),
            )
        }
        StepKind::User(u) => (
            root_script(USER_SCRIPT, &[("SB_USER", u)]),
            format!("making user {u}"),
        ),
        StepKind::Env(_) => return Ok(()),
    };
    let code = exec(state, id, token, &command, log, &n).await?;
    if code != 0 {
        return Err(format!("{what} failed with exit code {code}"));
    }
    Ok(())
}

/// Whether a `COPY` step's destination (as given) names a directory.
fn step_dest_is_dir(kind: &StepKind) -> bool {
    matches!(kind, StepKind::Copy { dest, .. } if dest.ends_with('/') || dest == "." || dest.ends_with("/."))
}

/// A command's exit code, its output dropped (ready checks).
pub(super) async fn run_quiet(
    state: &AppState,
    id: &str,
    token: Option<&str>,
    line: &str,
    settings: &Settings,
) -> Result<i32, String> {
    let stream = envd(state, id).await?;
    process::run(stream, token, &command_in(line, settings, None), |_| {}).await
}

/// Starts the template's start command in the build sandbox, waits for
/// its ready command, and takes the layer its sandboxes start on: with
/// the running processes where the node can checkpoint them, else its
/// files (its sandboxes then run the start command when they boot).
pub(super) async fn start_and_snapshot(
    state: &AppState,
    id: &str,
    token: &str,
    settings: &Settings,
    log: &Logger,
    leases: &mut Vec<crate::leases::Lease>,
) -> Result<String, String> {
    let start = settings
        .start_cmd
        .as_deref()
        .expect("called with a start command");
    log.line(
        "info",
        Some("finalize"),
        format!("Running the start command: {start}"),
    );
    let stream = envd(state, id).await?;
    let command = command_in(start, settings, None);
    let (log2, token2) = (log.clone(), token.to_string());
    let mut running = tokio::spawn(async move {
        process::run(stream, Some(&token2), &command, |event| match event {
            Event::Stdout(b) | Event::Pty(b) => log2.output("stdout", "finalize", b),
            Event::Stderr(b) => log2.output("stderr", "finalize", b),
            _ => {}
        })
        .await
    });
    let ready = match settings.ready_cmd.as_deref() {
        Some(ready) => {
            let checks = super::wait_ready(
                state,
                id,
                Some(token),
                settings,
                ready,
                super::READY_TIMEOUT,
            );
            tokio::pin!(checks);
            // A start command that exits 0 may have started a daemon: the
            // ready command decides. One that fails will never be ready.
            let mut ended = false;
            let waited = loop {
                tokio::select! {
                    w = &mut checks => break w,
                    end = &mut running, if !ended => match end {
                        Ok(Ok(0)) => ended = true,
                        Ok(Ok(code)) => break Err(format!("the start command exited with code {code} before its ready command passed")),
                        Ok(Err(e)) => break Err(format!("the start command: {e}")),
                        Err(_) => break Err("the start command's stream ended".to_string()),
                    },
                }
            };
            waited.map(|tries| format!("ready after {tries} check(s) of `{ready}`"))
        }
        None => Ok("no ready command: ready once started".to_string()),
    };
    // Our stream goes; the process runs on in envd.
    running.abort();
    let ready = ready?;
    log.line("info", Some("finalize"), format!("Start command {ready}"));
    if state.backend.memory_snapshots() {
        match super::snapshot_leased(state, id, true, leases).await {
            Ok(layer) => {
                log.line(
                    "info",
                    Some("finalize"),
                    "Saved the running start command with the files: sandboxes start with it running",
                );
                return Ok(layer);
            }
            Err(e) => log.line(
                "warn",
                Some("finalize"),
                format!("The start command's processes could not be saved ({e}); sandboxes will run it when they start"),
            ),
        }
    }
    super::snapshot_leased(state, id, false, leases)
        .await
        .map_err(|e| format!("saving the template's files: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2b_base_images_are_the_builtin_templates() {
        assert_eq!(builtin_for_image("e2bdev/base"), Some("base"));
        assert_eq!(
            builtin_for_image("docker.io/e2bdev/base:latest"),
            Some("base")
        );
        assert_eq!(
            builtin_for_image("e2bdev/code-interpreter:1.0"),
            Some("code-interpreter-v1")
        );
        assert_eq!(builtin_for_image("python:3.12"), None);
    }
}
