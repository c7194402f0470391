//! A Dockerfile read as a template build: the instructions a sandbox
//! template has (`FROM`, `RUN`, `COPY`/`ADD`, `ENV`, `ARG`, `WORKDIR`,
//! `USER`, `CMD`/`ENTRYPOINT` as the start command), turned into the steps
//! of E2B's build API as the SDKs' `fromDockerfile` turns them: the
//! instructions run as root in `/` unless the file says otherwise, and the
//! template's own user and workdir are `user` and `/home/user` unless it
//! sets them.
//!
//! Written by hand: no Rust crate parses Dockerfiles to this model, and the
//! subset a template uses is small (line continuations, comments, shell and
//! JSON forms).

use anyhow::{bail, Result};

/// A step of the build API (`type`, `args`); `COPY` steps carry the source
/// paths their files come from, relative to the build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: &'static str,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// What `FROM` names.
    pub from: String,
    pub steps: Vec<Step>,
    pub start_cmd: Option<String>,
}

/// Joins continued lines and drops comments and blank lines.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if current.is_empty() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            start = i + 1;
        } else if line.trim_start().starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push((start, current.trim().to_string()));
                current.clear();
            }
        }
    }
    if !current.trim().is_empty() {
        out.push((start, current.trim().to_string()));
    }
    out
}

/// `["a", "b"]` as words, or `None` when the text is the shell form.
fn json_form(rest: &str) -> Option<Vec<String>> {
    rest.trim_start()
        .starts_with('[')
        .then(|| serde_json::from_str::<Vec<String>>(rest).ok())
        .flatten()
}

/// A command in shell form, or the JSON form's words joined as one.
fn command(rest: &str) -> String {
    match json_form(rest) {
        Some(words) => words.join(" "),
        None => rest.trim().to_string(),
    }
}

/// Shell-like words with quotes removed (for `COPY` and `ENV`).
fn words(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (_, '\\') if quote != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub fn parse(text: &str) -> Result<Parsed> {
    let mut from = None;
    let mut steps = vec![
        Step {
            kind: "USER",
            args: vec!["root".into()],
        },
        Step {
            kind: "WORKDIR",
            args: vec!["/".into()],
        },
    ];
    let (mut user_set, mut workdir_set) = (false, false);
    let mut start_cmd = None;
    for (line_no, line) in logical_lines(text) {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let rest = rest.trim();
        let at = |why: &str| anyhow::anyhow!("Dockerfile line {line_no}: {why}");
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                if from.is_some() {
                    bail!(at("multi-stage Dockerfiles are not supported (one FROM)"));
                }
                let image = rest
                    .split_whitespace()
                    .next()
                    .ok_or_else(|| at("FROM needs an image"))?;
                from = Some(image.to_string());
            }
            "RUN" => {
                let cmd = command(rest);
                if cmd.is_empty() {
                    bail!(at("RUN needs a command"));
                }
                steps.push(Step {
                    kind: "RUN",
                    args: vec![cmd],
                });
            }
            "COPY" | "ADD" => {
                let mut parts = json_form(rest).unwrap_or_else(|| words(rest));
                let mut owner = String::new();
                while parts.first().is_some_and(|p| p.starts_with("--")) {
                    let flag = parts.remove(0);
                    match flag.split_once('=') {
                        Some(("--chown", v)) => owner = v.to_string(),
                        _ => bail!(at(&format!(
                            "{word} {flag} is not supported (only --chown)"
                        ))),
                    }
                }
                if parts.len() < 2 {
                    bail!(at(&format!("{word} needs a source and a destination")));
                }
                let dest = parts.pop().expect("two or more");
                for src in parts {
                    if src.contains("://") {
                        bail!(at("ADD of a URL is not supported: RUN curl it"));
                    }
                    steps.push(Step {
                        kind: "COPY",
                        args: vec![src, dest.clone(), owner.clone(), String::new()],
                    });
                }
            }
            "ENV" | "ARG" => {
                let parts = words(rest);
                let mut args = Vec::new();
                if parts.len() == 2 && !parts[0].contains('=') {
                    // `ENV NAME value`
                    args.extend(parts);
                } else if word.eq_ignore_ascii_case("ENV")
                    && parts.len() > 2
                    && !parts[0].contains('=')
                {
                    args.push(parts[0].clone());
                    args.push(parts[1..].join(" "));
                } else {
                    for p in parts {
                        match p.split_once('=') {
                            Some((k, v)) => {
                                args.push(k.to_string());
                                args.push(v.to_string());
                            }
                            // `ARG NAME` without a default.
                            None if word.eq_ignore_ascii_case("ARG") => {
                                args.push(p);
                                args.push(String::new());
                            }
                            None => bail!(at(&format!("ENV {p}: expected NAME=value"))),
                        }
                    }
                }
                if args.is_empty() {
                    bail!(at(&format!("{word} needs a name")));
                }
                steps.push(Step { kind: "ENV", args });
            }
            "WORKDIR" => {
                workdir_set = true;
                steps.push(Step {
                    kind: "WORKDIR",
                    args: vec![rest.to_string()],
                });
            }
            "USER" => {
                user_set = true;
                let user = rest
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                steps.push(Step {
                    kind: "USER",
                    args: vec![user],
                });
            }
            "CMD" | "ENTRYPOINT" => start_cmd = Some(command(rest)),
            "EXPOSE" | "VOLUME" | "LABEL" | "MAINTAINER" | "STOPSIGNAL" | "HEALTHCHECK"
            | "SHELL" | "ONBUILD" => {
                eprintln!("note: Dockerfile line {line_no}: {word} has no meaning for a sandbox template; ignored");
            }
            other => bail!(at(&format!("unknown instruction {other}"))),
        }
    }
    if !user_set {
        steps.push(Step {
            kind: "USER",
            args: vec!["user".into()],
        });
    }
    if !workdir_set {
        steps.push(Step {
            kind: "WORKDIR",
            args: vec!["/home/user".into()],
        });
    }
    let from = from.ok_or_else(|| anyhow::anyhow!("the Dockerfile has no FROM"))?;
    Ok(Parsed {
        from,
        steps,
        start_cmd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(p: &Parsed) -> Vec<&str> {
        p.steps.iter().map(|s| s.kind).collect()
    }

    #[test]
    fn a_dockerfile_becomes_steps() {
        let p = parse(
            "# a template\nFROM e2bdev/base:latest\nENV A=1 B=\"two words\"\nARG V\nRUN apt-get update && \\\n    apt-get install -y jq\n\nCOPY --chown=user app/ main.py /srv/\nWORKDIR /srv\nEXPOSE 3000\nCMD [\"python3\", \"-m\", \"http.server\", \"3000\"]\n",
        )
        .unwrap();
        assert_eq!(p.from, "e2bdev/base:latest");
        assert_eq!(
            kinds(&p),
            ["USER", "WORKDIR", "ENV", "ENV", "RUN", "COPY", "COPY", "WORKDIR", "USER"]
        );
        assert_eq!(p.steps[2].args, ["A", "1", "B", "two words"]);
        assert_eq!(p.steps[3].args, ["V", ""]);
        assert_eq!(
            p.steps[4].args,
            ["apt-get update &&      apt-get install -y jq"]
        );
        assert_eq!(p.steps[5].args, ["app/", "/srv/", "user", ""]);
        assert_eq!(p.steps[6].args[0], "main.py");
        assert_eq!(p.steps.last().unwrap().args, ["user"]);
        assert_eq!(p.start_cmd.as_deref(), Some("python3 -m http.server 3000"));
    }

    #[test]
    fn what_a_template_cannot_be_is_an_error_with_the_line() {
        let e = parse("FROM a\nFROM b\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("multi-stage"), "{e}");
        assert!(parse("RUN true\n")
            .unwrap_err()
            .to_string()
            .contains("no FROM"));
        let e = parse("FROM a\nFROB x\n").unwrap_err().to_string();
        assert!(e.contains("unknown instruction FROB"), "{e}");
        assert!(parse("FROM a\nADD https://x/y /z\n").is_err());
        assert!(parse("FROM a\nCOPY --from=build /a /b\n").is_err());
    }

    #[test]
    fn env_forms() {
        let p = parse("FROM a\nENV PATH /opt/bin:/usr/bin\nENV NAME some words here\n").unwrap();
        assert_eq!(p.steps[2].args, ["PATH", "/opt/bin:/usr/bin"]);
        assert_eq!(p.steps[3].args, ["NAME", "some words here"]);
    }
}
