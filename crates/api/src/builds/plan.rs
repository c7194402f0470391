//! A build request turned into checked steps, the settings each step runs
//! with, and the step cache's keys. Pure: no sandbox, no store.
//!
//! The SDKs send five step types (`RUN`, `COPY`, `ENV`, `WORKDIR`,
//! `USER`); every builder method (`aptInstall`, `pipInstall`, `gitClone`,
//! `makeDir`, `remove`, ...) is a `RUN` the SDK has already written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::templates::{BuildStart, StepIn};

/// Bumped when what a step does changes, so that cached layers are not
/// reused for a different meaning.
const CACHE_VERSION: &str = "sandbar-build-step-1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    Run {
        cmd: String,
        user: Option<String>,
    },
    Copy {
        src: String,
        dest: String,
        user: Option<String>,
        mode: Option<String>,
        files_hash: String,
    },
    Env(Vec<(String, String)>),
    Workdir(String),
    User(String),
}

impl StepKind {
    /// Whether the step changes files (and so runs in the build sandbox
    /// and leaves a layer); `ENV` only changes the settings.
    pub fn touches_files(&self) -> bool {
        !matches!(self, Self::Env(_))
    }

    /// How the step reads in the build log.
    pub fn describe(&self) -> String {
        match self {
            Self::Run { cmd, user } => match user {
                Some(u) => format!("RUN (as {u}) {cmd}"),
                None => format!("RUN {cmd}"),
            },
            Self::Copy { src, dest, .. } => format!("COPY {src} {dest}"),
            Self::Env(pairs) => format!(
                "ENV {}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Self::Workdir(d) => format!("WORKDIR {d}"),
            Self::User(u) => format!("USER {u}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based, as the SDKs number steps in `reason.step` (0 is the base).
    pub number: usize,
    pub kind: StepKind,
    pub force: bool,
}

/// Where a build starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// A template by name: built-in or one of the team's.
    Template(String),
    /// An image from a registry.
    Image {
        reference: String,
        username: Option<String>,
        password: Option<String>,
    },
}

/// What a sandbox of the template starts with, and what each step runs
/// with: kept as the ready build's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    pub user: String,
    pub workdir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
}

impl Default for Settings {
    /// A built-in template's: commands run as `user` in its home.
    fn default() -> Self {
        Self {
            envs: BTreeMap::new(),
            user: "user".into(),
            workdir: "/home/user".into(),
            start_cmd: None,
            ready_cmd: None,
        }
    }
}

impl Settings {
    /// The settings after `step` (which must be valid).
    pub fn after(&self, step: &StepKind) -> Self {
        let mut next = self.clone();
        match step {
            StepKind::Env(pairs) => next.envs.extend(pairs.iter().cloned()),
            StepKind::Workdir(d) => next.workdir = self.resolve(d),
            StepKind::User(u) => next.user = u.clone(),
            StepKind::Run { .. } | StepKind::Copy { .. } => {}
        }
        next
    }

    /// A path of a step, relative ones from the workdir.
    pub fn resolve(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{}", self.workdir.trim_end_matches('/'), path)
        }
    }
}

/// A checked build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub from: From,
    pub force: bool,
    pub steps: Vec<Step>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
}

fn env_name_ok(k: &str) -> bool {
    !k.is_empty() && !k.contains(['=', '\0'])
}

/// User names as `useradd` takes them.
pub fn user_name_ok(u: &str) -> bool {
    let mut bytes = u.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && u.len() <= 32
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn files_hash_ok(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

fn nonempty(s: Option<&String>) -> Option<String> {
    s.map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn step_of(number: usize, raw: &StepIn) -> Result<Step, String> {
    let at = |why: String| format!("step {number} ({}): {why}", raw.kind);
    let args = &raw.args;
    let kind = match raw.kind.as_str() {
        "RUN" => {
            let cmd = nonempty(args.first()).ok_or_else(|| at("no command".into()))?;
            let user = nonempty(args.get(1));
            if let Some(u) = &user {
                if !user_name_ok(u) {
                    return Err(at(format!("'{u}' is not a user name")));
                }
            }
            StepKind::Run { cmd, user }
        }
        "COPY" => {
            let src = nonempty(args.first()).ok_or_else(|| at("no source".into()))?;
            let dest = nonempty(args.get(1)).ok_or_else(|| at("no destination".into()))?;
            if src.starts_with('/') || src.split('/').any(|c| c == "..") {
                return Err(at(format!(
                    "source '{src}' must be a path inside the build context"
                )));
            }
            let user = nonempty(args.get(2));
            if let Some(u) = &user {
                let name = u.split(':').next().unwrap_or_default();
                if !user_name_ok(name) {
                    return Err(at(format!("'{u}' is not a user name")));
                }
            }
            let mode = nonempty(args.get(3));
            if let Some(m) = &mode {
                if !(m.len() <= 4 && m.bytes().all(|b| (b'0'..=b'7').contains(&b))) {
                    return Err(at(format!("mode '{m}' is not an octal mode")));
                }
            }
            let files_hash = raw
                .files_hash
                .clone()
                .filter(|h| files_hash_ok(h))
                .ok_or_else(|| at("filesHash (64 hex digits) is required".into()))?;
            StepKind::Copy {
                src,
                dest,
                user,
                mode,
                files_hash,
            }
        }
        "ENV" | "ARG" => {
            if args.is_empty() || !args.len().is_multiple_of(2) {
                return Err(at("args must be name, value pairs".into()));
            }
            let pairs: Vec<(String, String)> = args
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect();
            if let Some((k, _)) = pairs.iter().find(|(k, _)| !env_name_ok(k)) {
                return Err(at(format!("{k:?} is not a variable name")));
            }
            if pairs.iter().any(|(_, v)| v.contains('\0')) {
                return Err(at("a value holds a NUL byte".into()));
            }
            StepKind::Env(pairs)
        }
        "WORKDIR" => StepKind::Workdir(nonempty(args.first()).ok_or_else(|| at("no directory".into()))?),
        "USER" => {
            let u = nonempty(args.first()).ok_or_else(|| at("no user".into()))?;
            if !user_name_ok(&u) {
                return Err(at(format!("'{u}' is not a user name")));
            }
            StepKind::User(u)
        }
        other => {
            return Err(format!(
                "step {number}: unknown step type '{other}' (sandbar builds RUN, COPY, ENV, ARG, WORKDIR and USER)"
            ))
        }
    };
    Ok(Step {
        number,
        kind,
        force: raw.force,
    })
}

/// Checks a build start body: exactly one base, known step types with
/// their arguments.
pub fn plan(body: &BuildStart) -> Result<Plan, String> {
    let image = nonempty(body.from_image.as_ref());
    let template = nonempty(body.from_template.as_ref());
    let from = match (image, template) {
        (Some(_), Some(_)) => return Err("give fromImage or fromTemplate, not both".into()),
        (None, None) => return Err("fromImage or fromTemplate is required".into()),
        (None, Some(t)) => From::Template(t),
        (Some(reference), None) => {
            let (username, password) = match &body.from_image_registry {
                None => (None, None),
                Some(r) if r.kind == "registry" => (r.username.clone(), r.password.clone()),
                Some(r) => {
                    return Err(format!(
                        "fromImageRegistry type '{}' is not supported by sandbar (use 'registry' with a username and password, or a mirror)",
                        r.kind
                    ))
                }
            };
            From::Image {
                reference,
                username,
                password,
            }
        }
    };
    let steps = body
        .steps
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, raw)| step_of(i + 1, raw))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan {
        from,
        force: body.force.unwrap_or(false),
        steps,
        start_cmd: nonempty(body.start_cmd.as_ref()),
        ready_cmd: nonempty(body.ready_cmd.as_ref()),
    })
}

/// The cache key of the base: the team (uploaded files are the team's
/// word, never checked against their hash, so caches are never shared
/// between teams) and what the base is exactly.
pub fn base_key(team_id: &str, base_identity: &str) -> String {
    chain(
        CACHE_VERSION,
        &[team_id.as_bytes(), base_identity.as_bytes()],
    )
}

/// The key of a step on top of `parent`'s.
pub fn step_key(parent: &str, step: &StepKind) -> String {
    let canonical = match step {
        StepKind::Run { cmd, user } => {
            serde_json::json!(["RUN", cmd, user])
        }
        StepKind::Copy {
            src,
            dest,
            user,
            mode,
            files_hash,
        } => serde_json::json!(["COPY", src, dest, user, mode, files_hash]),
        StepKind::Env(pairs) => serde_json::json!(["ENV", pairs]),
        StepKind::Workdir(d) => serde_json::json!(["WORKDIR", d]),
        StepKind::User(u) => serde_json::json!(["USER", u]),
    };
    chain(parent, &[canonical.to_string().as_bytes()])
}

/// The key of the finished template: its last step's and the commands its
/// sandboxes start with (the layer then carries the running start command).
pub fn start_key(parent: &str, start_cmd: &str, ready_cmd: Option<&str>) -> String {
    chain(
        parent,
        &[
            b"START",
            start_cmd.as_bytes(),
            ready_cmd.unwrap_or("").as_bytes(),
        ],
    )
}

fn chain(parent: &str, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// A template name or tag: lowercase letters, digits, `-`, `_` and `.`.
pub fn part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// Splits what a client names a template by into `(name, tag)`:
/// `name`, `name:tag`, `team/name[:tag]` (the namespace must be the
/// caller's team). Names are `[a-z0-9_-]` (and `.`), tags `[a-z0-9_.-]`.
pub fn name_and_tag(raw: &str, team: &str) -> Result<(String, Option<String>), String> {
    let raw = raw.trim();
    let (path, tag) = match raw.rsplit_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (raw, None),
    };
    let name = match path.split_once('/') {
        Some((ns, name)) if ns == team => name,
        Some((ns, _)) => {
            return Err(format!(
                "template name '{raw}': namespace '{ns}' is not your team's ('{team}')"
            ))
        }
        None => path,
    };
    if !part_ok(name) || name.starts_with('.') || !tag.is_none_or(part_ok) {
        return Err(format!(
            "template name '{raw}': names and tags are lowercase letters, digits, '-', '_' and '.'"
        ));
    }
    Ok((name.to_string(), tag.map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: &str, args: &[&str]) -> StepIn {
        StepIn {
            kind: kind.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            files_hash: None,
            force: false,
        }
    }

    fn body(steps: Vec<StepIn>) -> BuildStart {
        BuildStart {
            from_template: Some("base".into()),
            steps: Some(steps),
            ..Default::default()
        }
    }

    #[test]
    fn steps_are_checked_and_numbered_from_one() {
        let mut copy = step("COPY", &["app.py", "/app/", "", "0755"]);
        copy.files_hash = Some("a".repeat(64));
        let p = plan(&body(vec![
            step("RUN", &["echo hi", "root"]),
            copy,
            step("ENV", &["A", "1", "B", "two words"]),
            step("WORKDIR", &["app"]),
            step("USER", &["web"]),
        ]))
        .unwrap();
        assert_eq!(p.from, From::Template("base".into()));
        assert_eq!(p.steps.len(), 5);
        assert_eq!(p.steps[0].number, 1);
        assert_eq!(
            p.steps[0].kind,
            StepKind::Run {
                cmd: "echo hi".into(),
                user: Some("root".into())
            }
        );
        let mut s = Settings::default();
        for st in &p.steps {
            s = s.after(&st.kind);
        }
        assert_eq!(s.workdir, "/home/user/app");
        assert_eq!(s.user, "web");
        assert_eq!(s.envs["B"], "two words");
    }

    #[test]
    fn bad_steps_say_which_and_why() {
        let e = plan(&body(vec![step("RUN", &["ls"]), step("FROB", &["x"])])).unwrap_err();
        assert!(e.starts_with("step 2: unknown step type 'FROB'"), "{e}");
        let e = plan(&body(vec![step("COPY", &["a", "/b"])])).unwrap_err();
        assert!(e.contains("filesHash"), "{e}");
        let mut up = step("COPY", &["../etc/passwd", "/b"]);
        up.files_hash = Some("b".repeat(64));
        assert!(plan(&body(vec![up]))
            .unwrap_err()
            .contains("inside the build context"));
        assert!(plan(&body(vec![step("ENV", &["A"])])).is_err());
        assert!(plan(&body(vec![step("USER", &["Root!"])])).is_err());
        assert!(plan(&BuildStart::default())
            .unwrap_err()
            .contains("required"));
        let both = BuildStart {
            from_image: Some("x".into()),
            from_template: Some("base".into()),
            ..Default::default()
        };
        assert!(plan(&both).unwrap_err().contains("not both"));
    }

    #[test]
    fn keys_chain_every_step_and_the_team() {
        let a = base_key("t1", "base@h");
        assert_ne!(a, base_key("t2", "base@h"), "teams never share a cache");
        let run = StepKind::Run {
            cmd: "ls".into(),
            user: None,
        };
        let k1 = step_key(&a, &run);
        assert_eq!(k1, step_key(&a, &run), "deterministic");
        let other = StepKind::Run {
            cmd: "ls -l".into(),
            user: None,
        };
        assert_ne!(k1, step_key(&a, &other));
        assert_ne!(step_key(&k1, &run), step_key(&step_key(&a, &other), &run));
        assert_ne!(
            start_key(&k1, "srv", None),
            start_key(&k1, "srv", Some("true"))
        );
    }

    #[test]
    fn names_and_tags() {
        assert_eq!(name_and_tag("web", "team").unwrap(), ("web".into(), None));
        assert_eq!(
            name_and_tag("team/web:v1.2", "team").unwrap(),
            ("web".into(), Some("v1.2".into()))
        );
        assert!(name_and_tag("other/web", "team").is_err());
        assert!(name_and_tag("Web", "team").is_err());
        assert!(name_and_tag("", "team").is_err());
        assert!(name_and_tag("web:", "team").is_err());
        assert!(name_and_tag("../x", "team").is_err());
    }
}
