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

pub fn list(data: &DataDir) -> Result<()> {
    let store = TemplateStore::open(data.templates_dir()).context("opening the template store")?;
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
