//! `sandbar template build|ls`, on the runtime's template store.

use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sandbar_runtime::templates::TemplateStore;

use crate::layout::DataDir;

pub async fn build(data: &DataDir, name: &str, uid_base: u32) -> Result<()> {
    let store = TemplateStore::open(data.templates_dir()).context("opening the template store")?;
    if store.is_current(name, uid_base) {
        println!("template '{name}' is up to date");
        return Ok(());
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("building template '{name}'"));
    let name_owned = name.to_string();
    let progress_bar = bar.clone();
    // The build runs external tools for minutes: keep it off the async threads.
    let built = tokio::task::spawn_blocking(move || {
        store.build_builtin(&name_owned, uid_base, &|line: &str| {
            progress_bar.set_message(line.trim().chars().take(100).collect::<String>())
        })
    })
    .await
    .context("the template build thread failed")?;
    match built {
        Ok(t) => {
            bar.finish_with_message(format!(
                "template '{}' built at {}",
                t.meta.name,
                t.rootfs.display()
            ));
            Ok(())
        }
        Err(e) => {
            bar.abandon_with_message(format!("building template '{name}' failed"));
            Err(e).with_context(|| format!("building template '{name}'"))
        }
    }
}

pub fn list(data: &DataDir, json: bool) -> Result<()> {
    let store = TemplateStore::open(data.templates_dir()).context("opening the template store")?;
    if json {
        for t in store.list()? {
            let row = serde_json::json!({
                "name": t.name,
                "kind": "built-in",
                "builtAt": t.built_at,
                "description": t.description,
            });
            println!("{row}");
        }
        return Ok(());
    }
    println!("{:<30} {:<22} DESCRIPTION", "NAME", "BUILT");
    for t in store.list()? {
        println!(
            "{:<30} {:<22} {}",
            t.name,
            t.built_at.format("%Y-%m-%d %H:%M:%S"),
            t.description
        );
    }
    Ok(())
}

/// What `template build` builds on the server (a Dockerfile or an SDK-style
/// definition, `Template.toJSON()`'s output).
pub struct RemoteBuild<'a> {
    pub name: &'a str,
    pub dockerfile: Option<&'a std::path::Path>,
    pub definition: Option<&'a std::path::Path>,
    pub context: &'a std::path::Path,
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u64>,
    pub ready_cmd: Option<&'a str>,
    pub skip_cache: bool,
}

/// The files a `COPY` step needs: its hash and the tar of them.
type StepFiles = (String, Vec<u8>);

/// The build's body (`POST /v2/templates/{id}/builds/{buildID}`) and the
/// files each `COPY` step needs, by hash.
fn definition_of(b: &RemoteBuild<'_>) -> Result<(serde_json::Value, Vec<StepFiles>)> {
    use serde_json::{json, Value};
    let mut body = if let Some(path) = b.dockerfile {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed = crate::dockerfile::parse(&text)?;
        let steps: Vec<Value> = parsed
            .steps
            .iter()
            .map(|s| json!({"type": s.kind, "args": s.args}))
            .collect();
        let mut body = json!({"steps": steps, "startCmd": parsed.start_cmd});
        if TemplateStore::builtin_names().contains(&parsed.from.as_str()) {
            body["fromTemplate"] = json!(parsed.from);
        } else {
            body["fromImage"] = json!(parsed.from);
        }
        body
    } else if let Some(path) = b.definition {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a template definition (JSON)", path.display()))?
    } else {
        anyhow::bail!("give --dockerfile or --definition (or the name of a built-in template)");
    };
    if let Some(ready) = b.ready_cmd {
        body["readyCmd"] = json!(ready);
    }
    if b.skip_cache {
        body["force"] = json!(true);
    }
    let mut files = Vec::new();
    if let Some(steps) = body["steps"].as_array_mut() {
        for step in steps.iter_mut().filter(|s| s["type"] == "COPY") {
            let src = step["args"][0].as_str().unwrap_or_default().to_string();
            let dest = step["args"][1].as_str().unwrap_or_default().to_string();
            let tar = context_tar(b.context, &src)?;
            let hash = match step["filesHash"].as_str() {
                Some(h) => h.to_string(),
                None => {
                    use sha2::{Digest, Sha256};
                    let mut h = Sha256::new();
                    h.update(format!("COPY {src} {dest}").as_bytes());
                    h.update(&tar);
                    hex::encode(h.finalize())
                }
            };
            step["filesHash"] = json!(hash);
            files.push((hash, tar));
        }
    }
    Ok((body, files))
}

/// A tar of `src` (a file or a directory, relative to `context`) with paths
/// as the build's `COPY` reads them; owners and times zeroed, so the same
/// files make the same tar.
fn context_tar(context: &std::path::Path, src: &str) -> Result<Vec<u8>> {
    if src.contains(['*', '?', '[']) {
        anyhow::bail!(
            "COPY {src}: globs are not supported by the CLI (the SDKs' builders take them)"
        );
    }
    let rel = std::path::Path::new(src.trim_end_matches('/'));
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        anyhow::bail!("COPY {src}: the source must be inside the build context");
    }
    let full = context.join(rel);
    let meta = std::fs::symlink_metadata(&full).with_context(|| {
        format!(
            "COPY {src}: {} not found in the build context",
            full.display()
        )
    })?;
    let mut paths = vec![rel.to_path_buf()];
    if meta.is_dir() {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(context.join(&dir))?
                .map(|e| e.map(|e| dir.join(e.file_name())))
                .collect::<Result<_, _>>()?;
            entries.sort();
            for e in entries {
                if std::fs::symlink_metadata(context.join(&e))?.is_dir() {
                    stack.push(e.clone());
                }
                paths.push(e);
            }
        }
    }
    paths.sort();
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    for p in &paths {
        builder
            .append_path_with_name(context.join(p), p)
            .with_context(|| format!("adding {} to the upload", p.display()))?;
    }
    Ok(builder.into_inner()?)
}

/// How a build's progress shows: a spinner per step on a terminal, plain
/// lines otherwise; the steps' output streams beneath.
struct Progress {
    multi: Option<indicatif::MultiProgress>,
    current: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            multi: std::io::stderr()
                .is_terminal()
                .then(indicatif::MultiProgress::new),
            current: None,
        }
    }

    fn say(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish_step(&mut self, ok: bool) {
        if let Some(bar) = self.current.take() {
            let msg = bar.message();
            if ok {
                bar.finish_with_message(format!("done  {msg}"));
            } else {
                bar.abandon_with_message(format!("FAILED {msg}"));
            }
        }
    }

    fn line(&mut self, line: &str) {
        let is_step = line.starts_with('[') && line.contains("] ");
        let is_cached = line.starts_with("CACHED [") || line.starts_with("CACHED ");
        if is_step || is_cached {
            self.finish_step(true);
            match &self.multi {
                Some(m) if is_step => {
                    let bar = m.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                            .expect("static template"),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar.set_message(line.to_string());
                    self.current = Some(bar);
                }
                Some(m) => {
                    let bar = m.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {msg}").expect("static template"),
                    );
                    bar.finish_with_message(line.to_string());
                }
                None => eprintln!("{line}"),
            }
        } else {
            self.say(&format!("    {line}"));
        }
    }
}

/// Builds a custom template on the running server from a Dockerfile or an
/// SDK-style definition, showing each step and its output as it runs.
pub async fn build_remote(api: &crate::api_client::ApiClient, b: &RemoteBuild<'_>) -> Result<()> {
    use hyper::Method;
    use serde_json::json;
    let (body, files) = definition_of(b)?;
    let mut request = json!({"name": b.name});
    if let Some(c) = b.cpu_count {
        request["cpuCount"] = json!(c);
    }
    if let Some(m) = b.memory_mb {
        request["memoryMB"] = json!(m);
    }
    let (_, made) = api
        .call(Method::POST, "/v3/templates", Some(request))
        .await?;
    let tid = made["templateID"].as_str().unwrap_or_default().to_string();
    let bid = made["buildID"].as_str().unwrap_or_default().to_string();
    let mut progress = Progress::new();
    progress.say(&format!("template {} ({tid}), build {bid}", b.name));
    for (hash, tar) in files {
        let (_, link) = api
            .call(Method::GET, &format!("/templates/{tid}/files/{hash}"), None)
            .await?;
        if link["present"] == json!(true) {
            progress.say(&format!("files {} already uploaded", &hash[..12]));
            continue;
        }
        let url = link["url"]
            .as_str()
            .context("the server gave no upload URL")?;
        let size = tar.len();
        api.put(url, tar).await?;
        progress.say(&format!("uploaded files {} ({size} bytes)", &hash[..12]));
    }
    api.call(
        Method::POST,
        &format!("/v2/templates/{tid}/builds/{bid}"),
        Some(body),
    )
    .await?;
    let mut offset = 0usize;
    loop {
        let (_, st) = api
            .call(
                Method::GET,
                &format!("/templates/{tid}/builds/{bid}/status?logsOffset={offset}"),
                None,
            )
            .await?;
        let entries = st["logEntries"].as_array().cloned().unwrap_or_default();
        offset += entries.len();
        for e in &entries {
            progress.line(e["message"].as_str().unwrap_or_default());
        }
        match st["status"].as_str() {
            Some("ready") if entries.is_empty() => {
                progress.finish_step(true);
                println!("{}", b.name);
                return Ok(());
            }
            Some("error") if entries.is_empty() => {
                progress.finish_step(false);
                let reason = &st["reason"];
                anyhow::bail!(
                    "the build failed ({} step): {}",
                    reason["step"].as_str().unwrap_or("?"),
                    reason["message"].as_str().unwrap_or("(no reason given)")
                );
            }
            _ => {}
        }
        if entries.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `template ls`: the built-in templates of this host, and the team's own
/// from the server when it runs.
pub async fn list_all(
    data: &DataDir,
    api: Option<&crate::api_client::ApiClient>,
    json: bool,
) -> Result<()> {
    list(data, json)?;
    let Some(api) = api else {
        return Ok(());
    };
    let (_, templates) = match api.call(hyper::Method::GET, "/templates", None).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("(the team's templates are not listed: {e:#})");
            return Ok(());
        }
    };
    if json {
        // The server's own entries (`GET /templates`), marked as the team's.
        for t in templates.as_array().into_iter().flatten() {
            let mut row = t.clone();
            row["kind"] = "team".into();
            println!("{row}");
        }
        return Ok(());
    }
    println!();
    println!(
        "{:<30} {:<22} {:<8} {:<8} TEMPLATE ID",
        "YOUR TEMPLATES", "UPDATED", "STATUS", "SPAWNED"
    );
    for t in templates.as_array().into_iter().flatten() {
        println!(
            "{:<30} {:<22} {:<8} {:<8} {}",
            t["names"][0].as_str().unwrap_or_default(),
            t["updatedAt"]
                .as_str()
                .unwrap_or_default()
                .get(..19)
                .unwrap_or_default()
                .replace('T', " "),
            t["buildStatus"].as_str().unwrap_or_default(),
            t["spawnCount"],
            t["templateID"].as_str().unwrap_or_default(),
        );
    }
    Ok(())
}

/// `template rm`.
pub async fn remove(api: &crate::api_client::ApiClient, name: &str) -> Result<()> {
    api.call(hyper::Method::DELETE, &format!("/templates/{name}"), None)
        .await?;
    println!("removed {name}");
    Ok(())
}

/// `template tags`: lists a template's tags; `--add` points tags at the
/// build `name:from` names, `--rm` removes tags (said on stderr: stdout is
/// the listing, in `--json` too).
pub async fn tags(
    api: &crate::api_client::ApiClient,
    name: &str,
    add: &[String],
    from: &str,
    rm: &[String],
    json: bool,
) -> Result<()> {
    use serde_json::json;
    if !add.is_empty() {
        let (_, r) = api
            .call(
                hyper::Method::POST,
                "/templates/tags",
                Some(json!({"target": format!("{name}:{from}"), "tags": add})),
            )
            .await?;
        eprintln!(
            "tagged build {} as {}",
            r["buildID"].as_str().unwrap_or_default(),
            add.join(", ")
        );
    }
    if !rm.is_empty() {
        api.call(
            hyper::Method::DELETE,
            "/templates/tags",
            Some(json!({"name": name, "tags": rm})),
        )
        .await?;
        eprintln!("removed {}", rm.join(", "));
    }
    let (_, list) = api
        .call(hyper::Method::GET, &format!("/templates/{name}/tags"), None)
        .await?;
    if json {
        for t in list.as_array().into_iter().flatten() {
            println!("{t}");
        }
        return Ok(());
    }
    println!("{:<20} {:<38} ASSIGNED", "TAG", "BUILD");
    for t in list.as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<38} {}",
            t["tag"].as_str().unwrap_or_default(),
            t["buildID"].as_str().unwrap_or_default(),
            t["createdAt"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_tars_are_deterministic_and_stay_in_the_context() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app/sub")).unwrap();
        std::fs::write(dir.path().join("app/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("app/sub/b.txt"), "b").unwrap();
        let one = context_tar(dir.path(), "app/").unwrap();
        let two = context_tar(dir.path(), "app").unwrap();
        assert_eq!(one, two);
        let names: Vec<String> = tar::Archive::new(&one[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["app", "app/a.txt", "app/sub", "app/sub/b.txt"]);
        assert!(context_tar(dir.path(), "../etc").is_err());
        assert!(context_tar(dir.path(), "*.txt").is_err());
        assert!(context_tar(dir.path(), "missing").is_err());
    }
}
